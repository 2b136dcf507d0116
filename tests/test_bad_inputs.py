"""Bad and odd input: one table of errors, one of documented results.

`CASES` is the table. A case is `(call, expected)`: `call(implementation)`
constructs the layer, calls it, or calls the function, and `expected` is
either `Raises(error, match)` (the bad-input rows, `ERRORS`: the message must
name the argument or show the received value) or a function that checks the
result (odd but valid input, `RESULTS`). Errors come before any implementation
path is chosen, so their rows run with "auto"; results run on every path that
supports their options (`tests.helpers.supported_paths`).
"""

import dataclasses
import re

import keras
import numpy as np
import pytest
from keras import ops

from luong_attention import LuongAttention, luong_attention
from tests.helpers import small_blocks, supported_paths, to_numpy, value_and_grad
from tests.reference import reference_attention

_data = np.random.default_rng(0)
Q = _data.standard_normal((2, 3, 4)).astype("float32")
V = _data.standard_normal((2, 5, 4)).astype("float32")
K = _data.standard_normal((2, 5, 4)).astype("float32")
W = _data.standard_normal((4, 4)).astype("float32")
VALUE_MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)


@dataclasses.dataclass
class Raises:
    error: type
    match: str


@dataclasses.dataclass
class Call:
    """`run(implementation)` makes the call; `options` decide which paths support it."""

    run: object
    options: dict

    def __call__(self, implementation):
        return self.run(implementation)


def fn(*args, **kwargs):
    """A call of `luong_attention` on the given implementation path."""
    return Call(
        lambda implementation: luong_attention(*args, implementation=implementation, **kwargs),
        kwargs,
    )


def layer(inputs, init=None, **call_kwargs):
    """A call of a fresh `LuongAttention(**init)` (its implementation set per path)."""

    def run(implementation):
        attention = LuongAttention(**(init or {}), implementation=implementation)
        return attention(inputs, **call_kwargs)

    return Call(run, {**(init or {}), **call_kwargs})


def construct(**kwargs):
    """Constructing `LuongAttention(**kwargs)`."""
    return Call(lambda implementation: LuongAttention(**kwargs), kwargs)


def symbolic(*shapes, init=None):
    """A call of a fresh `LuongAttention(**init)` on `keras.Input`s of the given batch shapes."""
    return layer([keras.Input(batch_shape=shape) for shape in shapes], init)


def with_nan(array, index, value=np.nan):
    array = array.copy()
    array[index] = value
    return array


def clean(**kwargs):
    """The reference output for the clean inputs Q, V (and K if given)."""
    return reference_attention(Q, V, **kwargs)[0]


def shape_is(shape, zeros=False):
    def check(result):
        result = to_numpy(result)
        assert result.shape == shape
        if zeros:
            assert np.all(result == 0)

    return check


def equals(expected, rows=None, nan_rows=None):
    """Output equals `expected` (on `rows` only, a boolean (B, Tq) array, if given).

    `nan_rows`: rows that may hold NaN (their values are not checked).
    """

    def check(result):
        result = to_numpy(result)
        keep = np.ones(result.shape[:-1], bool) if rows is None else rows
        if nan_rows is not None:
            keep = keep & ~nan_rows
        assert np.all(np.isfinite(result[keep]))
        np.testing.assert_allclose(result[keep], expected[keep], rtol=1e-5, atol=1e-5)

    return check


def outputs_and_weights(output_shape, weights_shape):
    def check(result):
        output, weights = (to_numpy(x) for x in result)
        assert output.shape == output_shape and weights.shape == weights_shape
        assert np.all(output == 0) and np.all(weights == 0)

    return check


ROW_0_1 = np.zeros((2, 3), bool)
ROW_0_1[0, 1] = True
BATCH_1 = np.zeros((2, 3), bool)
BATCH_1[1] = True

