"""Keras 3's own tests for `keras.layers.Attention`, run against LuongAttention.

Ported from `keras/src/layers/attention/attention_test.py` (Keras 3.15,
Apache License 2.0) with the class swapped and Keras's private testing
module replaced by our helper. The tests of Keras's private helpers (`_calculate_scores`,
`_calculate_score_mask`) are left out: LuongAttention has no such methods.
"""

import keras
import numpy as np
import pytest

from luong_attention import LuongAttention
from tests.helpers import run_layer_test, to_numpy


def test_attention_basics(tmp_path):
    # No scale, no concat.
    run_layer_test(
        LuongAttention,
        init_kwargs={"score_mode": "dot", "dropout": 0.5},
        input_shape=[(2, 3, 4), (2, 4, 4)],
        expected_output_shape=(2, 3, 4),
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=0,
        expected_num_seed_generators=1,
        expected_num_losses=0,
        supports_masking=True,
        run_training_check=False,
        saving_dir=tmp_path,
    )
    # Scale and concat.
    run_layer_test(
        LuongAttention,
        init_kwargs={"use_scale": True, "score_mode": "concat", "dropout": 0.5},
        input_shape=[(2, 3, 4), (2, 4, 4)],
        expected_output_shape=(2, 3, 4),
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=0,
        expected_num_seed_generators=1,
        expected_num_losses=0,
        supports_masking=True,
        run_training_check=False,
    )


def test_attention_seed_preserved_in_config():
    layer = LuongAttention(dropout=0.5, seed=1337)
    config = layer.get_config()
    assert config["seed"] == 1337
    restored = LuongAttention.from_config(config)
    assert restored.seed == 1337


def test_attention_correctness():
    query = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    key = np.array([[[0.0, 1.0], [1.0, 0.0]]])
    value = np.array([[[1.0, 2.0], [3.0, 4.0]]])

    layer = LuongAttention(score_mode="dot")
    output, scores = layer([query, value, key], return_attention_scores=True)
    np.testing.assert_allclose(to_numpy(output), [[[2.462, 3.462], [1.538, 2.538]]], atol=1e-3)
    np.testing.assert_allclose(to_numpy(scores), [[[0.269, 0.731], [0.731, 0.269]]], atol=1e-3)

    layer = LuongAttention(score_mode="concat")
    output, scores = layer([query, value, key], return_attention_scores=True)
    np.testing.assert_allclose(to_numpy(output), [[[1.727, 2.727], [2.272, 3.272]]], atol=1e-3)
    np.testing.assert_allclose(to_numpy(scores), [[[0.636, 0.363], [0.363, 0.636]]], atol=1e-3)


def test_attention_with_mask():
    layer = LuongAttention()
    query = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    value = np.array([[[1.0, 1.0], [1.0, 1.0]]])
    query_mask = np.array([[True, False]])
    value_mask = np.array([[True, False]])
    output, scores = layer(
        [query, value], mask=[query_mask, value_mask], return_attention_scores=True
    )
    np.testing.assert_allclose(to_numpy(output), [[[1.0, 1.0], [0.0, 0.0]]])
    np.testing.assert_allclose(to_numpy(scores), [[[1.0, 0.0], [1.0, 0.0]]])


def test_attention_2D_mask_shape_mismatch():
    layer = LuongAttention()
    batch_size, Tq, Tv, dim = 2, 3, 4, 5
    query = np.random.random((batch_size, Tq, dim)).astype(np.float32)
    value = np.random.random((batch_size, Tv, dim)).astype(np.float32)
    query_mask = np.array([[True, False, True], [True, False, True]])
    value_mask = np.array([[True, False, True, True], [True, False, True, True]])
    output, scores = layer(
        [query, value], mask=[query_mask, value_mask], return_attention_scores=True
    )
    assert output.shape == (batch_size, Tq, dim)
    assert scores.shape == (batch_size, Tq, Tv)


def test_attention_errors():
    layer = LuongAttention()
    tensor = np.array([[[1.0, 1.0], [1.0, 1.0]]])
    with pytest.raises(ValueError, match="must be called on a list"):
        layer(tensor)
    with pytest.raises(ValueError, match="length 2 or 3"):
        layer([tensor, tensor, tensor, tensor])
    with pytest.raises(ValueError, match="layer mask must be a list"):
        layer([tensor, tensor], mask=tensor)
    with pytest.raises(ValueError, match="length 2 or 3"):
        layer([tensor, tensor], mask=[tensor])


def test_attention_with_dropout():
    query = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    value = np.array([[[1.0, 1.0], [1.0, 1.0]]])
    layer_with_dropout = LuongAttention(dropout=0.2)
    layer_without_dropout = LuongAttention()
    output1, scores1 = layer_with_dropout(
        [query, value], return_attention_scores=True, training=True
    )
    output2, scores2 = layer_without_dropout(
        [query, value], return_attention_scores=True, training=True
    )
    assert not np.allclose(to_numpy(output1), to_numpy(output2))
    assert not np.allclose(to_numpy(scores1), to_numpy(scores2))


