"""Bad input raises a ValueError/TypeError that names the argument."""

import numpy as np
import pytest

from luong_attention import LuongAttention, luong_attention

Q = np.zeros((2, 3, 4), "float32")
V = np.zeros((2, 5, 4), "float32")


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (
            {"score_mode": "additive"},
            ValueError,
            r"argument score_mode.*Received: score_mode='additive'",
        ),
        (
            {"causal_alignment": "left"},
            ValueError,
            r"argument causal_alignment.*Received: causal_alignment='left'",
        ),
        (
            {"implementation": "cuda"},
            ValueError,
            r"argument implementation.*Received: implementation='cuda'",
        ),
        ({"dropout": 1.0}, ValueError, r"argument dropout.*\[0, 1\).*Received: dropout=1.0"),
        ({"dropout": -0.1}, ValueError, r"argument dropout.*Received: dropout=-0.1"),
        ({"dropout": "0.5"}, TypeError, r"argument dropout.*Received: dropout='0.5'"),
        ({"use_scale": "yes"}, TypeError, r"argument use_scale.*Received: use_scale='yes'"),
        ({"causal": "yes"}, TypeError, r"argument causal.*Received: causal='yes'"),
        ({"seed": 1.5}, TypeError, r"argument seed.*Received: seed=1.5"),
    ],
)
def test_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        LuongAttention(**kwargs)


@pytest.mark.parametrize(
    "inputs,mask,match",
    [
        (Q, None, r"must be called on a list of inputs.*Received"),
        ({"query": Q}, None, r"must be called on a list of inputs"),
        ([Q], None, r"inputs of length 2 or 3.*Received length: 1"),
        ([Q, V, V, V], None, r"inputs of length 2 or 3.*Received length: 4"),
        ([Q, V], np.ones((2, 3), bool), r"mask must be a list.*Received: mask="),
        ([Q, V], [None], r"mask of length 2 or 3.*Received length: 1"),
        ([Q, V], [None, None, None, None], r"mask of length 2 or 3.*Received length: 4"),
        ([Q[0, 0], V[0]], None, r"argument query.*rank >= 2.*Received: query.shape=\(4,\)"),
        (
            [Q, np.zeros((2, 5, 3), "float32")],
            None,
            r"same last dim.*query.shape=\(2, 3, 4\), key.shape=\(2, 5, 3\)",
        ),
        (
            [Q, V, np.zeros((2, 6, 4), "float32")],
            None,
            r"key and value must have the same length.*key.shape=\(2, 6, 4\), value.shape=\(2, 5, 4\)",
        ),
        (
            [Q, np.zeros((3, 5, 4), "float32")],
            None,
            r"equal or broadcast.*query.shape=\(2, 3, 4\), value.shape=\(3, 5, 4\)",
        ),
        ([Q, np.zeros((2, 3, 5, 4), "float32")], None, r"equal or broadcast"),
        (
            [Q, V],
            [np.ones((2, 4), bool), None],
            r"argument query_mask.*Expected \(2, 3\).*Received: query_mask.shape=\(2, 4\)",
        ),
        (
            [Q, V],
            [None, np.ones((3, 5), bool)],
            r"argument value_mask.*Received: value_mask.shape=\(3, 5\)",
        ),
        (
            [Q, V],
            [None, None, np.ones((2, 5, 1), bool)],
            r"argument key_mask.*Received: key_mask.shape=\(2, 5, 1\)",
        ),
        (
            [Q.astype("int32"), V],
            None,
            r"argument query.*floating-point.*Received: query.dtype=int32",
        ),
    ],
)
def test_call_inputs_and_masks(inputs, mask, match):
    error = TypeError if "dtype" in match else ValueError
    with pytest.raises(error, match=match):
        LuongAttention()(inputs, mask=mask)


def test_attention_mask_shape():
    with pytest.raises(
        ValueError,
        match=r"argument attention_mask.*\(2, 3, 5\).*Received: attention_mask.shape=\(3, 4\)",
    ):
        LuongAttention()([Q, V], attention_mask=np.ones((3, 4), bool))


def test_symbolic_inputs_are_checked_before_any_backend_op():
    import keras

    with pytest.raises(ValueError, match="key and value must have the same length"):
        LuongAttention()([keras.Input((3, 4)), keras.Input((5, 4)), keras.Input((6, 4))])


def test_general_score_needs_known_dims_and_the_functional_needs_w_a():
    import keras

    with pytest.raises(ValueError, match="score_mode='general' needs the last dims"):
        LuongAttention(score_mode="general")(
            [keras.Input(batch_shape=(None, 3, None)), keras.Input((5, 4))]
        )
    with pytest.raises(ValueError, match="needs general_score_weight"):
        luong_attention(Q, V, score_mode="general")


def test_functional_checks_options():
    with pytest.raises(ValueError, match="argument score_mode"):
        luong_attention(Q, V, score_mode="bahdanau")
    with pytest.raises(ValueError, match="argument dropout"):
        luong_attention(Q, V, dropout=2.0)
