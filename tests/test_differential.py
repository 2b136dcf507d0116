"""Differential tests against `keras.layers.Attention`: the drop-in promise.

Hypothesis draws constructor and call arguments (values and their Python or
NumPy types), ranks 2-5, batch dims that broadcast, and masks of every kind;
both layers run on the same inputs with the same weights. Where Keras accepts
a case, `LuongAttention` must give Keras's outputs and weights within 1e-5,
except for the deliberate differences of `docs/differences.md`, each asserted
here as the documented behaviour:

- a query row with nothing to attend to gets zero weights and a zero output
  (Keras spreads it uniformly over the masked keys);
- a third mask entry, the key mask, counts (Keras ignores it): ours equals
  Keras given `value_mask & key_mask`;
- a mask that leaves out leading dims, such as `(batch, T)` for
  `(batch, heads, T, dim)` inputs, broadcasts over the dims it leaves out, and
  a full `(batch..., T)` value mask works on inputs of rank > 3 (Keras raises
  or misaligns both): ours equals Keras given the mask reshaped explicitly;
- NumPy seeds are accepted (Keras's `SeedGenerator` rejects `np.int32`).

Low precision is not drawn: Keras's float16 softmax differs from ours (float32)
by design, and `tests/test_precision.py` pins ours against a float64 reference.
Where Keras raises, ours must raise `ValueError`/`TypeError` naming the
argument.
"""

import itertools
import json
import pathlib

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import luong_attention
from luong_attention import LuongAttention
from tests.helpers import to_numpy

IMPLEMENTATIONS = ("auto", "reference", "fused", "blocked")
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}

# Flags drawn with the types real code passes: Python bools and ints, NumPy bools.
FLAGS = st.sampled_from([False, True, 0, 1, np.False_, np.True_])
TRUE_FLAGS = st.sampled_from([True, 1, np.True_])
DROPOUTS = st.sampled_from([0.0, 0, 0.5, np.float32(0.5), np.float64(0.25), np.float32(0.0)])
SEEDS = st.sampled_from([None, 3, np.int32(7), np.int64(11)])
# Keras's `Layer.__call__` rejects a mask list that mixes tensors (NumPy arrays
# become tensors) with Python lists: nested lists come alone, arrays mix freely.
ARRAY_KINDS = ("bool", "int32", "int64", "float32", "tensor")


# --- drawing cases ---------------------------------------------------------


@st.composite
def shapes(draw, ranks=(2, 3, 4, 5), broadcast=True):
    """Shapes of query, value and key; batch dims of size 1 broadcast."""
    rank = draw(st.sampled_from(ranks))
    tq, tv, dim, dim_v = (draw(st.integers(1, 5)) for _ in range(4))
    has_key = draw(st.booleans())
    if not has_key:
        dim_v = dim
    if rank == 2:  # (batch, dim): attention across the batch axis.
        return (tq, dim), (tv, dim_v), (tv, dim) if has_key else None
    batch = [draw(st.integers(1, 3)) for _ in range(rank - 2)]

    def own_batch():
        if not broadcast:
            return tuple(batch)
        return tuple(draw(st.sampled_from([1, b])) for b in batch)

    key = own_batch() + (tv, dim) if has_key else None
    return own_batch() + (tq, dim), own_batch() + (tv, dim_v), key


def _batch_shape(query_shape, value_shape, key_shape):
    key_shape = value_shape if key_shape is None else key_shape
    return np.broadcast_shapes(query_shape[:-2], value_shape[:-2], key_shape[:-2])


@st.composite
def sequence_mask(draw, input_shape, batch_shape, kinds=ARRAY_KINDS):
    """A mask for one input: `None`, or `(b_0, ..., b_k, T)` of any kind.

    The batch dims kept are a prefix of the input's (all of them, or fewer:
    the mask then broadcasts over the rest); each is 1, the input's own size
    or the broadcast batch size.
    """
    if draw(st.booleans()):
        return None
    rank = len(input_shape)
    if rank == 2:
        shape = (input_shape[0],)
    else:
        kept = draw(st.integers(1, rank - 2))
        dims = [
            draw(st.sampled_from(sorted({1, own, full})))
            for own, full in zip(input_shape[:kept], batch_shape[:kept], strict=True)
        ]
        shape = (*dims, input_shape[-2])
    seed = draw(st.integers(0, 2**16))
    mask = np.random.default_rng(seed).random(shape) < 0.7
    return _as_kind(mask, draw(st.sampled_from(kinds)))


