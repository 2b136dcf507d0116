"""Every implementation path gives the reference path's outputs and gradients.

The blocked path runs with blocks of 4 query rows here (`blocks`, from
`tests.helpers.small_blocks`), so that tiny inputs cross several block
boundaries and both kinds of key part (shared and diagonal) in every causal
case, and chained one after another as for long sequences; every test runs
with both of its backward passes (weights kept from the forward pass, and
recomputed). Gradients are taken in training mode, where the blocked path
uses its own backward pass.
"""

import keras
import numpy as np
import pytest
from keras import ops

from luong_attention import (
    LuongAttention,
    _dispatch,
    _masks,
    _prepare,
    _validation,
    functional,
    luong_attention,
)
from luong_attention.functional import _checked_masks
from luong_attention.kernels import reference as reference_kernel
from luong_attention.kernels.blocked import blocked_attention
from luong_attention.kernels.fused import fused_attention
from luong_attention.kernels.reference import CAUSAL_SCORE, masked_softmax
from tests.helpers import (
    small_blocks,
    supported_paths,
    to_numpy,
    traced_forms,
    value_and_grad,
)
from tests.reference import reference_attention

FAST = ("fused", "blocked")
B, TQ, TV, D, DV = 2, 8, 10, 4, 5


@pytest.fixture(params=["saved", "recomputed"])
def blocks(request):
    """Blocked-path options: blocks of 4 rows, chained; weights saved or recomputed."""
    return small_blocks(4, recompute_weights=request.param == "recomputed")


def _rng(seed=0):
    return np.random.default_rng(seed)


def _qkv(rng, batch=(B,), tq=TQ, tv=TV, d=D, dv=DV, dtype="float32"):
    q = rng.standard_normal((*batch, tq, d)).astype(dtype)
    k = rng.standard_normal((*batch, tv, d)).astype(dtype)
    v = rng.standard_normal((*batch, tv, dv)).astype(dtype)
    return q, k, v


def _loss_and_grads(implementation, q, k, v, extra=(), **kwargs):
    """Value and gradients of sum(output * R) w.r.t. q, k, v and `extra`, in training."""
    tq, dv = q.shape[-2], v.shape[-1]
    projection = _rng(99).standard_normal((*q.shape[:-2], tq, dv)).astype("float32")

    def loss(q, k, v, *weights):
        named = dict(zip(("scale", "general_score_weight"), weights, strict=False))
        out = luong_attention(
            q, v, k, implementation=implementation, training=True, **kwargs, **named
        )
        return ops.sum(ops.cast(out, "float32") * ops.convert_to_tensor(projection))

    return value_and_grad(loss, q, k, v, *extra)


def _assert_same(implementation, blocks, q, k, v, extra=(), atol=2e-5, rtol=2e-5, **kwargs):
    ref_value, ref_grads = _loss_and_grads("reference", q, k, v, extra, **kwargs)
    value, grads = _loss_and_grads(implementation, q, k, v, extra, blocked_options=blocks, **kwargs)
    np.testing.assert_allclose(value, ref_value, atol=atol * 10, rtol=rtol)
    for name, g, ref in zip(
        ("query", "key", "value", "weight1", "weight2"), grads, ref_grads, strict=False
    ):
        assert np.all(np.isfinite(g.astype("float32"))), name
        np.testing.assert_allclose(
            g.astype("float32"), ref.astype("float32"), atol=atol, rtol=rtol, err_msg=name
        )


def _outputs(implementation, blocks, q, k, v, **kwargs):
    return to_numpy(
        luong_attention(q, v, k, implementation=implementation, blocked_options=blocks, **kwargs)
    )


CAUSAL = [
    dict(causal=False),
    dict(causal=True),
    dict(causal=True, causal_alignment="bottom_right"),
]
CAUSAL_IDS = ["none", "top_left", "bottom_right"]


@pytest.mark.parametrize("implementation", FAST)
@pytest.mark.parametrize("causal", CAUSAL, ids=CAUSAL_IDS)
@pytest.mark.parametrize("lengths", [(TQ, TV), (TV, TQ)], ids=["tq<tv", "tq>tv"])
def test_unmasked_matches_reference(implementation, causal, lengths, blocks):
    q, k, v = _qkv(_rng(1), tq=lengths[0], tv=lengths[1])
    _assert_same(implementation, blocks, q, k, v, **causal)


@pytest.mark.parametrize("implementation", FAST)
@pytest.mark.parametrize("causal", CAUSAL, ids=CAUSAL_IDS)
def test_masks_and_fully_masked_rows(implementation, causal, blocks):
    rng = _rng(2)
    q, k, v = _qkv(rng)
    value_mask = rng.random((B, TV)) > 0.3
    value_mask[1] = False  # batch 1: every row fully masked
    key_mask = rng.random((B, TV)) > 0.2
    query_mask = rng.random((B, TQ)) > 0.3
    attention_mask = rng.random((TQ, TV)) > 0.3
    attention_mask[2] = False  # row 2: fully masked in every batch
    masks = dict(
        value_mask=value_mask,
        key_mask=key_mask,
        query_mask=query_mask,
        attention_mask=attention_mask,
    )
    _assert_same(implementation, blocks, q, k, v, **masks, **causal)
    out = _outputs(implementation, blocks, q, k, v, **masks, **causal)
    np.testing.assert_array_equal(out[1], 0.0)
    np.testing.assert_array_equal(out[:, 2], 0.0)


