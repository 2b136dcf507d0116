"""`skip_padded_keys`: the same results, from less work, in eager calls.

Inputs here are tiny, so the skipping runs with blocks of 2, no cost per
kernel call and no least work (`SKIP`): every element becomes its own run, cut to its own
prefixes, and every path is handed many small, uneven runs.
"""

import itertools

import keras
import numpy as np
import pytest
from keras import ops

from luong_attention import LuongAttention, _padding, luong_attention
from luong_attention.functional import SkipOptions
from tests.helpers import small_blocks, supported_paths, to_numpy, traced_forms, value_and_grad
from tests.reference import reference_attention

SKIP = SkipOptions(block=2, call_cost=0, min_work=0)
B, T, D = 5, 9, 3
LENGTHS = np.array([9, 3, 0, 6, 1])  # one full, one empty


def _inputs(seed=0, batch=(B,), tq=T, tv=T, nan_in_padding=True):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((*batch, tq, D)).astype("float32")
    k = rng.standard_normal((*batch, tv, D)).astype("float32")
    v = rng.standard_normal((*batch, tv, D + 1)).astype("float32")
    value_mask = np.arange(tv) < LENGTHS[:, None]
    if nan_in_padding:
        k[..., ~value_mask, :] = np.nan
        v[..., ~value_mask, :] = np.nan
    return q, k, v, value_mask