CASES = {
    # --- constructor arguments ---------------------------------------------
    "constructor score_mode 'additive'": (
        construct(score_mode="additive"),
        Raises(ValueError, r"argument score_mode.*Received: score_mode='additive'"),
    ),
    "constructor causal_alignment 'left'": (
        construct(causal_alignment="left"),
        Raises(ValueError, r"argument causal_alignment.*Received: causal_alignment='left'"),
    ),
    "constructor implementation 'cuda'": (
        construct(implementation="cuda"),
        Raises(ValueError, r"argument implementation.*Received: implementation='cuda'"),
    ),
    "constructor dropout 1.0": (
        construct(dropout=1.0),
        Raises(ValueError, r"argument dropout.*\[0, 1\).*Received: dropout=1.0"),
    ),
    "constructor dropout -0.1": (
        construct(dropout=-0.1),
        Raises(ValueError, r"argument dropout.*Received: dropout=-0.1"),
    ),
    "constructor dropout a string": (
        construct(dropout="0.5"),
        Raises(TypeError, r"argument dropout.*Received: dropout='0.5'"),
    ),
    "constructor use_scale a string": (
        construct(use_scale="yes"),
        Raises(TypeError, r"argument use_scale.*Received: use_scale='yes'"),
    ),
    "constructor causal a string": (
        construct(causal="yes"),
        Raises(TypeError, r"argument causal.*Received: causal='yes'"),
    ),
    "constructor nan_safe_padding a string": (
        construct(nan_safe_padding="yes"),
        Raises(TypeError, r"argument nan_safe_padding.*Received: nan_safe_padding='yes'"),
    ),
    "constructor seed a float": (
        construct(seed=1.5),
        Raises(TypeError, r"argument seed.*Received: seed=1.5"),
    ),
    # --- the layer's call convention ------------------------------------------
    "layer on one tensor": (
        layer(Q),
        Raises(ValueError, r"must be called on a list of inputs.*Received"),
    ),
    "layer on a dict of one": (
        layer({"query": Q}),
        Raises(ValueError, r"must be called on a list of inputs.*Received"),
    ),
    "layer on a list of 1": (
        layer([Q]),
        Raises(ValueError, r"inputs of length 2 or 3.*Received length: 1"),
    ),
    "layer on a list of 4": (
        layer([Q, V, V, V]),
        Raises(ValueError, r"inputs of length 2 or 3.*Received length: 4"),
    ),
    "layer mask not a list": (
        layer([Q, V], mask=np.ones((2, 3), bool)),
        Raises(ValueError, r"mask must be a list.*Received: mask="),
    ),
    "mask list of length 4": (
        layer([Q, V], mask=[None, None, None, None]),
        Raises(ValueError, r"mask of length 2 or 3.*Received length: 4"),
    ),
    "layer rank-1 query": (
        layer([Q[0, 0], V[0]]),
        Raises(ValueError, r"argument query.*rank >= 2.*Received: query.shape=\(4,\)"),
    ),
    "layer query and key dims differ": (
        layer([Q, V[..., :3]]),
        Raises(
            ValueError, r"same last dim.*Received: query.shape=\(2, 3, 4\), key.shape=\(2, 5, 3\)"
        ),
    ),
    "layer key longer than value": (
        layer([Q, V, np.zeros((2, 6, 4), "float32")]),
        Raises(
            ValueError,
            r"key and value must have the same length"
            r".*Received: key.shape=\(2, 6, 4\), value.shape=\(2, 5, 4\)",
        ),
    ),
    "layer batch sizes 2 and 3": (
        layer([Q, np.zeros((3, 5, 4), "float32")]),
        Raises(
            ValueError,
            r"equal or broadcast.*Received: query.shape=\(2, 3, 4\), value.shape=\(3, 5, 4\)",
        ),
    ),
    "layer rank-4 value whose batch dims do not broadcast": (
        layer([Q, np.zeros((2, 3, 5, 4), "float32")]),
        Raises(ValueError, r"equal or broadcast.*Received: .*value.shape=\(2, 3, 5, 4\)"),
    ),
    "layer query mask of the wrong length": (
        layer([Q, V], mask=[np.ones((2, 4), bool), None]),
        Raises(
            ValueError,
            r"argument query_mask.*Expected \(2, 3\).*Received: query_mask.shape=\(2, 4\)",
        ),
    ),
    "layer value mask of the wrong batch": (
        layer([Q, V], mask=[None, np.ones((3, 5), bool)]),
        Raises(ValueError, r"argument value_mask.*Received: value_mask.shape=\(3, 5\)"),
    ),
    "layer key mask of too high rank": (
        layer([Q, V], mask=[None, None, np.ones((2, 5, 1), bool)]),
        Raises(ValueError, r"argument key_mask.*Received: key_mask.shape=\(2, 5, 1\)"),
    ),
    "layer int32 query": (
        layer([Q.astype("int32"), V]),
        Raises(TypeError, r"argument query.*floating-point.*Received: query.dtype=int32"),
    ),
    "layer attention_mask of the wrong shape": (
        layer([Q, V], attention_mask=np.ones((3, 4), bool)),
        Raises(
            ValueError,
            r"argument attention_mask.*\(2, 3, 5\).*Received: attention_mask.shape=\(3, 4\)",
        ),
    ),
    "symbolic inputs are checked before any backend op": (
        symbolic((None, 3, 4), (None, 5, 4), (None, 6, 4)),
        Raises(
            ValueError, r"key and value must have the same length.*Received: key.shape=\(None, 6"
        ),
    ),
    "general score with an unknown query dim": (
        symbolic((None, 3, None), (None, 5, 4), init={"score_mode": "general"}),
        Raises(
            ValueError,
            r"score_mode='general' needs the last dims.*Received: input_shape=",
        ),
    ),
    # --- the function's options ------------------------------------------------
    "function nan_safe_padding a list": (
        fn(Q, V, nan_safe_padding=[True]),
        Raises(TypeError, r"argument nan_safe_padding.*Received: nan_safe_padding=\[True\]"),
    ),
    "function score_mode 'bahdanau'": (
        fn(Q, V, score_mode="bahdanau"),
        Raises(ValueError, r"argument score_mode.*Received: score_mode='bahdanau'"),
    ),
    "function dropout 2.0": (
        fn(Q, V, dropout=2.0),
        Raises(ValueError, r"argument dropout.*Received: dropout=2.0"),
    ),
    # --- wrong types of the inputs -----------------------------------------
    "query None": (
        fn(None, V),
        Raises(TypeError, r"argument query.*Received: query=None"),
    ),
    "value None": (
        fn(Q, None),
        Raises(TypeError, r"argument value.*Received: value=None"),
    ),
    "query a string": (
        fn("query", V),
        Raises(TypeError, r"argument query.*Received: query='query'"),
    ),
    "query of strings": (
        fn(np.full((2, 3, 4), "a"), V),
        Raises(TypeError, r"argument query.*floating-point.*Received: query.dtype=<U1"),
    ),
    "layer [None, value]": (
        layer([None, V]),
        Raises(TypeError, r"argument query.*Received: query=None"),
    ),
    "layer [query, None]": (
        layer([Q, None]),
        Raises(TypeError, r"argument value.*Received: value=None"),
    ),
    "layer [query, value, None]: key defaults to value": (
        layer([Q, V, None]),
        equals(clean()),
    ),
    "nested Python lists": (
        fn(Q.tolist(), V.tolist()),
        equals(clean()),
    ),
    # --- wrong dtypes --------------------------------------------------------
    "int32 query": (
        fn(Q.astype("int32"), V),
        Raises(TypeError, r"argument query.*floating-point.*Received: query.dtype=int32"),
    ),
    "int32 inputs through the layer": (
        layer([Q.astype("int32"), V.astype("int32")]),
        Raises(TypeError, r"argument query.*Received: query.dtype=int32"),
    ),
    "complex value": (
        fn(Q.astype("complex64"), V.astype("complex64")),
        Raises(TypeError, r"argument query.*Received: query.dtype=complex64"),
    ),
    "bool query": (
        fn(Q > 0, V),
        Raises(TypeError, r"argument query.*Received: query.dtype=bool"),
    ),
    "float16 query, float32 value": (
        fn(Q.astype("float16"), V),
        Raises(TypeError, r"same dtype.*Received: query.dtype=float16, value.dtype=float32"),
    ),
    "float32 query and value, float16 key": (
        fn(Q, V, K.astype("float16")),
        Raises(TypeError, r"same dtype.*Received: .*key.dtype=float16"),
    ),
    "float masks: nonzero is True": (
        fn(Q, V, value_mask=VALUE_MASK.astype("float32") * 0.5),
        equals(clean(value_mask=VALUE_MASK)),
    ),
    "int masks: nonzero is True": (
        fn(Q, V, value_mask=VALUE_MASK.astype("int32") * 7),
        equals(clean(value_mask=VALUE_MASK)),
    ),
    "float attention_mask": (
        fn(Q, V, attention_mask=np.tril(np.ones((3, 5), "float32"))),
        equals(clean(attention_mask=np.tril(np.ones((3, 5), bool)))),
    ),
    "mask of strings": (
        fn(Q, V, value_mask=np.full((2, 5), "y")),
        Raises(TypeError, r"argument value_mask.*boolean.*Received: value_mask.dtype=<U1"),
    ),
    "complex mask": (
        fn(Q, V, query_mask=np.ones((2, 3), "complex64")),
        Raises(TypeError, r"argument query_mask.*Received: query_mask.dtype=complex64"),
    ),
    "mask a string": (
        fn(Q, V, key_mask="all"),
        Raises(TypeError, r"argument key_mask.*Received: key_mask='all'"),
    ),
    "mask as nested lists": (
        fn(Q, V, value_mask=VALUE_MASK.tolist()),
        equals(clean(value_mask=VALUE_MASK)),
    ),
    "int general_score_weight": (
        fn(Q, V, score_mode="general", general_score_weight=np.ones((4, 4), "int32")),
        Raises(
            TypeError, r"argument general_score_weight.*Received: general_score_weight.dtype=int32"
        ),
    ),
    # --- wrong ranks and shapes ----------------------------------------------
    "rank-1 query": (
        fn(Q[0, 0], V[0]),
        Raises(ValueError, r"argument query.*rank >= 2.*Received: query.shape=\(4,\)"),
    ),
    "scalar query": (
        fn(1.0, V),
        Raises(ValueError, r"argument query.*rank >= 2.*Received: query.shape=\(\)"),
    ),
    "rank-4 value whose batch dims do not broadcast": (
        fn(Q, np.zeros((2, 3, 5, 4), "float32")),
        Raises(ValueError, r"equal or broadcast.*Received: .*value.shape=\(2, 3, 5, 4\)"),
    ),
    "batch sizes differ": (
        fn(Q, np.zeros((3, 5, 4), "float32")),
        Raises(
            ValueError,
            r"equal or broadcast.*Received: query.shape=\(2, 3, 4\), value.shape=\(3, 5, 4\)",
        ),
    ),
    "key and value lengths differ": (
        fn(Q, V, K[:, :4]),
        Raises(
            ValueError, r"key and value must have the same length.*Received: key.shape=\(2, 4, 4\)"
        ),
    ),
    "dot score, query and key dims differ": (
        fn(Q, V[..., :3]),
        Raises(
            ValueError, r"same last dim.*Received: query.shape=\(2, 3, 4\), key.shape=\(2, 5, 3\)"
        ),
    ),
    "query mask of the wrong length": (
        fn(Q, V, query_mask=np.ones((2, 4), bool)),
        Raises(ValueError, r"argument query_mask.*Received: query_mask.shape=\(2, 4\)"),
    ),
    "value mask of the wrong length": (
        fn(Q, V, value_mask=np.ones((2, 6), bool)),
        Raises(ValueError, r"argument value_mask.*Received: value_mask.shape=\(2, 6\)"),
    ),
    "value mask of too high rank": (
        fn(Q, V, value_mask=np.ones((2, 5, 4), bool)),
        Raises(ValueError, r"argument value_mask.*Received: value_mask.shape=\(2, 5, 4\)"),
    ),
    "scalar mask": (
        fn(Q, V, value_mask=True),
        Raises(ValueError, r"argument value_mask.*Received: value_mask.shape=\(\)"),
    ),
    "attention_mask of rank 1": (
        fn(Q, V, attention_mask=np.ones((5,), bool)),
        Raises(ValueError, r"argument attention_mask.*Received: attention_mask.shape=\(5,\)"),
    ),
    "attention_mask with Tq and Tv swapped": (
        fn(Q, V, attention_mask=np.ones((2, 5, 3), bool)),
        Raises(
            ValueError,
            r"argument attention_mask.*\(2, 3, 5\).*Received: attention_mask.shape=\(2, 5, 3\)",
        ),
    ),
    "general_score_weight of the wrong shape": (
        fn(Q, V, score_mode="general", general_score_weight=np.ones((5, 5), "float32")),
        Raises(
            ValueError,
            r"argument general_score_weight.*\(4, 4\).*Received: general_score_weight.shape=\(5, 5\)",
        ),
    ),
    "general score without W_a": (
        fn(Q, V, score_mode="general"),
        Raises(ValueError, r"needs general_score_weight.*Received: general_score_weight=None"),
    ),
    "scale a list": (
        fn(Q, V, scale=[1.0, 2.0]),
        Raises(TypeError, r"argument scale.*Received: scale=\[1.0, 2.0\]"),
    ),
    "scale a vector": (
        fn(Q, V, scale=np.ones((3,), "float32")),
        Raises(ValueError, r"argument scale.*shape \(\).*Received: scale.shape=\(3,\)"),
    ),
    "concat_score_weight a string": (
        fn(Q, V, score_mode="concat", concat_score_weight="1"),
        Raises(TypeError, r"argument concat_score_weight.*Received: concat_score_weight='1'"),
    ),
    # --- wrong option types ------------------------------------------------
    "causal a string": (
        fn(Q, V, causal="yes"),
        Raises(TypeError, r"argument causal.*bool.*Received: causal='yes'"),
    ),
    "training a string": (
        fn(Q, V, training="yes"),
        Raises(TypeError, r"argument training.*bool.*Received: training='yes'"),
    ),
    "return_attention_scores a string": (
        layer([Q, V], return_attention_scores="yes"),
        Raises(
            TypeError, r"argument return_attention_scores.*Received: return_attention_scores='yes'"
        ),
    ),
    "use_causal_mask a string": (
        layer([Q, V], use_causal_mask="yes"),
        Raises(TypeError, r"argument use_causal_mask.*Received: use_causal_mask='yes'"),
    ),
    "score_mode None": (
        fn(Q, V, score_mode=None),
        Raises(ValueError, r"argument score_mode.*Received: score_mode=None"),
    ),
    "dropout None": (
        fn(Q, V, dropout=None),
        Raises(TypeError, r"argument dropout.*Received: dropout=None"),
    ),
    "inputs a dict": (
        layer({"query": Q, "value": V}),
        Raises(ValueError, r"must be called on a list of inputs.*Received"),
    ),
    "mask list of length 1": (
        layer([Q, V], mask=[None]),
        Raises(ValueError, r"mask of length 2 or 3.*Received length: 1"),
    ),
    "mask [None, None]: no mask": (
        layer([Q, V], mask=[None, None]),
        equals(clean()),
    ),
    # --- empty dims --------------------------------------------------------
    "Tq = 0: empty output": (
        fn(Q[:, :0], V),
        shape_is((2, 0, 4)),
    ),
    "Tq = 0, causal, through the layer": (
        layer([Q[:, :0], V], use_causal_mask=True),
        shape_is((2, 0, 4)),
    ),
    "Tv = 0: every row has nothing to attend to, zeros": (
        fn(Q, V[:, :0]),
        shape_is((2, 3, 4), zeros=True),
    ),
    "Tv = 0 with masks and causal": (
        fn(Q, V[:, :0], value_mask=np.ones((2, 0), bool), causal=True),
        shape_is((2, 3, 4), zeros=True),
    ),
    "Tv = 0, weights returned": (
        layer([Q, V[:, :0]], return_attention_scores=True),
        outputs_and_weights((2, 3, 4), (2, 3, 0)),
    ),
    "batch 0": (
        fn(Q[:0], V[:0], causal=True),
        shape_is((0, 3, 4)),
    ),
    "value dim 0": (
        fn(Q, V[..., :0], K),
        shape_is((2, 3, 0)),
    ),
    "query/key dim 0: all scores 0, the mean of the values": (
        fn(Q[..., :0], V, K[..., :0]),
        equals(np.broadcast_to(V.mean(axis=1, keepdims=True), (2, 3, 4))),
    ),
    # --- NaN and inf -------------------------------------------------------
    "NaN in one query row reaches only that row": (
        fn(with_nan(Q, (0, 1, 2)), V, K),
        equals(clean(key=K), nan_rows=ROW_0_1),
    ),
    "inf in one query row reaches only that row": (
        fn(with_nan(Q, (0, 1, 2), np.inf), V, K, causal=True),
        equals(clean(key=K, causal=True), nan_rows=ROW_0_1),
    ),
    "with nan_safe_padding, NaN in a masked value reaches nothing": (
        fn(Q, with_nan(V, (0, 4, 1)), K, value_mask=VALUE_MASK, nan_safe_padding=True),
        equals(clean(key=K, value_mask=VALUE_MASK)),
    ),
    "with nan_safe_padding, NaN in a masked key reaches nothing": (
        fn(Q, V, with_nan(K, (0, 3, 0)), key_mask=VALUE_MASK, nan_safe_padding=True),
        equals(clean(key=K, key_mask=VALUE_MASK)),
    ),
    "with nan_safe_padding, inf in a masked value reaches nothing": (
        fn(Q, with_nan(V, (0, 4, 1), -np.inf), value_mask=VALUE_MASK, nan_safe_padding=True),
        equals(clean(value_mask=VALUE_MASK)),
    ),
    "NaN in an unmasked value stays in its batch element": (
        fn(Q, with_nan(V, (0, 2, 1)), K, causal=True),
        equals(clean(key=K, causal=True), rows=BATCH_1),
    ),
    "NaN in an unmasked key stays in its batch element": (
        fn(Q, V, with_nan(K, (0, 2, 1)), attention_mask=np.ones((3, 5), bool)),
        equals(clean(key=K), rows=BATCH_1),
    ),
}


