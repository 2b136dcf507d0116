"""The contract beyond keras.layers.Attention, checked against tests/reference.py."""

import keras
import numpy as np
import pytest
from keras import ops

from luong_attention import LuongAttention, luong_attention
from tests.helpers import to_numpy, value_and_grad
from tests.reference import reference_attention


def _normal(rng, *shape):
    return rng.standard_normal(shape).astype("float32")


def _assert_matches_reference(layer_out, ref, atol=1e-5):
    out, weights = layer_out
    np.testing.assert_allclose(to_numpy(out), ref[0], atol=atol, rtol=atol)
    np.testing.assert_allclose(to_numpy(weights), ref[1], atol=atol, rtol=atol)


# --- hand-computed cases ----------------------------------------------------


def test_hand_computed_key_mask_and_fully_masked_row():
    query = np.array([[[1.0, 0.0], [0.0, 1.0]]], "float32")
    value = np.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]], "float32")
    key = np.array([[[0.0, 1.0], [1.0, 0.0], [9.0, 9.0]]], "float32")
    value_mask = np.array([[True, True, False]])
    key_mask = np.array([[False, True, True]])
    out, weights = LuongAttention()(
        [query, value, key],
        mask=[None, value_mask, key_mask],
        return_attention_scores=True,
    )
    # Only key 1 survives both masks: every row puts all weight on it.
    np.testing.assert_allclose(to_numpy(weights), [[[0, 1, 0], [0, 1, 0]]], atol=1e-7)
    np.testing.assert_allclose(to_numpy(out), [[[3, 4], [3, 4]]], atol=1e-6)

    none_left = np.array([[False, False, True]])
    out, weights = LuongAttention()(
        [query, value, key], mask=[None, value_mask, none_left], return_attention_scores=True
    )
    np.testing.assert_array_equal(to_numpy(weights), np.zeros((1, 2, 3)))
    np.testing.assert_array_equal(to_numpy(out), np.zeros((1, 2, 2)))


@pytest.mark.parametrize(
    "alignment,expected_weights",
    [
        ("top_left", [[1, 0, 0], [1 / 2, 1 / 2, 0]]),  # query i sees keys j <= i
        ("bottom_right", [[1 / 2, 1 / 2, 0], [1 / 3, 1 / 3, 1 / 3]]),  # j <= i + 1
    ],
)
def test_hand_computed_causal_alignments(alignment, expected_weights):
    # Two queries after three keys; equal scores give a uniform average over
    # the keys each query may see.
    query = np.zeros((1, 2, 2), "float32")
    key = np.zeros((1, 3, 2), "float32")
    value = np.array([[[3.0], [6.0], [9.0]]], "float32")
    layer = LuongAttention(causal_alignment=alignment)
    out, weights = layer([query, value, key], use_causal_mask=True, return_attention_scores=True)
    np.testing.assert_allclose(to_numpy(weights)[0], expected_weights, rtol=1e-6)
    np.testing.assert_allclose(
        to_numpy(out)[0], np.array(expected_weights) @ [[3.0], [6.0], [9.0]], rtol=1e-6
    )


# --- randomized against the NumPy reference ---------------------------------


@pytest.mark.parametrize("alignment", ["top_left", "bottom_right"])
@pytest.mark.parametrize("score_mode", ["dot", "general", "concat"])
def test_every_mask_against_reference(score_mode, alignment, rng):
    b, tq, tv, d = 2, 4, 6, 3
    query, value, key = _normal(rng, b, tq, d), _normal(rng, b, tv, 5), _normal(rng, b, tv, d)
    query_mask = rng.random((b, tq)) > 0.3
    value_mask = rng.random((b, tv)) > 0.3
    key_mask = rng.random((b, tv)) > 0.3
    value_mask[0] = False  # example 0: every row fully masked
    attention_mask = rng.random((b, tq, tv)) > 0.2
    layer = LuongAttention(use_scale=True, score_mode=score_mode, causal_alignment=alignment)
    layer.build([query.shape, value.shape, key.shape])
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.weights])
    weights = {w.name: to_numpy(w) for w in layer.weights}
    got = layer(
        [query, value, key],
        mask=[query_mask, value_mask, key_mask],
        attention_mask=attention_mask,
        use_causal_mask=True,
        return_attention_scores=True,
    )
    ref = reference_attention(
        query,
        value,
        key,
        query_mask=query_mask,
        value_mask=value_mask,
        key_mask=key_mask,
        attention_mask=attention_mask,
        causal=True,
        causal_alignment=alignment,
        score_mode=score_mode,
        scale=weights["scale"],
        concat_score_weight=weights.get("concat_score_weight", 1.0),
        general_score_weight=weights.get("general_score_weight"),
    )
    _assert_matches_reference(got, ref)


def test_general_score_allows_different_query_and_key_dims(rng):
    query, value, key = _normal(rng, 2, 3, 4), _normal(rng, 2, 5, 6), _normal(rng, 2, 5, 7)
    layer = LuongAttention(score_mode="general")
    got = layer([query, value, key], return_attention_scores=True)
    (w_a,) = layer.weights
    assert w_a.name == "general_score_weight" and tuple(w_a.shape) == (4, 7)
    ref = reference_attention(
        query, value, key, score_mode="general", general_score_weight=to_numpy(w_a)
    )
    _assert_matches_reference(got, ref)