@pytest.mark.parametrize("implementation", FAST)
def test_bottom_right_rows_without_keys_are_zero(implementation, blocks):
    # Tq > Tv, bottom-right: the first Tq - Tv rows see no key at all.
    q, k, v = _qkv(_rng(3), tq=TV, tv=TQ)
    kwargs = dict(causal=True, causal_alignment="bottom_right")
    _assert_same(implementation, blocks, q, k, v, **kwargs)
    np.testing.assert_array_equal(
        _outputs(implementation, blocks, q, k, v, **kwargs)[:, : TV - TQ], 0.0
    )


@pytest.mark.parametrize("implementation", ("reference", *FAST))
@pytest.mark.parametrize("causal", CAUSAL[1:], ids=CAUSAL_IDS[1:])
@pytest.mark.parametrize("lengths", [(TQ, TV), (TV, TQ)], ids=["tq<tv", "tq>tv"])
@pytest.mark.parametrize("nan_safe", [True, False], ids=["nan_padding", "finite_padding"])
def test_causal_with_leading_padding_rows_without_keys_are_zero(
    implementation, causal, lengths, nan_safe, blocks
):
    """Rows whose visible keys are all padding give zeros, with NaN in
    padding (`nan_safe_padding=True`) or finite values there (the default).

    With `nan_safe_padding`, only value masks and the causal mask (no
    attention mask), the reference path zeroes no row where every row sees
    key 0: the keys the causal mask hides score below the padded ones, so
    such a row weighs only padded keys, whose values are zeros. Without it
    the padded values are not zeros, and the row is zeroed. The other paths,
    checked against it, mask each their own way.
    """
    rng = _rng(7)
    q, k, v = _qkv(rng, tq=lengths[0], tv=lengths[1])
    value_mask = np.ones((B, lengths[1]), bool)
    value_mask[0, :3] = False  # batch 0: the first rows see only padding
    value_mask[1, 1::2] = False
    if nan_safe:
        k[~value_mask] = np.nan
        v[~value_mask] = np.inf
    call = dict(causal, value_mask=value_mask, nan_safe_padding=nan_safe)
    if implementation != "reference":
        _assert_same(implementation, blocks, q, k, v, **call)
    out = _outputs(implementation, blocks, q, k, v, **call)
    expected, expected_weights = reference_attention(
        q,
        np.where(value_mask[..., None], v, 0),
        np.where(value_mask[..., None], k, 0),
        value_mask=value_mask,
        **causal,
    )
    empty = ~expected_weights.any(-1)
    assert empty[0].any() and not empty[1].all()
    np.testing.assert_allclose(out, expected, rtol=2e-5, atol=2e-5)
    np.testing.assert_array_equal(out[empty], 0.0)
    if implementation == "reference":
        _, grads = _loss_and_grads(implementation, q, k, v, **call)
        assert all(np.all(np.isfinite(g)) for g in grads)
        # A zero output row is a constant: no gradient reaches its query.
        np.testing.assert_array_equal(grads[0][empty], 0.0)
        # Nor any padded key or value.
        np.testing.assert_array_equal(grads[1][~value_mask], 0.0)
        np.testing.assert_array_equal(grads[2][~value_mask], 0.0)
        out, weights = luong_attention(q, v, k, return_attention_scores=True, **call)
        np.testing.assert_allclose(to_numpy(out), expected, rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(to_numpy(weights), expected_weights, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("implementation", FAST)
@pytest.mark.parametrize("causal", CAUSAL[1:], ids=CAUSAL_IDS[1:])
def test_four_d_inputs_with_batch_masks(implementation, causal, blocks):
    rng = _rng(4)
    q, k, v = _qkv(rng, batch=(B, 3))
    value_mask = rng.random((B, TV)) > 0.3  # broadcast over the heads
    query_mask = rng.random((B, 3, TQ)) > 0.3
    _assert_same(
        implementation, blocks, q, k, v, value_mask=value_mask, query_mask=query_mask, **causal
    )


@pytest.mark.parametrize("implementation", FAST)
@pytest.mark.parametrize("score_mode", ["dot", "general"])
def test_weights_get_the_same_gradients(implementation, score_mode, blocks):
    rng = _rng(5)
    q, k, v = _qkv(rng, d=D)
    scale = np.float32(0.7)
    extra = [scale]
    if score_mode == "general":
        k = rng.standard_normal((B, TV, D + 2)).astype("float32")
        extra.append((rng.standard_normal((D, D + 2)) * 0.5).astype("float32"))
    _assert_same(implementation, blocks, q, k, v, extra=extra, score_mode=score_mode, causal=True)


@pytest.mark.parametrize("implementation", FAST)
@pytest.mark.parametrize("dtype,tol", [("float16", 1e-2), ("bfloat16", 6e-2)])
def test_low_precision(implementation, dtype, tol, blocks):
    rng = _rng(6)
    q, k, v = _qkv(rng)
    # Scores near 1e5 overflow float16; they must stay float32 inside.
    q = q * 150.0
    q, k, v = (ops.cast(t, dtype) for t in (q, k, v))
    value_mask = rng.random((B, TV)) > 0.3
    value_mask[0] = False
    ref = _outputs("reference", blocks, q, k, v, value_mask=value_mask, causal=True)
    out = _outputs(implementation, blocks, q, k, v, value_mask=value_mask, causal=True)
    assert keras.backend.standardize_dtype(out.dtype) == dtype
    out, ref = out.astype("float32"), ref.astype("float32")
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, ref, atol=tol, rtol=tol)
    np.testing.assert_array_equal(out[0], 0.0)


@pytest.mark.parametrize("implementation", FAST)
def test_low_precision_gradients(implementation, blocks):
    q, k, v = (t.astype("float16") for t in _qkv(_rng(7)))
    _assert_same(implementation, blocks, q, k, v, atol=2e-2, rtol=2e-2, causal=True)


@pytest.mark.parametrize("implementation", FAST)
def test_compiled_training_step_matches_reference(implementation, blocks, monkeypatch):
    """Two compiled `fit` steps (Keras's default `jit_compile="auto"`: jit on
    JAX, a graph on TensorFlow) give the reference path's weights, with an
    attention mask as a model input."""
    # The layer has no blocked_options: the small blocks become the default.
    small_blocks(4, recompute_weights=blocks.save_weights_below_bytes == 0, monkeypatch=monkeypatch)
    rng = _rng(8)
    q, k, v = _qkv(rng, dv=D)
    attention_mask = rng.random((B, TQ, TV)) > 0.3
    target = rng.standard_normal((B, TQ, D)).astype("float32")

    def train(impl):
        keras.utils.set_random_seed(0)
        inputs = [
            keras.Input((TQ, D)),
            keras.Input((TV, D)),
            keras.Input((TQ, TV), dtype="bool"),
        ]
        layer = LuongAttention(
            use_scale=True, score_mode="general", causal=True, implementation=impl
        )
        out = layer(inputs[:2], attention_mask=inputs[2])
        model = keras.Model(inputs, out)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse", jit_compile="auto")
        model.fit([q, v, attention_mask], target, epochs=2, batch_size=B, verbose=0)
        return [to_numpy(w) for w in model.weights]

    for got, want in zip(train(implementation), train("reference"), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


# --- what each path supports, and what "auto" picks ---------------------------


def _select(implementation, tq=TQ, dropout=0.0, training=False, **kwargs):
    call = _dispatch.Call(
        q_len=tq, kv_len=TV, dropout_active=training and dropout > 0, training=training, **kwargs
    )
    return _dispatch.choose_path(implementation, call)


UNSUPPORTED = [
    (dict(score_mode="concat"), "score_mode='concat'"),
    (dict(dropout=0.1, training=True), "dropout in training"),
    (dict(return_attention_scores=True), "return_attention_scores=True"),
]


@pytest.mark.parametrize("implementation", FAST)
@pytest.mark.parametrize("options,reason", UNSUPPORTED, ids=["concat", "dropout", "scores"])
def test_unsupported_options_raise(implementation, options, reason):
    with pytest.raises(
        ValueError, match=rf"implementation='{implementation}' does not support {reason}"
    ):
        _select(implementation, **options)
    assert _select("auto", **options) == "reference"
    assert _select("reference", **options) == "reference"


def test_unsupported_error_from_the_layer():
    layer = LuongAttention(implementation="blocked")
    q, k, v = _qkv(_rng(9), dv=D)
    with pytest.raises(ValueError, match="argument implementation.*return_attention_scores"):
        layer([q, v], return_attention_scores=True)


def test_dropout_outside_training_runs_fast():
    assert _select("blocked", dropout=0.5, training=False) == "blocked"


def test_blocked_needs_static_lengths():
    with pytest.raises(ValueError, match=r"implementation='blocked' does not support unknown"):
        _select("blocked", tq=None)
    assert _select("fused", tq=None) == "fused"
    assert _select("auto", tq=None) in ("fused", "reference")


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_auto_takes_the_first_measured_path_the_call_supports(training, masked, causal, dtype):
    options = dict(training=training, masked=masked, causal=causal, dtype=dtype)
    mask = "+".join(kind for kind, on in (("causal", causal), ("padding", masked)) if on)
    ranked = _dispatch.ranking(
        backend=keras.backend.backend(),
        device=_dispatch.device_kind(),
        length=_dispatch.length_regime(TQ, TV, device=_dispatch.device_kind()),
        mask=mask or "none",
        dtype="low" if dtype == "bfloat16" else "float32",
        mode="train" if training else "infer",
    )
    assert _select("auto", **options) == ranked[0]
    # A path the call cannot take is passed over.
    assert _select("auto", return_attention_scores=True, **options) == "reference"


@pytest.mark.parametrize("training", [False, True])
def test_blocked_takes_the_measured_block_size_unless_given_options(training, monkeypatch):
    from luong_attention import functional
    from luong_attention.kernels import BlockedOptions

    backend, device = keras.backend.backend(), _dispatch.device_kind()
    regime = _dispatch.length_regime(TQ, TV, device=device)
    mode = "train" if training else "infer"
    # A measured block of 2 rows for this regime and mode, causal, only.
    sizes = {(backend, device, regime, mode, True): 2}
    monkeypatch.setattr(_dispatch, "_block_sizes", lambda: sizes)
    monkeypatch.setattr(functional, "_CHECKED", {})
    seen = []

    def spy(**kwargs):
        seen.append(kwargs["options"])
        return blocked_attention(**kwargs)

    monkeypatch.setattr(functional, "blocked_attention", spy)
    q, k, v = _qkv(_rng(11))
    expected = _outputs("reference", None, q, k, v, causal=True)
    given = BlockedOptions(block_size=4)
    for options in (None, given):
        out = luong_attention(
            q, v, k, causal=True, training=training, implementation="blocked",
            blocked_options=options,
        )  # fmt: skip
        np.testing.assert_allclose(to_numpy(out), expected, atol=2e-5, rtol=2e-5)
    assert seen == [BlockedOptions(min_block_size=2), given]
    assert seen[0].rows_per_block(TQ) == 2
    # The other mode, or no causal mask, was not measured: the defaults.
    for other in (
        _dispatch.Call(q_len=TQ, kv_len=TV, causal=True, training=not training),
        _dispatch.Call(q_len=TQ, kv_len=TV, causal=False, training=training),
    ):
        assert _dispatch.blocked_options(other, backend) == BlockedOptions()


def test_auto_gives_the_reference_results_and_weights(blocks):
    q, k, v = _qkv(_rng(10), dv=D)
    ref = _outputs("reference", blocks, q, k, v, causal=True)
    np.testing.assert_allclose(_outputs("auto", blocks, q, k, v, causal=True), ref, atol=1e-5)
    layer = LuongAttention(causal=True)
    out, weights = layer([q, v, k], return_attention_scores=True)
    np.testing.assert_allclose(to_numpy(out), ref, atol=1e-5)
    assert tuple(weights.shape) == (B, TQ, TV)


def test_implementations_listed_and_saved():
    assert set(_dispatch.PATHS) <= set(_validation.IMPLEMENTATIONS)
    for implementation in _validation.IMPLEMENTATIONS:
        layer = LuongAttention(implementation=implementation)
        config = layer.get_config()
        assert config["implementation"] == implementation
        assert LuongAttention.from_config(config).implementation == implementation


def test_supported_paths_pins_what_each_path_runs():
    """The suite parametrizes over `supported_paths`: a path losing an option fails here."""
    every = ("auto", "reference", "fused", "blocked")
    assert supported_paths() == every
    assert supported_paths(score_mode="general", causal=True) == every
    assert supported_paths(dropout=0.5, training=False) == every
    assert supported_paths(score_mode="concat") == ("auto", "reference")
    assert supported_paths(dropout=0.5, training=True) == ("auto", "reference")
    assert supported_paths(return_attention_scores=True) == ("auto", "reference")


@pytest.mark.parametrize("offset", [None, 0, -1], ids=["no_causal", "top_left", "rows_empty"])
def test_masked_softmax_forms_agree(offset):
    """A key mask as a select or as an added bias gives the same weights.

    The reference path selects with an attention mask and adds a key
    mask's bias without one, and adds the causal mask as a constant bias;
    here both forms run, with and without it, against NumPy.
    """
    rng = _rng(8)
    scores = rng.standard_normal((B, TQ, TV)).astype("float32")
    key_mask = rng.random((B, 1, TV)) > 0.4
    key_mask[0, 0, :4], key_mask[0, 0, 4:] = False, True
    key_mask[1, 0, :] = False
    visible = np.broadcast_to(key_mask, scores.shape)
    if offset is not None:
        visible = visible & np.tril(np.ones((TQ, TV), bool), k=offset)
    exp = np.where(visible, np.exp(scores - scores.max(-1, keepdims=True)), 0.0)
    total = exp.sum(-1, keepdims=True)
    expected = exp / np.where(total > 0, total, 1.0)
    assert (total == 0).any() and (total > 0).any()
    mask = ops.convert_to_tensor(key_mask)
    causal_bias = None
    if offset is not None:
        causal_bias = _masks.causal_fill(TQ, TV, offset, seen=0.0, hidden=CAUSAL_SCORE)
    key_weights = ops.cast(mask, "float32")
    forms = {
        "select": (dict(mask=mask, causal_bias=causal_bias), mask),
        "bias": (dict(causal_bias=causal_bias, key_weights=key_weights), key_weights),
    }
    for name, (form, keep_from) in forms.items():
        # masked_softmax leaves rows without a key to its caller, which
        # zeroes those that rows_with_a_key marks (in the mask's form).
        keep = to_numpy(_masks.rows_with_a_key(keep_from, offset, q_len=TQ, kv_len=TV))
        assert keep.dtype == to_numpy(keep_from).dtype, name
        np.testing.assert_array_equal(np.broadcast_to(keep, total.shape), total > 0, err_msg=name)
        weights = to_numpy(masked_softmax(ops.convert_to_tensor(scores), **form)) * keep
        np.testing.assert_allclose(weights, expected, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("causal", CAUSAL, ids=CAUSAL_IDS)
@pytest.mark.parametrize("lengths", [(TQ, TV), (TV, TQ)], ids=["tq<tv", "tq>tv"])
def test_rows_without_a_key_are_zero_where_the_weights_are_smaller(causal, lengths):
    """With Tv at most the values' depth, the reference path zeroes rows
    without a key in the weights: by the key mask itself where every row
    sees key 0 under the causal mask (no reduction), and by the rows that
    see a key where bottom-right rows see none (Tq > Tv). Either way the
    output and the weights are the NumPy reference's, those rows zero."""
    tq, tv = lengths
    q, k, v = _qkv(_rng(13), tq=tq, tv=tv, dv=tv)
    value_mask = np.ones((B, tv), bool)
    value_mask[0] = False  # no key at all
    value_mask[1, :3] = False  # leading padding: early causal rows see none
    call = dict(causal, value_mask=value_mask)
    expected, expected_weights = reference_attention(q, v, k, **call)
    out, weights = luong_attention(
        q, v, k, implementation="reference", return_attention_scores=True, **call
    )
    np.testing.assert_allclose(to_numpy(out), expected, atol=1e-5)
    np.testing.assert_allclose(to_numpy(weights), expected_weights, atol=1e-6)
    alone = luong_attention(q, v, k, implementation="reference", **call)
    np.testing.assert_allclose(to_numpy(alone), expected, atol=1e-5)
    np.testing.assert_array_equal(to_numpy(alone)[0], 0.0)
    no_key = expected_weights.sum(-1) == 0
    assert no_key[1].any() == causal["causal"]
    np.testing.assert_array_equal(to_numpy(alone)[no_key], 0.0)


def test_the_reference_plan_reads_shapes_dtypes_and_options():
    """What the reference path decides before its tensor ops: a key mask
    goes on the scores as a bias (an attention mask as a select), rows
    without a key are zeroed in the smaller of weights and output, scores
    in low precision are cast to float32 for the softmax, and scores with a
    zero dim need none of it."""
    q, k, v = (ops.convert_to_tensor(x) for x in _qkv(_rng(11), tv=DV))
    key_mask = ops.convert_to_tensor(np.ones((B, 1, DV), bool))
    attention_mask = ops.convert_to_tensor(np.ones((B, TQ, DV), bool))
    plan = reference_kernel.plan

    planned = plan(q, k, v, key_mask, empty_rows="output", mask_as_bias=True)
    assert planned == reference_kernel.Plan("float32", False, "float32", True, "weights", False)
    assert not plan(q, k, v, attention_mask, mask_as_bias=True).mask_as_bias
    assert not plan(q, k, v, key_mask, mask_as_bias=False).mask_as_bias
    long_k, long_v = (ops.concatenate([x, x], axis=-2) for x in (k, v))  # Tv > dim_v
    assert plan(q, long_k, long_v, empty_rows="output").empty_rows == "output"
    assert plan(q, k, v, empty_rows=None).empty_rows is None
    no_rows = plan(q[:, :0], k, v, key_mask, empty_rows="weights")
    assert no_rows.no_scores and no_rows.empty_rows is None
    bf16 = plan(*(ops.cast(x, "bfloat16") for x in (q, k, v)))
    assert (bf16.softmax_dtype, bf16.cast_scores, bf16.value_dtype) == ("float32", True, "bfloat16")
    # Scores come in the query's dtype: float32 for bfloat16 values on this path.
    mixed = plan(q, k, ops.cast(v, "bfloat16"))
    assert (mixed.cast_scores, mixed.value_dtype) == (False, "bfloat16")


def test_an_eager_signature_plans_the_reference_path_once(monkeypatch):
    """Calls with a signature seen before reuse its plan; the runs that
    `skip_padded_keys` cuts (each of its own shape) are planned one by one."""
    planned = []

    def counting(*args, **kwargs):
        planned.append(tuple(args[0].shape))
        return reference_kernel.plan(*args, **kwargs)

    monkeypatch.setattr(functional, "reference_plan", counting)
    monkeypatch.setattr(functional, "_CHECKED", {})
    q, k, v = _qkv(_rng(12))
    mask = np.arange(TV) < np.array([[TV], [3]])
    expected = reference_attention(q, v, k, value_mask=mask)[0]
    for _ in range(3):
        out = luong_attention(q, v, k, value_mask=mask, implementation="reference")
        np.testing.assert_allclose(to_numpy(out), expected, atol=1e-5)
    assert planned == [(B, TQ, D)]
    skip = functional.SkipOptions(block=2, call_cost=0, min_work=0)
    for calls in (1, 2):
        out = luong_attention(
            q, v, k, value_mask=mask, implementation="reference",
            skip_padded_keys=True, skip_options=skip,
        )  # fmt: skip
        np.testing.assert_allclose(to_numpy(out), expected, atol=1e-5)
        assert len(planned) == 1 + 2 * calls  # one per element (run), per call


@pytest.mark.parametrize(
    "case",
    [
        "value_mask",  # the plain layout: one index op prepares the call
        "query_and_key_masks",
        "scale_float64",  # dim >= Tv: a scale tensor on the scores, cast to their dtype
        "scale_on_query",  # dim < Tv: the scale goes on the query
        "concat",  # its weight, a float64 tensor, cast too
        "general",
        "bottom_right",
        "weights",
    ],
)
def test_a_repeated_signature_computes_with_each_calls_values(case, monkeypatch):
    """A call whose signature was seen runs what that signature's first call
    decided, on its own tensors, masks and score weights: none of the first
    call's values stay behind, on every path the call can take."""
    dim = {"scale_float64": TV}.get(case, D)
    options = {
        "query_and_key_masks": lambda rng: dict(
            query_mask=rng.random((B, TQ)) > 0.3, key_mask=rng.random((B, TV)) > 0.3
        ),
        "scale_float64": lambda rng: dict(
            scale=ops.convert_to_tensor(rng.random() + 0.5, "float64")
        ),
        "scale_on_query": lambda rng: dict(scale=ops.convert_to_tensor(rng.random() + 0.5)),
        "concat": lambda rng: dict(
            score_mode="concat",
            scale=ops.convert_to_tensor(rng.random() + 0.5),
            concat_score_weight=ops.convert_to_tensor(rng.random() + 0.5, "float64"),
        ),
        "general": lambda rng: dict(
            score_mode="general",
            general_score_weight=rng.standard_normal((dim, dim)).astype("float32"),
        ),
        "bottom_right": lambda rng: dict(causal=True, causal_alignment="bottom_right"),
        "weights": lambda rng: dict(return_attention_scores=True),
    }.get(case, lambda rng: {})
    paths = supported_paths(**options(_rng(0)))
    monkeypatch.setattr(functional, "_CHECKED", {})
    for seed in (1, 2, 3):
        rng = _rng(seed)
        q, k, v = _qkv(rng, d=dim)
        mask = np.arange(TV) < rng.integers(1, TV + 1, size=(B, 1))
        given = dict(value_mask=mask, **options(rng))
        # Masks as backend tensors, as a model passes them: a plain layout
        # takes only a boolean tensor.
        given = {n: ops.convert_to_tensor(x) if n.endswith("mask") else x for n, x in given.items()}
        expected = reference_attention(
            q,
            v,
            k,
            **{name: to_numpy(x) for name, x in given.items() if name != "return_attention_scores"},
        )
        for path in paths:
            tensors = (ops.convert_to_tensor(x) for x in (q, v, k))
            out = luong_attention(*tensors, implementation=path, **given)
            if case == "weights":
                out, weights = out
                np.testing.assert_allclose(to_numpy(weights), expected[1], atol=1e-5, err_msg=path)
            np.testing.assert_allclose(to_numpy(out), expected[0], atol=1e-5, err_msg=path)
    # Every call after a path's first reused its run: one signature per path.
    assert len(functional._CHECKED) == len(paths)


def test_a_plain_eager_call_goes_straight_to_the_kernel(monkeypatch):
    """A repeated call of backend tensors whose only mask is a boolean value
    mask, and whose scale needs no cast, skips `_prepare.prepare` (and so
    the general run); a call with a query mask, or a scale folded into the
    query, takes it. Both compute with each call's values."""
    prepared = []
    general = _prepare.prepare

    def counting(*args, **kwargs):
        prepared.append(True)
        return general(*args, **kwargs)

    monkeypatch.setattr(_prepare, "prepare", counting)
    monkeypatch.setattr(functional, "_CHECKED", {})
    cases = {
        # dim >= Tv: the scale goes on the scores, as it comes.
        "float scale, key omitted": (lambda rng: dict(scale=0.7), TV, True, False),
        "tensor scale, weights": (
            lambda rng: dict(
                scale=ops.convert_to_tensor(rng.random() + 0.5), return_attention_scores=True
            ),
            TV,
            False,
            False,
        ),
        "query mask": (
            lambda rng: dict(query_mask=ops.convert_to_tensor(rng.random((B, TQ)) > 0.3)),
            TV,
            False,
            True,
        ),
        # dim < Tv: the scale is folded into the query, by the general run.
        "scale on the query": (
            lambda rng: dict(scale=ops.convert_to_tensor(rng.random() + 0.5)),
            D,
            False,
            True,
        ),
    }
    for name, (options, dim, omit_key, takes_prepare) in cases.items():
        prepared.clear()
        for seed in (1, 2, 3):
            rng = _rng(seed)
            q, k, v = _qkv(rng, d=dim)
            if omit_key:
                v = k  # the value serves as the key
            mask = np.arange(TV) < rng.integers(1, TV + 1, size=(B, 1))
            given = dict(options(rng), value_mask=ops.convert_to_tensor(mask))
            expected = reference_attention(
                q,
                v,
                k,
                **{
                    n: x if isinstance(x, float) else to_numpy(x)
                    for n, x in given.items()
                    if n != "return_attention_scores"
                },
            )
            out = luong_attention(
                ops.convert_to_tensor(q),
                ops.convert_to_tensor(v),
                None if omit_key else ops.convert_to_tensor(k),
                implementation="reference",
                **given,
            )
            if given.get("return_attention_scores"):
                out, weights = out
                np.testing.assert_allclose(to_numpy(weights), expected[1], atol=1e-5, err_msg=name)
            np.testing.assert_allclose(to_numpy(out), expected[0], atol=1e-5, err_msg=name)
        assert prepared == [True] * 3 if takes_prepare else not prepared, name


@pytest.mark.parametrize(
    "q_len, kv_len, offset",
    [(8, 10, 0), (10, 8, 0), (8, 10, 2), (8, 10, -3), (10, 8, -12), (8, 10, 12)],
    ids=["top_left", "more_queries", "bottom_right", "negative", "no_row_sees", "all_see_all"],
)
def test_rows_with_a_key_from_a_key_mask_and_the_causal_mask(q_len, kv_len, offset):
    """Which rows see a key under a key mask `(batch..., 1, Tv)` and the causal
    mask, read from a running count over the key mask, is the AND of the two
    masks reduced over the keys; so it is with a tensor offset, which takes
    the general form, and for the key mask as float weights."""
    rng = _rng(9)
    key_mask = rng.random((3, 2, 1, kv_len)) > 0.6
    key_mask[0, 0, 0, :] = False  # no key at all
    key_mask[0, 1, 0, :] = True
    key_mask[1, 0, 0, :] = np.arange(kv_len) >= kv_len - 1  # the last key alone
    causal = np.arange(kv_len)[None, :] <= np.arange(q_len)[:, None] + offset
    expected = (key_mask & causal).any(-1, keepdims=True)
    assert expected.any() or offset < -q_len
    as_bool = ops.convert_to_tensor(key_mask)
    for form_offset in (offset, ops.convert_to_tensor(offset, "int32")):
        # The key weights (1.0 / 0.0) give the rows as 1.0 / 0.0.
        for form_mask in (as_bool, ops.cast(as_bool, "float32")):
            keep = to_numpy(
                _masks.rows_with_a_key(form_mask, form_offset, q_len=q_len, kv_len=kv_len)
            )
            assert keep.dtype == to_numpy(form_mask).dtype
            np.testing.assert_array_equal(np.broadcast_to(keep, expected.shape), expected)


@pytest.mark.parametrize(
    "bounds",
    [
        dict(q_len=5, kv_len=7, offset=0),
        dict(q_len=7, kv_len=5, offset=-2),
        dict(q_len=None, kv_len=None, offset=3, rows=(4, 9), cols=(2, 12)),
        dict(q_len=300, kv_len=260, offset=-40),  # over the constant's size: built by ops
    ],
    ids=["small", "negative_offset", "tile", "large"],
)
def test_causal_mask_matches_numpy(bounds):
    """The causal mask, whether a NumPy constant (small static shapes) or
    built by ops (large shapes, a tensor offset), is `j <= i + offset`."""
    rows = bounds.get("rows", (0, bounds["q_len"]))
    cols = bounds.get("cols", (0, bounds["kv_len"]))
    i = np.arange(*rows)[:, None]
    j = np.arange(*cols)[None, :]
    expected = j <= i + bounds["offset"]
    built = _masks.causal_mask(**bounds)
    np.testing.assert_array_equal(to_numpy(built), expected)
    tensor_offset = dict(bounds, offset=ops.convert_to_tensor(bounds["offset"], "int32"))
    np.testing.assert_array_equal(to_numpy(_masks.causal_mask(**tensor_offset)), expected)


def test_causal_constants_are_kept_only_when_made_eagerly():
    """A small causal fill is converted once and kept for later eager calls;
    one a trace makes is a symbol of that trace and is not kept, so an eager
    call after the trace still gets its values."""
    bounds = (5, 7, 0)
    expected = np.where(np.tril(np.ones((5, 7), bool)), 0.0, -1.0).astype("float32")

    def biased(x):
        return x + _masks.causal_fill(*bounds, seen=0.0, hidden=-1.0, keep=True)

    x = np.zeros((5, 7), "float32")
    _masks._CONSTANTS.clear()
    try:
        for name, traced in traced_forms(biased, (x,), warns=False):
            got = to_numpy(traced(ops.convert_to_tensor(x)))
            np.testing.assert_array_equal(got, expected, err_msg=name)
            for kept in _masks._CONSTANTS.values():
                to_numpy(kept)  # concrete: raises for a trace's symbol
        np.testing.assert_array_equal(to_numpy(biased(ops.convert_to_tensor(x))), expected)
        kept = [key for key in _masks._CONSTANTS if key[2][:3] == (0, 5, 0)]
        assert len(kept) == 1
        np.testing.assert_array_equal(to_numpy(biased(ops.convert_to_tensor(x))), expected)
    finally:
        _masks._CONSTANTS.clear()


def _layout_case(case, rng):
    """Inputs, masks and options of one `test_plain_layout_prepares_as_the_general_one` case."""
    batch = (B, 3) if case == "four_d_batch_mask" else (B,)
    q, k, v = _qkv(rng, batch=batch)
    if case == "lower_rank_query":
        q = q[0]
    value_mask = rng.random((B, TV)) > 0.3
    masks = dict(value=value_mask)
    flat_batch = zero_masked = False
    if case == "no_mask":
        masks = {}
    elif case == "broadcast_mask":
        masks = dict(value=value_mask[:1])
    elif case == "int_mask":
        masks = dict(value=value_mask.astype("int32"))
    elif case == "key_mask":
        masks = dict(key=value_mask)
    elif case == "query_mask":
        masks = dict(value=value_mask, query=rng.random((B, TQ)) > 0.3)
    elif case == "attention_mask":
        masks = dict(attention=rng.random((B, TQ, TV)) > 0.3)
    elif case == "nan_safe":
        zero_masked = True
    elif case == "flat_batch":
        flat_batch = True
    elif case == "flat_batch_broadcast":
        q, flat_batch = q[:1], True
    tensors = [ops.convert_to_tensor(x) for x in (q, v, k)]
    numpy_mask = case == "numpy_mask"
    masks = _prepare.Masks(
        **{name: m if numpy_mask else ops.convert_to_tensor(m) for name, m in masks.items()}
    )
    batch_shape = _validation.check_inputs(*tensors, "dot")
    masks = _checked_masks(masks, tensors, batch_shape)
    options = dict(batch_shape=batch_shape, flat_batch=flat_batch, zero_masked=zero_masked)
    return tensors, masks, options


@pytest.mark.parametrize(
    "case, plain",
    [
        ("value_mask", True),
        ("no_mask", True),
        ("broadcast_mask", True),
        ("flat_batch", True),
        ("int_mask", False),
        ("numpy_mask", False),
        ("key_mask", False),
        ("query_mask", False),
        ("attention_mask", False),
        ("four_d_batch_mask", False),
        ("nan_safe", False),
        ("lower_rank_query", False),
        ("flat_batch_broadcast", False),
    ],
)
def test_plain_layout_prepares_as_the_general_one(case, plain):
    """A call whose only mask is a boolean value mask of its full batch rank
    (the usual eager call) is prepared by one index op: the tensors the
    general preparation gives, and only for such calls."""
    (query, value, key), masks, options = _layout_case(case, _rng(11))
    layout = _prepare.layout(query, value, key, masks, **options)
    assert layout.plain is plain
    general = _prepare.prepare(
        query, value, key, masks, layout._replace(plain=False), causal_offset=None
    )
    prepared = _prepare.prepare(query, value, key, masks, layout, causal_offset=None)
    for name, expected in general._asdict().items():
        got = getattr(prepared, name)
        assert (got is None) == (expected is None), name
        if expected is not None:
            assert tuple(got.shape) == tuple(expected.shape), name
            np.testing.assert_array_equal(to_numpy(got), to_numpy(expected), err_msg=name)


@pytest.mark.parametrize("implementation", ("reference", "auto"))
@pytest.mark.parametrize("tq", [3, 12], ids=["tq<dim", "tq>dim"])
@pytest.mark.parametrize("key_given", [True, False], ids=["key", "no-key"])
def test_nan_in_masked_keys_stays_out_of_output_and_gradients(implementation, tq, key_given):
    """With `nan_safe_padding`, NaN and inf in the keys and values a value
    mask hides reach neither the output nor any gradient: hiding their
    scores alone would leave `0 * NaN` in the query's gradient, so the
    hidden keys are zeroed too."""
    rng = _rng(11)
    dim = 8
    q, k, v = _qkv(rng, tq=tq, d=dim, dv=dim)
    if not key_given:
        k = v
    value_mask = rng.random((B, TV)) > 0.4
    value_mask[:, 0] = True
    hidden = ~value_mask[..., None]
    expected = reference_attention(
        q, np.where(hidden, 0, v), key=np.where(hidden, 0, k), value_mask=value_mask
    )[0]
    v = np.where(hidden, np.inf, v)
    k = np.where(hidden, np.nan, k) if key_given else v
    call = dict(value_mask=value_mask, nan_safe_padding=True)
    out = to_numpy(
        luong_attention(q, v, k if key_given else None, implementation=implementation, **call)
    )
    np.testing.assert_allclose(out, expected, rtol=2e-5, atol=2e-5)
    if key_given:
        _, grads = _loss_and_grads(implementation, q, k, v, **call)
    else:
        _, grads = value_and_grad(
            lambda q, v: ops.sum(
                luong_attention(q, v, implementation=implementation, training=True, **call)
            ),
            q,
            v,
        )
    for grad in grads:
        assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("full_mask", [False, True], ids=["row_mask", "full_mask"])
@pytest.mark.parametrize("transpose_heads", [False, True], ids=["flatten", "transpose"])
@pytest.mark.parametrize("batch", [(B,), (B, 3), (B, 2, 3)], ids=["rank3", "rank4", "rank5"])
@pytest.mark.parametrize(
    "causal", [None, "top_left", "bottom_right"], ids=["no_causal", "top_left", "bottom_right"]
)
@pytest.mark.parametrize("padded", [False, True], ids=["no_mask", "padding"])
def test_fused_layouts_agree(full_mask, transpose_heads, batch, causal, padded):
    """Every layout and mask form the fused path hands its op gives the reference result.

    Each backend takes one layout for `(batch, heads, T, dim)` calls, and
    JAX on a GPU the mask with a row per query (see
    `_dispatch.kernel_options`); here each runs on every backend, with
    masks of their narrow shapes and rows that see no key (bottom-right,
    Tq > Tv).
    """
    rng = _rng(12)
    q, k, v = _qkv(rng, batch=batch, tq=TV, tv=TQ, dv=D)
    value_mask = rng.random((*batch, TQ)) > 0.3 if padded else None
    offset = {None: None, "top_left": 0, "bottom_right": TQ - TV}[causal]
    mask = None if value_mask is None else ops.convert_to_tensor(value_mask[..., None, :])
    out = fused_attention(
        query=ops.convert_to_tensor(q),
        key=ops.convert_to_tensor(k),
        value=ops.convert_to_tensor(v),
        mask=mask,
        causal_offset=offset,
        transpose_heads=transpose_heads,
        full_mask=full_mask,
        equal_depths=_dispatch.kernel_options(keras.backend.backend())["fused_equal_depths"],
    )
    expected = reference_attention(
        q,
        v,
        k,
        value_mask=value_mask,
        causal=causal is not None,
        causal_alignment=causal or "top_left",
    )[0]
    np.testing.assert_allclose(to_numpy(out), expected, rtol=2e-5, atol=2e-5)