ERRORS = {name: case for name, case in CASES.items() if isinstance(case[1], Raises)}
RESULTS = {name: case for name, case in CASES.items() if not isinstance(case[1], Raises)}


@pytest.mark.parametrize("case", list(ERRORS), ids=list(ERRORS))
def test_bad_input_raises(case):
    call, expected = ERRORS[case]
    # Checked before any implementation path is chosen: "auto" stands for all.
    with pytest.raises(expected.error, match=expected.match):
        call("auto")
    assert re.search(r"argument|Received", expected.match), "pin the argument or the value"


@pytest.mark.parametrize(
    "case,implementation",
    [
        (case, path)
        for case, (call, _) in RESULTS.items()
        for path in supported_paths(**call.options)
    ],
)
def test_odd_input_result(case, implementation):
    call, check = RESULTS[case]
    check(call(implementation))


def test_symbolic_zero_length_time_dim():
    query = keras.Input((0, 4))
    value = keras.Input((5, 4))
    output = LuongAttention()([query, value])
    assert tuple(output.shape) == (None, 0, 4)
    model = keras.Model([query, value], output)
    assert to_numpy(model([Q[:, :0], V])).shape == (2, 0, 4)


def test_nan_in_a_blocked_row_stays_in_its_row_when_blocks_are_chained():
    """The blocked path orders its blocks through each previous block's result."""
    query = np.tile(Q, (1, 2, 1))
    output = to_numpy(
        luong_attention(
            with_nan(query, (0, 0, 0)), V, implementation="blocked", blocked_options=small_blocks()
        )
    )
    nan_rows = np.isnan(output).any(-1)
    assert nan_rows[0, 0] and nan_rows.sum() == 1
    expected = reference_attention(query, V)[0]
    np.testing.assert_allclose(output[0, 1:], expected[0, 1:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("implementation", supported_paths())
def test_nan_in_padding_reaches_the_output_by_default_as_in_keras(implementation):
    """Without `nan_safe_padding`, a NaN in a masked value reaches the output
    of its sequence, as in `keras.layers.Attention` (which entries depends on
    the backend's matrix product), and no other sequence."""
    value = with_nan(V, (0, 4, 1))
    ours = to_numpy(
        LuongAttention(implementation=implementation)([Q, value], mask=[None, VALUE_MASK])
    )
    theirs = to_numpy(keras.layers.Attention()([Q, value], mask=[None, VALUE_MASK]))
    assert np.isnan(ours[0]).any() and np.isnan(theirs[0]).any()
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-5, atol=1e-6)


def test_nan_in_padding_gives_finite_gradients_with_nan_safe_padding():
    value = with_nan(V, (0, 4, 1))

    def loss(value):
        out = luong_attention(Q, value, value_mask=VALUE_MASK, training=True, nan_safe_padding=True)
        return ops.sum(out)

    _, (grad,) = value_and_grad(loss, value)
    assert np.all(np.isfinite(grad))
    assert np.all(grad[~VALUE_MASK] == 0)