@pytest.mark.parametrize(
    "mask_shape",
    [(2, 3, 6), (2, 6), (2, 1, 6), (6,)],
    ids=["full", "batch_prefix", "size_1", "time_only"],
)
def test_masks_on_4d_inputs_broadcast_over_inner_batch_dims(mask_shape, rng):
    b, h, tq, tv, d = 2, 3, 4, 6, 5
    query, value = _normal(rng, b, h, tq, d), _normal(rng, b, h, tv, d)
    value_mask = rng.random(mask_shape) > 0.4
    query_mask = rng.random(mask_shape[:-1] + (tq,)) > 0.4
    got = LuongAttention()(
        [query, value], mask=[query_mask, value_mask], return_attention_scores=True
    )
    # The reference expands a mask prefix the same way: size-1 axes before T.
    ref = reference_attention(query, value, query_mask=query_mask, value_mask=value_mask)
    _assert_matches_reference(got, ref)
    if mask_shape == (2, 6):
        # Spelled out: head h of example i uses value_mask[i].
        full = np.broadcast_to(value_mask[:, None, :], (b, h, tv))
        ref_full = reference_attention(query, value, value_mask=full)
        np.testing.assert_allclose(to_numpy(got[1]), ref_full[1], atol=1e-6)


def test_attention_mask_broadcasts_and_ands_with_other_masks(rng):
    query, value = _normal(rng, 2, 4, 3), _normal(rng, 2, 5, 3)
    attention_mask = rng.random((4, 5)) > 0.3  # shared by the batch
    value_mask = rng.random((2, 5)) > 0.3
    got = LuongAttention()(
        [query, value],
        mask=[None, value_mask],
        attention_mask=attention_mask,
        return_attention_scores=True,
    )
    ref = reference_attention(query, value, value_mask=value_mask, attention_mask=attention_mask)
    _assert_matches_reference(got, ref)


# --- fully-masked rows and precision -----------------------------------------


@pytest.mark.parametrize(
    "dtype", ["float32", "float16", "bfloat16", "mixed_float16", "mixed_bfloat16"]
)
def test_fully_masked_rows_give_zeros_and_finite_gradients(dtype, rng):
    query, value = _normal(rng, 2, 3, 4), _normal(rng, 2, 5, 4)
    value_mask = np.ones((2, 5), bool)
    value_mask[1] = False
    layer = LuongAttention(use_scale=True, dtype=dtype)
    out, weights = layer([query, value], mask=[None, value_mask], return_attention_scores=True)
    out, weights = to_numpy(out).astype("float32"), to_numpy(weights).astype("float32")
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(weights))
    np.testing.assert_array_equal(out[1], 0)
    np.testing.assert_array_equal(weights[1], 0)
    np.testing.assert_allclose(weights[0].sum(-1), 1, atol=1e-2)

    def loss(q, v):
        result = layer([q, v], mask=[None, value_mask])
        return ops.sum(ops.cast(result, "float32"))

    _, grads = value_and_grad(loss, query, value)
    for grad in grads:
        assert np.all(np.isfinite(grad.astype("float32")))
    # Example 1 attends to nothing, so nothing flows back to it.
    np.testing.assert_array_equal(grads[0][1], 0)


def test_float16_large_scores_stay_finite_and_accurate(rng):
    query = _normal(rng, 2, 3, 8) * 100  # scores ~ 1e4-1e5: past float16's 65504 in products
    value = _normal(rng, 2, 5, 8)
    out, weights = LuongAttention(dtype="float16")([query, value], return_attention_scores=True)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    out, weights = to_numpy(out).astype("float32"), to_numpy(weights).astype("float32")
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(weights))
    q16, v16 = query.astype("float16").astype("float32"), value.astype("float16").astype("float32")
    ref_out, ref_weights = reference_attention(q16, v16)
    np.testing.assert_allclose(weights, ref_weights, atol=2e-3)
    np.testing.assert_allclose(out, ref_out, atol=2e-2)


# --- call conventions --------------------------------------------------------


def test_query_mask_zeroes_rows_but_weights_stay_the_plain_softmax(rng):
    query, value = _normal(rng, 2, 4, 3), _normal(rng, 2, 5, 3)
    query_mask = np.array([[True, False, True, False]] * 2)
    out, weights = LuongAttention()(
        [query, value], mask=[query_mask, None], return_attention_scores=True
    )
    ref_out, ref_weights = reference_attention(query, value, query_mask=query_mask)
    np.testing.assert_array_equal(to_numpy(out)[:, 1], 0)
    np.testing.assert_allclose(to_numpy(out), ref_out, atol=1e-5)
    np.testing.assert_allclose(to_numpy(weights), ref_weights, atol=1e-6)  # unmasked softmax