def _needs(lengths, length, block):
    return np.clip(-(-np.asarray(lengths) // block) * block, min(block, length), length)


def _plan(lengths, length=T, *, query_lengths=None, options=SKIP, trim_queries=True):
    key_mask = ops.convert_to_tensor((np.arange(length) < np.asarray(lengths)[:, None])[:, None])
    query_keep = None
    if query_lengths is not None:
        query_keep = np.arange(length)[:, None] < np.asarray(query_lengths)[:, None, None]
        query_keep = ops.convert_to_tensor(query_keep)
    shape = (len(lengths), length, length, D)
    return _padding.plan(
        key_mask, query_keep, shape=shape, rank=3, trim_queries=trim_queries, options=options
    )


# --- the plan ------------------------------------------------------------------


def test_each_element_keeps_its_keys_up_to_its_last_visible_block():
    runs = _plan(LENGTHS)
    assert [(r.start, r.stop) for r in runs] == [(i, i + 1) for i in range(B)]
    assert [r.kv_len for r in runs] == [9, 4, 2, 6, 2]  # an empty element keeps one block
    assert all(r.q_len == T for r in runs)


def test_a_key_after_a_gap_counts():
    key_mask = np.zeros((2, 1, 12), bool)
    key_mask[0, 0, [0, 7]] = True  # a hole, then a visible key
    key_mask[1, 0, :3] = True
    runs = _padding.plan(
        ops.convert_to_tensor(key_mask), None, shape=(2, 12, 12, D), rank=3, trim_queries=True,
        options=SKIP,
    )  # fmt: skip
    assert [r.kv_len for r in runs] == [8, 4]


def test_query_rows_are_cut_only_where_allowed():
    runs = _plan(LENGTHS, query_lengths=[2, 9, 4, 0, 5])
    assert [r.q_len for r in runs] == [2, 9, 4, 2, 6]
    runs = _plan(LENGTHS, query_lengths=[2, 9, 4, 0, 5], trim_queries=False)
    assert [r.q_len for r in runs] == [T] * B


def test_nothing_to_skip_gives_none():
    assert _plan([T] * B) is None
    # Lengths 7 and 8 of 9 end in the last block of 3 keys: nothing to skip.
    assert _plan([9, 8, 7, 9, 9], options=SkipOptions(block=3, call_cost=0, min_work=0)) is None


def test_short_inputs_and_missing_masks_give_none():
    assert _plan(LENGTHS, options=SkipOptions(block=9, call_cost=0, min_work=0)) is None
    # 5 * 9 * 9 * 2 * 3 multiply-adds: less than the least work worth planning.
    assert _plan(LENGTHS, options=SkipOptions(block=2, call_cost=0, min_work=2431)) is None
    assert _plan(LENGTHS, options=SkipOptions(block=2, call_cost=0, min_work=2430)) is not None
    assert (
        _padding.plan(None, None, shape=(B, T, T, D), rank=3, trim_queries=True, options=SKIP)
        is None
    )
    # A mask shared by the batch has no element of its own to cut.
    shared = ops.convert_to_tensor(np.arange(T)[None, None] < 3)
    assert (
        _padding.plan(shared, None, shape=(B, T, T, D), rank=3, trim_queries=True, options=SKIP)
        is None
    )


def test_a_costly_call_keeps_one_run_cut_to_the_longest():
    runs = _plan([3, 5, 1, 4, 2], options=SkipOptions(block=2, call_cost=10**9, min_work=0))
    assert runs == [_padding.Run(0, B, T, 6)]


@pytest.mark.parametrize("seed", range(12))
def test_the_split_is_the_cheapest_contiguous_one(seed):
    rng = np.random.default_rng(seed)
    batch = int(rng.integers(1, 7))
    q_need = rng.integers(1, 5, batch) * 8
    kv_need = rng.integers(1, 5, batch) * 8
    call = float(rng.choice([0, 50, 300, 2000]))

    def cost(runs):
        return sum(
            call + (stop - start) * q_need[start:stop].max() * kv_need[start:stop].max()
            for start, stop in runs
        )

    best = min(
        cost(list(itertools.pairwise((0, *cuts, batch))))
        for n in range(batch)
        for cuts in itertools.combinations(range(1, batch), n)
    )
    runs = _padding._split(q_need, kv_need, call)
    assert [r.start for r in runs] == [0, *[r.stop for r in runs[:-1]]]
    assert runs[-1].stop == batch
    for r in runs:
        assert (r.q_len, r.kv_len) == (
            q_need[r.start : r.stop].max(),
            kv_need[r.start : r.stop].max(),
        )
    assert cost([(r.start, r.stop) for r in runs]) == pytest.approx(best)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"block": 0}, ValueError, r"argument block.*>= 1.*Received: block=0"),
        ({"block": 2.0}, TypeError, r"argument block.*Expected an int.*block=2.0"),
        ({"call_cost": -1}, ValueError, r"argument call_cost.*>= 0.*call_cost=-1"),
        ({"call_cost": True}, TypeError, r"argument call_cost.*call_cost=True"),
        ({"min_work": -2}, ValueError, r"argument min_work.*>= 0.*min_work=-2"),
    ],
)
def test_bad_skip_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        SkipOptions(**kwargs)


def test_bad_arguments_name_themselves():
    q = np.ones((2, 3, 4), "float32")
    with pytest.raises(TypeError, match=r"argument skip_options.*SkipOptions.*Received"):
        luong_attention(q, q, skip_padded_keys=True, skip_options={"block": 2})
    with pytest.raises(TypeError, match=r"argument skip_padded_keys.*Received"):
        luong_attention(q, q, skip_padded_keys="yes")
    with pytest.raises(TypeError, match=r"argument skip_padded_keys.*Received"):
        LuongAttention(skip_padded_keys="yes")


# --- the results ---------------------------------------------------------------


def _loss_and_grads(q, k, v, implementation, skip, **kwargs):
    projection = np.random.default_rng(7).standard_normal((*q.shape[:-1], v.shape[-1]))

    def loss(q, k, v):
        out = luong_attention(
            q,
            v,
            k,
            implementation=implementation,
            training=True,
            skip_padded_keys=skip,
            skip_options=SKIP,
            blocked_options=small_blocks(4),
            **kwargs,
        )
        return ops.sum(out * ops.convert_to_tensor(projection.astype("float32")))

    return value_and_grad(loss, q, k, v)