def test_attention_invalid_score_mode():
    with pytest.raises(
        ValueError,
        match="Invalid value for argument score_mode. Expected one of {'dot', 'concat'",
    ):
        LuongAttention(score_mode="invalid_mode")


def _dummy_inputs(shape_q=(2, 3, 4), shape_v=(2, 4, 4), fill=None):
    if fill is None:
        return [np.random.random(shape_q), np.random.random(shape_v)]
    return [np.full(shape_q, fill), np.full(shape_v, fill)]


def test_attention_compute_mask_with_no_mask():
    layer = LuongAttention()
    assert layer.compute_mask(inputs=_dummy_inputs(), mask=None) is None


def test_attention_compute_mask_with_first_element_none():
    layer = LuongAttention()
    mask = [None, np.array([True, False, True])]
    assert layer.compute_mask(inputs=_dummy_inputs(), mask=mask) is None


@pytest.mark.parametrize(
    "valid_mask",
    [
        np.array([True, False, True]),
        np.array([True, True, True]),
        np.array([False, False, False]),
        np.array([True]),
        np.array([1, 0, 1]),
    ],
    ids=["valid", "all_true", "all_false", "single_element", "non_boolean"],
)
def test_attention_compute_mask_returns_query_mask(valid_mask):
    layer = LuongAttention()
    mask = [valid_mask, np.logical_not(valid_mask)]
    computed = to_numpy(layer.compute_mask(inputs=_dummy_inputs(fill=1.0), mask=mask))
    assert computed.shape == valid_mask.shape
    assert np.array_equal(computed, valid_mask)


@pytest.mark.parametrize("atol", [1e-3, 1e-5, 1e-7])
def test_attention_compute_mask_with_tolerance(atol):
    layer = LuongAttention()
    valid_mask = np.array([1.0, 0.0, 1.0], dtype=float)
    mask = [valid_mask, np.array([0.0, 1.0, 0.0], dtype=float)]
    computed = to_numpy(layer.compute_mask(inputs=_dummy_inputs(fill=1.0), mask=mask))
    assert np.allclose(computed, valid_mask, atol=atol)


def test_attention_compute_mask_with_edge_case_masks():
    layer = LuongAttention()
    for mask in [
        np.array([True, True, True]),
        np.array([False, False, False]),
        np.array([True, False, True]),
    ]:
        computed = to_numpy(layer.compute_mask(inputs=_dummy_inputs(fill=1.0), mask=[mask, mask]))
        assert np.array_equal(computed, mask)


def test_attention_compute_mask_with_different_input_shapes():
    layer = LuongAttention()
    valid_mask = np.array([True, False, True])
    for shape in [(2, 3, 4), (3, 2, 5), (4, 1, 6)]:
        mask = [valid_mask, np.array([False, True, False])]
        computed = to_numpy(layer.compute_mask(inputs=[np.ones(shape), np.ones(shape)], mask=mask))
        assert np.array_equal(computed, valid_mask)


def test_attention_compute_output_shape():
    query = np.random.random((2, 3, 4))
    value = np.random.random((2, 3, 5))
    key = np.random.random((2, 3, 4))
    layer = LuongAttention()
    output = layer([query, value, key])
    assert output.shape == value.shape
    assert (
        layer.compute_output_shape(input_shape=[query.shape, value.shape, key.shape])
        == output.shape
    )


def test_attention_nd_inputs():
    layer = LuongAttention()
    query = np.random.random((2, 8, 6, 4)).astype(np.float32)
    value = np.random.random((2, 8, 6, 4)).astype(np.float32)
    output = layer([query, value])
    assert output.shape == (2, 8, 6, 4)
    output, scores = layer([query, value], return_attention_scores=True)
    assert output.shape == (2, 8, 6, 4)
    assert scores.shape == (2, 8, 6, 6)


def test_return_attention_scores_true():
    query = np.random.random((2, 8, 16)).astype(np.float32)
    value = np.random.random((2, 4, 16)).astype(np.float32)
    outputs = LuongAttention()([query, value], return_attention_scores=True)
    assert isinstance(outputs, tuple)
    output, attention_scores = outputs
    assert output.shape == (2, 8, 16)
    assert attention_scores.shape == (2, 8, 4)


def test_return_attention_scores_with_symbolic_tensors():
    attention = LuongAttention()
    x = keras.Input(shape=(3, 5))
    y = keras.Input(shape=(4, 5))
    output, attention_scores = attention([x, y], return_attention_scores=True)
    assert output.shape == (None, 3, 5)
    assert attention_scores.shape == (None, 3, 4)


def test_symbolic_call_does_not_leak_return_attention_scores():
    attention = LuongAttention()
    q_eager = np.random.rand(2, 3, 5).astype("float32")
    v_eager = np.random.rand(2, 4, 5).astype("float32")
    attention([q_eager, v_eager], return_attention_scores=True)

    x = keras.Input(shape=(3, 5))
    y = keras.Input(shape=(4, 5))
    output = attention([x, y])
    assert not isinstance(output, (tuple, list))
    assert output.shape == (None, 3, 5)
    assert attention.compute_output_shape([x.shape, y.shape]) == (None, 3, 5)