def test_query_and_value_masks_of_different_lengths(rng):
    # Tq = 3 and Tv = 4: each mask matches its own input's length.
    query, value = _normal(rng, 2, 3, 5), _normal(rng, 2, 4, 5)
    query_mask = np.array([[True, False, True], [True, True, False]])
    value_mask = np.array([[True, False, True, True], [False, True, True, False]])
    got = LuongAttention()(
        [query, value], mask=[query_mask, value_mask], return_attention_scores=True
    )
    assert tuple(got[0].shape) == (2, 3, 5) and tuple(got[1].shape) == (2, 3, 4)
    ref = reference_attention(query, value, query_mask=query_mask, value_mask=value_mask)
    _assert_matches_reference(got, ref)


def test_compute_mask_passes_the_query_mask_on():
    query, value = np.ones((2, 3, 4), "float32"), np.ones((2, 5, 4), "float32")
    layer = LuongAttention()
    assert layer.compute_mask([query, value], None) is None
    assert layer.compute_mask([query, value], [None, np.ones((2, 5), bool)]) is None
    query_mask = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    value_mask = np.array([[0.0, 1.0, 0.0, 1.0, 1.0], [1.0] * 5])
    computed = to_numpy(layer.compute_mask([query, value], [query_mask, value_mask]))
    # The query's mask, values and all, not the value's.
    np.testing.assert_array_equal(computed, query_mask)
    computed = to_numpy(layer.compute_mask([query, value, value], [query_mask, None, value_mask]))
    np.testing.assert_array_equal(computed, query_mask)


def test_constructor_causal_is_the_default_and_call_overrides_it(rng):
    query = _normal(rng, 2, 4, 3)
    causal = to_numpy(LuongAttention()([query, query], use_causal_mask=True))
    plain = to_numpy(LuongAttention()([query, query]))
    layer = LuongAttention(causal=True)
    np.testing.assert_allclose(to_numpy(layer([query, query])), causal, atol=1e-6)
    np.testing.assert_allclose(
        to_numpy(layer([query, query], use_causal_mask=False)), plain, atol=1e-6
    )
    assert LuongAttention.from_config(layer.get_config()).causal is True


def test_masks_propagate_from_embedding():
    tokens = np.array([[3, 5, 2, 0, 0], [7, 1, 0, 0, 0]])
    inputs = keras.Input(shape=(None,), dtype="int32")
    embedding = keras.layers.Embedding(10, 4, mask_zero=True)
    x = embedding(inputs)
    model = keras.Model(inputs, LuongAttention()([x, x]))
    embedded = to_numpy(embedding(tokens))
    mask = tokens != 0
    expected = LuongAttention()([embedded, embedded], mask=[mask, mask])
    np.testing.assert_allclose(to_numpy(model(tokens)), to_numpy(expected), atol=1e-6)
    np.testing.assert_array_equal(to_numpy(model(tokens))[1, 2:], 0)


def test_symbolic_calls_with_unknown_dims(rng):
    query = keras.Input(batch_shape=(None, None, 4))
    value = keras.Input(batch_shape=(None, None, 6))
    key = keras.Input(batch_shape=(None, None, 4))
    layer = LuongAttention()
    out, weights = layer([query, value, key], return_attention_scores=True)
    assert tuple(out.shape) == (None, None, 6)
    assert tuple(weights.shape) == (None, None, None)
    assert layer.compute_output_shape([(None, None, 4), (None, None, 6)]) == (None, None, 6)
    heads = keras.Input(batch_shape=(None, 8, None, 4))
    assert tuple(layer([heads, heads]).shape) == (None, 8, None, 4)
    model = keras.Model([query, value, key], [out, weights])
    got = model([_normal(rng, 2, 3, 4), _normal(rng, 2, 5, 6), _normal(rng, 2, 5, 4)])
    assert tuple(got[0].shape) == (2, 3, 6) and tuple(got[1].shape) == (2, 3, 5)


def test_functional_entry_point_matches_the_layer(rng):
    query, value = _normal(rng, 2, 4, 3), _normal(rng, 2, 6, 3)
    value_mask = rng.random((2, 6)) > 0.3
    got = luong_attention(
        query, value, value_mask=value_mask, causal=True, return_attention_scores=True
    )
    expected = LuongAttention()(
        [query, value], mask=[None, value_mask], use_causal_mask=True, return_attention_scores=True
    )
    np.testing.assert_array_equal(to_numpy(got[0]), to_numpy(expected[0]))
    np.testing.assert_array_equal(to_numpy(got[1]), to_numpy(expected[1]))


def test_trains_in_a_model():
    rng = np.random.default_rng(1)
    query, value = rng.standard_normal((64, 4, 3)), rng.standard_normal((64, 6, 3))
    target = rng.standard_normal((64, 4, 2))
    q_in, v_in = keras.Input(shape=(4, 3)), keras.Input(shape=(6, 3))
    att = LuongAttention(use_scale=True, score_mode="general", dropout=0.1, seed=0)
    model = keras.Model([q_in, v_in], keras.layers.Dense(2)(att([q_in, v_in])))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    before = [to_numpy(w).copy() for w in att.weights]
    history = model.fit([query, value], target, epochs=5, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert all(not np.array_equal(b, to_numpy(w)) for b, w in zip(before, att.weights, strict=True))