MASKS = {
    "value": lambda m: {"value_mask": m},
    "key": lambda m: {"key_mask": m},
    "query+value": lambda m: {"query_mask": m, "value_mask": m},
    "value+causal": lambda m: {"value_mask": m, "causal": True},
    "value+bottom_right": lambda m: {
        "value_mask": m,
        "causal": True,
        "causal_alignment": "bottom_right",
    },
    "value+attention": lambda m: {
        "value_mask": m,
        "attention_mask": np.random.default_rng(3).random((B, T, T)) < 0.7,
    },
}


@pytest.mark.parametrize("masks", MASKS)
@pytest.mark.parametrize("implementation", supported_paths())
@pytest.mark.parametrize("nan_safe", [True, False], ids=["nan_padding", "finite_padding"])
def test_outputs_and_gradients_are_those_computed_in_full(masks, implementation, nan_safe):
    """With NaN in padding (and `nan_safe_padding`) or finite values there."""
    q, k, v, value_mask = _inputs(nan_in_padding=nan_safe)
    kwargs = dict(MASKS[masks](value_mask), nan_safe_padding=nan_safe)
    full_value, full_grads = _loss_and_grads(q, k, v, implementation, False, **kwargs)
    value, grads = _loss_and_grads(q, k, v, implementation, True, **kwargs)
    assert np.isfinite(value)
    np.testing.assert_allclose(value, full_value, rtol=1e-5, atol=1e-5)
    for name, grad, full in zip("qkv", grads, full_grads, strict=True):
        assert np.isfinite(grad).all(), name
        np.testing.assert_allclose(grad, full, rtol=1e-5, atol=1e-5, err_msg=name)


def test_output_and_weights_match_the_numpy_reference():
    q, k, v, value_mask = _inputs(nan_in_padding=False)
    query_mask = np.arange(T) < np.array([4, 9, 2, 0, 9])[:, None]
    output, weights = luong_attention(
        q,
        v,
        k,
        query_mask=query_mask,
        value_mask=value_mask,
        return_attention_scores=True,
        skip_padded_keys=True,
        skip_options=SKIP,
    )
    expected_output, expected_weights = reference_attention(
        q, v, k, query_mask=query_mask, value_mask=value_mask
    )
    np.testing.assert_allclose(to_numpy(output), expected_output, rtol=1e-5, atol=1e-6)
    # The weights of rows the query mask drops are returned in full, as without skipping.
    np.testing.assert_allclose(to_numpy(weights), expected_weights, rtol=1e-5, atol=1e-6)


def _outputs_as_in_full(q, k, v, **kwargs):
    """Each path's output skipping, checked against its output computed in full."""
    outputs = []
    for implementation in supported_paths():
        full = luong_attention(q, v, k, implementation=implementation, **kwargs)
        skipped = luong_attention(
            q, v, k, implementation=implementation, skip_padded_keys=True, skip_options=SKIP,
            **kwargs,
        )  # fmt: skip
        np.testing.assert_allclose(to_numpy(skipped), to_numpy(full), rtol=1e-5, atol=1e-6)
        outputs.append(skipped)
    return outputs


def test_heads_and_a_query_broadcast_over_the_batch():
    rng = np.random.default_rng(1)
    q = rng.standard_normal((1, 2, T, D)).astype("float32")  # one query for the batch
    k = rng.standard_normal((B, 2, T, D)).astype("float32")
    v = rng.standard_normal((B, 2, T, D)).astype("float32")
    value_mask = np.arange(T) < LENGTHS[:, None]  # (batch, Tv), shared by the heads
    for skipped in _outputs_as_in_full(q, k, v, value_mask=value_mask):
        assert tuple(skipped.shape) == (B, 2, T, D)


