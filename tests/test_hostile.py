"""Hostile and malformed input: one table, each case a documented result or a clear error.

`CASES` is the table. A case is `(call, expected)`: `call(implementation)`
runs the functional entry point or the layer, and `expected` is either
`Raises(error, match)` or a function that checks the result. Cases that
return a result run on every implementation path; a path that does not
support the options raises a `ValueError` naming `implementation`, and that
path is skipped.
"""

import dataclasses
import re

import keras
import numpy as np
import pytest
from keras import ops

from luong_attention import LuongAttention, _validation, luong_attention
from tests.helpers import set_blocked_defaults, to_numpy
from tests.reference import reference_attention

_rng = np.random.default_rng(0)
Q = _rng.standard_normal((2, 3, 4)).astype("float32")
V = _rng.standard_normal((2, 5, 4)).astype("float32")
K = _rng.standard_normal((2, 5, 4)).astype("float32")
W = _rng.standard_normal((4, 4)).astype("float32")
VALUE_MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)


@dataclasses.dataclass
class Raises:
    error: type
    match: str


def fn(*args, **kwargs):
    """A call of `luong_attention` on the given implementation path."""
    return lambda implementation: luong_attention(*args, implementation=implementation, **kwargs)


def layer(inputs, init=None, **call_kwargs):
    """A call of a fresh `LuongAttention(**init)` (its implementation set per path)."""

    def call(implementation):
        attention = LuongAttention(**(init or {}), implementation=implementation)
        return attention(inputs, **call_kwargs)

    return call


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
    "NaN in a masked value reaches nothing": (
        fn(Q, with_nan(V, (0, 4, 1)), K, value_mask=VALUE_MASK),
        equals(clean(key=K, value_mask=VALUE_MASK)),
    ),
    "NaN in a masked key reaches nothing": (
        fn(Q, V, with_nan(K, (0, 3, 0)), key_mask=VALUE_MASK),
        equals(clean(key=K, key_mask=VALUE_MASK)),
    ),
    "inf in a masked value reaches nothing": (
        fn(Q, with_nan(V, (0, 4, 1), -np.inf), value_mask=VALUE_MASK),
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
def test_hostile_input_raises(case):
    call, expected = ERRORS[case]
    # Checked before any implementation path is chosen: "auto" stands for all.
    with pytest.raises(expected.error, match=expected.match):
        call("auto")
    assert re.search(r"argument|Received", expected.match), "pin the argument or the value"


@pytest.mark.parametrize("implementation", _validation.IMPLEMENTATIONS)
@pytest.mark.parametrize("case", list(RESULTS), ids=list(RESULTS))
def test_hostile_input_result(case, implementation):
    call, check = RESULTS[case]
    try:
        result = call(implementation)
    except ValueError as error:
        if implementation == "auto" or "argument implementation" not in str(error):
            raise
        pytest.skip(f"implementation={implementation!r} does not support this call")
    check(result)


def test_symbolic_zero_length_time_dim():
    query = keras.Input((0, 4))
    value = keras.Input((5, 4))
    output = LuongAttention()([query, value])
    assert tuple(output.shape) == (None, 0, 4)
    model = keras.Model([query, value], output)
    assert to_numpy(model([Q[:, :0], V])).shape == (2, 0, 4)


def test_nan_in_a_blocked_row_stays_in_its_row_when_blocks_are_chained(monkeypatch):
    """The blocked path orders its blocks through each previous block's result."""

    set_blocked_defaults(monkeypatch, block_size=2)
    set_blocked_defaults(monkeypatch, chain_above_bytes=0)
    query = np.tile(Q, (1, 2, 1))
    output = to_numpy(luong_attention(with_nan(query, (0, 0, 0)), V, implementation="blocked"))
    nan_rows = np.isnan(output).any(-1)
    assert nan_rows[0, 0] and nan_rows.sum() == 1
    expected = reference_attention(query, V)[0]
    np.testing.assert_allclose(output[0, 1:], expected[0, 1:], rtol=1e-5, atol=1e-5)


def test_nan_in_padding_gives_finite_gradients():
    from tests.helpers import value_and_grad

    value = with_nan(V, (0, 4, 1))

    def loss(value):
        out = luong_attention(Q, value, value_mask=VALUE_MASK)
        return ops.sum(out)

    _, (grad,) = value_and_grad(loss, value)
    assert np.all(np.isfinite(grad))
    assert np.all(grad[~VALUE_MASK] == 0)