def _as_kind(mask, kind):
    if kind == "list":
        return mask.tolist()
    if kind == "tensor":
        return keras.ops.convert_to_tensor(mask)
    return mask.astype(kind)


@st.composite
def masks(draw, query_shape, value_shape, key_shape):
    """`None`, `[query_mask, value_mask]` or `[query_mask, value_mask, key_mask]`."""
    structure = draw(st.sampled_from(["none", "two", "three"]))
    if structure == "none":
        return None
    batch = _batch_shape(query_shape, value_shape, key_shape)
    kinds = ("list",) if draw(st.booleans()) else ARRAY_KINDS
    entries = [
        draw(sequence_mask(query_shape, batch, kinds)),
        draw(sequence_mask(value_shape, batch, kinds)),
    ]
    if structure == "three":
        entries.append(draw(sequence_mask(key_shape or value_shape, batch, kinds)))
    return entries


def _inputs(query_shape, value_shape, key_shape, seed):
    rng = np.random.default_rng(seed)
    shapes_ = [query_shape, value_shape] + ([key_shape] if key_shape else [])
    return [rng.standard_normal(s).astype("float32") for s in shapes_]


# --- running both layers ---------------------------------------------------


def _plain(value):
    """A drawn argument as the Python value Keras's own layer is given."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _layers(init, inputs, implementation="auto"):
    """Both layers, built, with the same (non-default) weights."""
    ours = LuongAttention(**init, implementation=implementation)
    theirs = keras.layers.Attention(**{k: _plain(v) for k, v in init.items()})
    input_shapes = [x.shape for x in inputs]
    ours.build(input_shapes)
    theirs.build(input_shapes)
    theirs.set_weights([np.float32(0.6 + 0.3 * i) for i in range(len(theirs.weights))])
    ours.set_weights(theirs.get_weights())
    return ours, theirs


def _bool_mask(mask):
    return None if mask is None else np.asarray(to_numpy(mask)) != 0


def _full_rank(mask, batch_rank):
    """Inserts size-1 dims before the time dim: `(b, T)` -> `(b, 1, ..., T)`."""
    if mask is None:
        return None
    missing = batch_rank + 1 - mask.ndim
    return mask.reshape(mask.shape[:-1] + (1,) * missing + mask.shape[-1:])


def _and(a, b):
    if a is None or b is None:
        return b if a is None else a
    return np.logical_and(a, b)


def _keras_masks(drawn, rank, causal):
    """The masks that make Keras compute what ours documents for `drawn`.

    The key mask is ANDed into the value mask (Keras ignores a third entry);
    on inputs of rank > 3 each mask gets its size-1 dims explicitly, and the
    value mask one more before the time dim unless causal (Keras inserts that
    dim itself only for a rank-2 value mask, or when causal).
    """
    if drawn is None:
        return None
    batch_rank = max(rank - 2, 0)
    drawn = [_full_rank(_bool_mask(m), batch_rank) for m in drawn] + [None]
    query_mask, key_side = drawn[0], _and(drawn[1], drawn[2])
    if key_side is not None and rank > 3 and not causal:
        key_side = np.expand_dims(key_side, -2)
    if query_mask is None and key_side is None:
        return None
    return [query_mask, key_side]


def _dead_rows(drawn, rank, causal, weights_shape):
    """Boolean `(batch..., Tq)`: rows with no key to attend to."""
    allowed = np.ones(weights_shape, bool)
    if drawn is not None:
        batch_rank = max(rank - 2, 0)
        entries = [_full_rank(_bool_mask(m), batch_rank) for m in drawn] + [None]
        key_side = _and(entries[1], entries[2])
        if key_side is not None:
            allowed = allowed & np.expand_dims(key_side, -2)
    if causal:
        tq, tv = weights_shape[-2:]
        allowed = allowed & np.tril(np.ones((tq, tv), bool))
    return ~allowed.any(-1)


def _run(layer, inputs, mask, call):
    outputs = layer(list(inputs), mask=mask, **call)
    if isinstance(outputs, (tuple, list)):
        return [to_numpy(o) for o in outputs]
    return [to_numpy(outputs)]


def check_against_keras(init, inputs, mask, call, implementation="auto"):
    """Runs both layers on one case and asserts the documented relation."""
    ours, theirs = _layers(init, inputs, implementation)
    rank = inputs[0].ndim
    causal = bool(call.get("use_causal_mask", False))
    got = _run(ours, inputs, mask, call)
    expected = _run(
        theirs, inputs, _keras_masks(mask, rank, causal), {k: _plain(v) for k, v in call.items()}
    )
    assert len(got) == len(expected)
    if call.get("training") and init.get("dropout", 0) > 0:
        # Dropout draws differ between the layers: shapes only.
        assert [g.shape for g in got] == [e.shape for e in expected]
        assert all(np.all(np.isfinite(g)) for g in got)
        return
    # Shapes are Keras's: the weights have the batch dims of the scores and
    # masks, which may be fewer than the output's (a value batch of 2 over a
    # query and key batch of 1). Values are compared at the full shape, with
    # the rows that see no key zeroed (the documented difference).
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
    weights_shape = (*got[0].shape[:-1], inputs[1].shape[-2])
    dead = _dead_rows(mask, rank, causal, weights_shape)
    full = [got[0].shape] + ([weights_shape] if len(got) == 2 else [])
    for g, e, shape in zip(got, expected, full, strict=True):
        e = np.where(dead[..., None], 0.0, np.broadcast_to(e, shape))
        np.testing.assert_allclose(np.broadcast_to(g, shape), e, **TOLERANCE)


# --- differential properties -----------------------------------------------


@st.composite
def constructor_args(draw, score_modes=("dot", "concat"), dropout=True):
    return {
        "use_scale": draw(FLAGS),
        "score_mode": draw(st.sampled_from(score_modes)),
        "dropout": draw(DROPOUTS) if dropout else 0.0,
        "seed": draw(SEEDS),
    }


@st.composite
def call_args(draw, causal=True, scores=True, training=True):
    call = {}
    if causal:
        call["use_causal_mask"] = draw(FLAGS)
    if scores:
        call["return_attention_scores"] = draw(st.sampled_from([False, True, np.True_, np.False_]))
    if training:
        call["training"] = draw(st.sampled_from([None, False, True, 0, 1, np.True_]))
    return call


@given(data=st.data())
def test_argument_values_and_types_match_keras(data):
    """Rank-3 inputs; every constructor and call argument drawn, types included."""
    shape = data.draw(shapes(ranks=(3,), broadcast=False))
    init = data.draw(constructor_args())
    call = data.draw(call_args())
    inputs = _inputs(*shape, seed=data.draw(st.integers(0, 2**16)))
    check_against_keras(init, inputs, None, call)
    config = LuongAttention(**init).get_config()
    json.dumps(config)
    for name in ("use_scale", "score_mode", "dropout", "seed"):
        assert type(config[name]).__module__ == "builtins", (name, type(config[name]))
        assert config[name] == _plain(init[name])


@given(data=st.data())
def test_broadcast_batch_dims_match_keras(data):
    """Ranks 3-5, each leading dim of query, value and key 1 or B; no masks."""
    shape = data.draw(shapes(ranks=(3, 4, 5)))
    init = data.draw(constructor_args(dropout=False))
    call = data.draw(call_args(training=False))
    inputs = _inputs(*shape, seed=data.draw(st.integers(0, 2**16)))
    check_against_keras(init, inputs, None, call)


@given(data=st.data())
def test_masks_match_keras(data):
    """Ranks 3-5 with masks of every kind, prefix shapes and broadcast batch dims."""
    shape = data.draw(shapes(ranks=(3, 4, 5)))
    mask = data.draw(masks(*shape))
    init = data.draw(constructor_args(dropout=False))
    call = data.draw(call_args(training=False))
    inputs = _inputs(*shape, seed=data.draw(st.integers(0, 2**16)))
    check_against_keras(init, inputs, mask, call)


@given(data=st.data())
def test_rank_2_inputs_match_keras(data):
    """`(batch, dim)` inputs attend across the batch axis; masks `(batch,)`.

    Causal is left out here: Keras then returns an extra leading axis
    (`test_rank_2_causal`).
    """
    shape = data.draw(shapes(ranks=(2,)))
    mask = data.draw(masks(*shape))
    init = data.draw(constructor_args(dropout=False))
    call = data.draw(call_args(causal=False, training=False))
    inputs = _inputs(*shape, seed=data.draw(st.integers(0, 2**16)))
    check_against_keras(init, inputs, mask, call)


@given(data=st.data())
def test_dropout_in_training_matches_keras_shapes(data):
    shape = data.draw(shapes(ranks=(2, 3, 4)))
    mask = data.draw(masks(*shape))
    init = data.draw(constructor_args())
    init["dropout"] = data.draw(st.sampled_from([0.5, np.float32(0.3)]))
    call = data.draw(call_args(causal=len(shape[0]) > 2))
    call["training"] = data.draw(TRUE_FLAGS)
    inputs = _inputs(*shape, seed=data.draw(st.integers(0, 2**16)))
    check_against_keras(init, inputs, mask, call)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@given(data=st.data())
def test_every_path_broadcasts_like_keras(implementation, data):
    """Broadcast batch dims and masks on each path (the options all paths run)."""
    shape = data.draw(shapes(ranks=(3, 4, 5)))
    mask = data.draw(masks(*shape))
    init = data.draw(constructor_args(score_modes=("dot",), dropout=False))
    call = data.draw(call_args(scores=False, training=False))
    inputs = _inputs(*shape, seed=data.draw(st.integers(0, 2**16)))
    check_against_keras(init, inputs, mask, call, implementation)


# --- where Keras raises ----------------------------------------------------


@st.composite
def incompatible_case(draw):
    """A case no broadcasting can fix, and the argument the error must name."""
    rank = draw(st.sampled_from((3, 4)))
    batch = [draw(st.integers(2, 3)) for _ in range(rank - 2)]
    tq, tv, dim = (draw(st.integers(2, 4)) for _ in range(3))
    query, value, key = (batch + [tq, dim], batch + [tv, dim], batch + [tv, dim])
    mask = None
    kind = draw(st.sampled_from(["batch", "length", "dim", "value_mask", "query_mask"]))
    if kind == "batch":  # 2 against 3 (or 3 against 4) in one leading dim.
        name = draw(st.sampled_from(["value", "key"]))
        target = value if name == "value" else key
        axis = draw(st.integers(0, rank - 3))
        target[axis] += 1
    elif kind == "length":  # key and value of different Tv.
        name = "key"
        key[-2] += 1
    elif kind == "dim":  # query and key of different dims.
        name = "key"
        key[-1] += 1
    else:  # a mask of the wrong length, or the wrong batch size.
        name = kind
        length = tq if kind == "query_mask" else tv
        shape = [*batch, length]
        shape[draw(st.sampled_from([0, -1]))] += 1
        masks_ = [None, None]
        masks_[kind == "value_mask"] = np.ones(shape, bool)
        mask = masks_
    return [tuple(query), tuple(value), tuple(key)], mask, name


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@given(case=incompatible_case())
def test_incompatible_shapes_raise_naming_the_argument(implementation, case):
    input_shapes, mask, name = case
    inputs = _inputs(*input_shapes, seed=0)
    with pytest.raises(Exception):  # noqa: B017, PT011 - Keras raises backend errors here.
        keras.layers.Attention()(inputs, mask=mask)
    with pytest.raises((ValueError, TypeError), match=name):
        LuongAttention(implementation=implementation)(inputs, mask=mask)


def test_invalid_score_mode_raises_like_keras():
    with pytest.raises(ValueError, match="score_mode"):
        keras.layers.Attention(score_mode="sum")
    with pytest.raises(ValueError, match="score_mode"):
        LuongAttention(score_mode="sum")


# --- the cases, written out ----------------------------------------

B, H, T, D = 3, 2, 4, 5


def _rng_inputs(*shapes_, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype("float32") for s in shapes_]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_learned_query_head_over_a_batch(implementation):
    """A `(1, H, D)` query head attends over `(B, T, D)` items with padding."""
    query, value = _rng_inputs((1, H, D), (B, T, D))
    value_mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], bool)
    check_against_keras({"use_scale": True}, [query, value], [None, value_mask], {}, implementation)
    output = LuongAttention(implementation=implementation)([query, value], mask=[None, value_mask])
    assert tuple(output.shape) == (B, H, D)


class QueryHead(keras.layers.Layer):
    """`H` learned queries, shape `(1, H, dim)`, shared by every example."""

    def build(self, input_shape):
        self.head = self.add_weight(shape=(1, H, input_shape[-1]), initializer="normal")

    def call(self, items):
        return self.head * keras.ops.ones_like(items[:1, :1, :1])


def test_learned_query_head_in_a_functional_model():
    (value,) = _rng_inputs((B, T, D))
    value_mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], bool)
    items, mask = keras.Input(shape=(T, D)), keras.Input(shape=(T,), dtype="bool")
    head = QueryHead()
    outputs = {}
    for name, cls in (("ours", LuongAttention), ("keras", keras.layers.Attention)):
        attended = cls(use_scale=True)([head(items), items], mask=[None, mask])
        outputs[name] = to_numpy(keras.Model([items, mask], attended)([value, value_mask]))
    assert outputs["ours"].shape == (B, H, D)
    np.testing.assert_allclose(outputs["ours"], outputs["keras"], **TOLERANCE)


def test_rank_2_inputs_and_masks():
    """`(batch, dim)`: scores `(batch, batch_v)`, masks `(batch,)`."""
    query, value = _rng_inputs((3, D), (4, D))
    mask = [np.array([1, 0, 1], bool), np.array([1, 1, 0, 1], bool)]
    output, weights = LuongAttention()([query, value], mask=mask, return_attention_scores=True)
    assert tuple(output.shape) == (3, D) and tuple(weights.shape) == (3, 4)
    check_against_keras({}, [query, value], mask, {"return_attention_scores": True})


def test_rank_2_causal():
    """Rank 2 with a causal mask: scores `(batch, batch_v)`, query row i sees keys j <= i.

    Keras returns the same numbers with a spurious leading axis of size 1
    (its causal mask is `(1, Tq, Tv)`); ours keeps the rank of the input.
    """
    query, value = _rng_inputs((3, D), (4, D))
    output, weights = LuongAttention()(
        [query, value], use_causal_mask=True, return_attention_scores=True
    )
    k_output, k_weights = keras.layers.Attention()(
        [query, value], use_causal_mask=True, return_attention_scores=True
    )
    assert tuple(k_output.shape) == (1, 3, D)
    assert tuple(output.shape) == (3, D) and tuple(weights.shape) == (3, 4)
    np.testing.assert_allclose(to_numpy(output), to_numpy(k_output)[0], **TOLERANCE)
    np.testing.assert_allclose(to_numpy(weights), to_numpy(k_weights)[0], **TOLERANCE)
    np.testing.assert_array_equal(to_numpy(weights) > 0, np.tril(np.ones((3, 4), bool)))


def test_scalar_argument_types_and_json_config():
    layer = LuongAttention(use_scale=np.True_, dropout=np.float32(0.1), seed=np.int32(3))
    query, value = _rng_inputs((2, 3, D), (2, 4, D))
    output, weights = layer(
        [query, value], use_causal_mask=1, training=1, return_attention_scores=np.True_
    )
    assert tuple(weights.shape) == (2, 3, 4)
    flagged = LuongAttention(use_scale=1, causal=np.True_)
    flagged([query, value], training=np.False_, use_causal_mask=np.int64(0))
    for built in (layer, flagged):
        config = built.get_config()
        json.dumps(config)
        assert type(config["use_scale"]) is bool and type(config["causal"]) is bool
        assert type(config["dropout"]) is float
    config = LuongAttention(dropout=np.float32(0.1), seed=np.int64(4)).get_config()
    assert config["dropout"] == pytest.approx(0.1) and type(config["seed"]) is int
    revived = LuongAttention.from_config(json.loads(json.dumps(config)))
    assert revived.get_config() == config


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_tuples_of_inputs_masks_and_build_shapes(implementation):
    query, value, key = _rng_inputs((2, 3, D), (2, 4, D), (2, 4, D))
    mask = (np.array([[1, 1, 0], [1, 1, 1]], bool), np.array([[1, 0, 1, 1], [1, 1, 1, 0]], bool))
    layer = LuongAttention(use_scale=True, implementation=implementation)
    layer.build(((2, 3, D), (2, 4, D), (2, 4, D)))
    assert layer.built and len(layer.weights) == 1
    expected = to_numpy(layer([query, value, key], mask=list(mask)))
    np.testing.assert_allclose(
        to_numpy(layer((query, value, key), mask=mask)), expected, **TOLERANCE
    )
    check_against_keras({"use_scale": True}, [query, value, key], list(mask), {}, implementation)

    # Functional: tuples of symbolic inputs and masks.
    inputs = (keras.Input((3, D)), keras.Input((4, D)), keras.Input((4, D)))
    mask_inputs = (keras.Input((3,), dtype="bool"), keras.Input((4,), dtype="bool"))
    functional = LuongAttention(use_scale=True, implementation=implementation)
    model = keras.Model((*inputs, *mask_inputs), functional(inputs, mask=mask_inputs))
    functional.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(model((query, value, key, *mask))), expected, **TOLERANCE)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    ("shapes_", "name"),
    [
        (((2, 3, D), (3, 4, D)), "value"),
        (((2, 3, D), (2, 4, D), (3, 4, D)), "key"),
        (((2, 3, D), (2, 4, D), (2, 5, D)), "key"),
        (((2, H, 3, D), (2, 3, 4, D)), "value"),
    ],
)
def test_genuinely_incompatible_shapes(implementation, shapes_, name):
    """Shapes no broadcasting can fix: a ValueError naming the input and its shape."""
    inputs = _rng_inputs(*shapes_)
    with pytest.raises(ValueError, match=name) as error:
        LuongAttention(implementation=implementation)(inputs)
    offending = shapes_[1] if name == "value" else shapes_[2]
    assert str(offending) in str(error.value)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_inputs_of_different_ranks_broadcast_like_keras(implementation):
    """Keras broadcasts a rank-3 query against rank-4 keys as NumPy would."""
    query, value = _rng_inputs((B, 3, D), (2, B, T, D))
    check_against_keras({}, [query, value], None, {}, implementation)


# --- keras.config flash attention and the "auto" choice -------------------

# `keras.config.enable_flash_attention()` writes `None` in Keras 3.15 (the
# value before any call): "enabled" and "unset" are one state, in which
# "auto" takes the measured choice. Only `True` (set some other way, e.g. by a
# later Keras) forces the fused path. The fixture restores the previous value
# with the public calls, which is exact for `None` and `False`.


@pytest.fixture
def flash_config():
    previous = keras.config.is_flash_attention_enabled()
    yield
    if previous is False:
        keras.config.disable_flash_attention()
    else:
        keras.config.enable_flash_attention()
    assert keras.config.is_flash_attention_enabled() == previous


def _calls():
    from luong_attention._dispatch import Call

    for score_mode, dropout, scores, length, masked, causal, dtype, training in itertools.product(
        ("dot", "concat"),
        (False, True),
        (False, True),
        (8, 100, 300, 1000, 5000),
        (False, True),
        (False, True),
        ("float32", "float16"),
        (False, True),
    ):
        yield Call(
            score_mode=score_mode,
            dropout_active=dropout and training,
            return_attention_scores=scores,
            q_len=length,
            kv_len=length,
            masked=masked,
            causal=causal,
            dtype=dtype,
            training=training,
        )


def _supports(path, call):
    from luong_attention._dispatch import unsupported_reason

    return unsupported_reason(path, call) is None


def _measured_choice(call, *, without=()):
    """The first supported path of the call's row in auto_table.json, read here."""
    from luong_attention._dispatch import device_kind

    table = json.loads(
        (pathlib.Path(luong_attention.__file__).parent / "auto_table.json").read_text()
    )
    longest = max(call.q_len, call.kv_len)
    regimes = table["gpu_length_regimes" if device_kind() == "gpu" else "length_regimes"]
    regime = next(name for bound, name in regimes if bound is None or longest <= bound)
    mask = {(False, False): "none", (False, True): "padding", (True, False): "causal"}.get(
        (call.causal, call.masked), "causal+padding"
    )
    row = {
        "backend": keras.backend.backend(),
        "device": device_kind(),
        "length": regime,
        "mask": mask,
        "dtype": "low" if call.dtype in ("float16", "bfloat16") else "float32",
        "mode": "train" if call.training else "infer",
    }
    (paths,) = [r["paths"] for r in table["rankings"] if all(r[k] == v for k, v in row.items())]
    return next(p for p in paths if p not in without and _supports(p, call))


def test_flash_unset_or_enabled_takes_the_measured_choice(flash_config):
    from luong_attention._dispatch import choose_path

    keras.config.enable_flash_attention()
    assert keras.config.is_flash_attention_enabled() is None  # Keras 3.15: enabled == unset
    for call in _calls():
        assert choose_path("auto", call) == _measured_choice(call), call


def test_flash_disabled_never_takes_fused(flash_config):
    from luong_attention._dispatch import choose_path

    keras.config.disable_flash_attention()
    for call in _calls():
        assert choose_path("auto", call) == _measured_choice(call, without=("fused",)), call
    # A named path is the user's choice, not auto's: fused stays available.
    assert choose_path("fused", next(c for c in _calls() if _supports("fused", c))) == "fused"


def test_flash_true_takes_fused_wherever_supported(flash_config, monkeypatch):
    from luong_attention._dispatch import choose_path

    monkeypatch.setattr(keras.config, "is_flash_attention_enabled", lambda: True)
    for call in _calls():
        expected = "fused" if _supports("fused", call) else _measured_choice(call)
        assert choose_path("auto", call) == expected, call