def test_a_mask_without_the_batch_dim_is_shared_by_every_run():
    """A `(heads, Tq, Tv)` attention mask on a call with as many heads as sequences."""
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((3, 3, T, D)).astype("float32") for _ in range(3))
    kwargs = {
        "query_mask": np.arange(T) < np.array([9, 2, 5])[:, None],  # runs by query rows
        "attention_mask": rng.random((3, T, T)) < 0.6,  # per head, not per sequence
    }
    _outputs_as_in_full(q, k, v, **kwargs)


def test_a_traced_call_computes_in_full():
    """A trace must not keep the lengths of the batch it was traced with."""

    def attend(q, k, v, value_mask):
        return luong_attention(
            q, v, k, value_mask=value_mask, skip_padded_keys=True, skip_options=SKIP
        )

    q, k, v, value_mask = _inputs(nan_in_padding=False)
    short = np.arange(T) < np.array([1, 1, 2, 1, 1])[:, None]  # traced with: most keys padding
    for name, traced in traced_forms(attend, (q, k, v, short)):
        got = to_numpy(traced(*(ops.convert_to_tensor(x) for x in (q, k, v, value_mask))))
        expected, _ = reference_attention(q, v, k, value_mask=value_mask)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=name)


# --- the layer -----------------------------------------------------------------


# Enough work for the default SkipOptions to plan (B * T * T * 2 * D >= 2**30).
LAYER_T, LAYER_D = 1024, 128
LAYER_LENGTHS = np.array([700, 200, 0, 400, 650])  # keys past 704 (11 blocks) are padding


def _model(skip):
    query = keras.Input((LAYER_T, LAYER_D))
    value = keras.Input((LAYER_T, LAYER_D))
    masked = keras.layers.Masking(0.0)(value)
    layer = LuongAttention(use_scale=True, skip_padded_keys=skip, name="luong")
    output = layer([query, masked])
    return keras.Model([query, value], keras.layers.Dense(1)(output))


def test_the_layer_trains_and_predicts_the_same_traced_or_eager(monkeypatch):
    """`fit` and `predict` trace on JAX and TensorFlow (nothing to skip) and run eagerly on torch."""
    rng = np.random.default_rng(2)
    q = rng.standard_normal((B, LAYER_T, LAYER_D)).astype("float32")
    value_mask = np.arange(LAYER_T) < LAYER_LENGTHS[:, None]
    v = np.where(value_mask[..., None], rng.standard_normal((B, LAYER_T, LAYER_D)), 0.0)
    v = v.astype("float32")
    y = rng.standard_normal((B, LAYER_T, 1)).astype("float32")
    plans = []
    plan = _padding.plan
    monkeypatch.setattr(_padding, "plan", lambda *a, **k: plans.append(plan(*a, **k)) or plans[-1])
    results = []
    for skip in (False, True):
        keras.utils.set_random_seed(0)
        model = _model(skip)
        model.compile(optimizer="sgd", loss="mse")
        history = model.fit([q, v], y, epochs=2, batch_size=B, verbose=0)
        predicted = model.predict([q, v], verbose=0)
        # And eagerly, where the masks' values are there to read.
        plans.clear()
        eager = model([ops.convert_to_tensor(q), ops.convert_to_tensor(v)])
        if skip:
            (runs,) = plans
            assert runs is not None and max(run.kv_len for run in runs) == 704
        np.testing.assert_allclose(to_numpy(eager), predicted, rtol=1e-5, atol=1e-5)
        results.append((history.history["loss"], predicted))
    (loss_full, predicted_full), (loss_skip, predicted_skip) = results
    np.testing.assert_allclose(loss_skip, loss_full, rtol=1e-5)
    np.testing.assert_allclose(predicted_skip, predicted_full, rtol=1e-5, atol=1e-5)


def test_the_option_is_in_the_config():
    layer = LuongAttention(skip_padded_keys=True)
    config = layer.get_config()
    assert config["skip_padded_keys"] is True
    assert LuongAttention.from_config(config).skip_padded_keys is True
    assert LuongAttention().get_config()["skip_padded_keys"] is False
