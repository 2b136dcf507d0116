"""Precision matrix: dtype policies x implementation paths against the float64 reference.

`TOLERANCES` are absolute errors of the output against the float64 NumPy
reference of the same float32 inputs (inputs and values standard normal,
weights of magnitude <= 1). They are about 3x the largest error measured
over the three backends and every path (the README's Reliability section
lists the measurements).
"""

import keras
import numpy as np
import pytest
from keras import ops

from luong_attention import LuongAttention, _validation
from tests.helpers import small_blocks, supported_paths, to_numpy, value_and_grad
from tests.reference import reference_attention

POLICIES = ("float32", "float16", "bfloat16", "mixed_float16", "mixed_bfloat16")
COMPUTE_DTYPE = {
    "float32": "float32",
    "float16": "float16",
    "bfloat16": "bfloat16",
    "mixed_float16": "float16",
    "mixed_bfloat16": "bfloat16",
}
TOLERANCES = {"float32": 1e-6, "float16": 3e-3, "bfloat16": 4e-2}
B, TQ, TV, D = 2, 5, 7, 8

# Batch 0 sees keys 0-3; batch 1 has no key at all (every row fully masked).
VALUE_MASK = np.array([[1, 1, 1, 1, 0, 0, 0], [0] * TV], bool)
QUERY_MASK = np.array([[1, 1, 1, 0, 1], [1] * TQ], bool)


@pytest.fixture(autouse=True)
def blocks(monkeypatch):
    # The layer has no blocked_options: blocks of 2 rows become the default.
    return small_blocks(2, monkeypatch=monkeypatch)


def _inputs(seed=0, query_scale=1.0):
    rng = np.random.default_rng(seed)
    query = (query_scale * rng.standard_normal((B, TQ, D))).astype("float32")
    key = (query_scale * rng.standard_normal((B, TV, D))).astype("float32")
    value = rng.standard_normal((B, TV, D)).astype("float32")
    return query, value, key


def _layer(policy, implementation, score_mode="dot"):
    layer = LuongAttention(
        use_scale=True, score_mode=score_mode, implementation=implementation, dtype=policy
    )
    layer.build([(B, TQ, D), (B, TV, D), (B, TV, D)])
    if score_mode == "general":
        rng = np.random.default_rng(5)
        layer.general_score_weight.assign(rng.uniform(-0.5, 0.5, (D, D)))
    layer.scale.assign(0.7)
    return layer


def _reference(layer, query, value, key, **kwargs):
    weights = {"scale": float(to_numpy(layer.scale))}
    if layer.score_mode == "general":
        weights["general_score_weight"] = to_numpy(layer.general_score_weight).astype("float64")
    if layer.score_mode == "concat":
        weights["concat_score_weight"] = float(to_numpy(layer.concat_score_weight))
    return reference_attention(query, value, key, score_mode=layer.score_mode, **weights, **kwargs)


def _dtype(x):
    return keras.backend.standardize_dtype(x.dtype)


@pytest.mark.parametrize(
    "score_mode,implementation",
    [(mode, path) for mode in _validation.SCORE_MODES for path in supported_paths(score_mode=mode)],
)
@pytest.mark.parametrize("policy", POLICIES)
def test_outputs_within_tolerance_of_the_float64_reference(policy, score_mode, implementation):
    query, value, key = _inputs()
    layer = _layer(policy, implementation, score_mode)
    masks = [QUERY_MASK, VALUE_MASK, None]
    output = layer([query, value, key], mask=masks, use_causal_mask=True)
    compute = COMPUTE_DTYPE[policy]
    assert _dtype(output) == compute
    variable_dtype = "float32" if policy.startswith("mixed") else compute
    assert all(_dtype(w) == variable_dtype for w in layer.weights)
    expected, _ = _reference(
        layer, query, value, key, query_mask=QUERY_MASK, value_mask=VALUE_MASK, causal=True
    )
    output = to_numpy(output).astype("float32")
    assert np.all(np.isfinite(output))
    # Fully-masked rows (batch 1) and masked query rows are exact zeros.
    assert np.all(output[1] == 0) and np.all(output[0, 3] == 0)
    np.testing.assert_allclose(output, expected, rtol=0, atol=TOLERANCES[compute])


@pytest.mark.parametrize("implementation", supported_paths(return_attention_scores=True))
@pytest.mark.parametrize("policy", POLICIES)
def test_returned_weights(policy, implementation):
    query, value, key = _inputs()
    layer = _layer(policy, implementation)
    output, weights = layer(
        [query, value, key], mask=[None, VALUE_MASK], return_attention_scores=True
    )
    compute = COMPUTE_DTYPE[policy]
    assert _dtype(weights) == compute
    _, expected = _reference(layer, query, value, key, value_mask=VALUE_MASK)
    weights = to_numpy(weights).astype("float32")
    assert np.all(weights[1] == 0)
    np.testing.assert_allclose(weights, expected, rtol=0, atol=TOLERANCES[compute])


# |score| up to ~1e4 (float32, bfloat16) and past float16's 65504 with float16
# inputs (entries up to ~500; scores are computed in float32).
LARGE = {"float32": 50.0, "bfloat16": 50.0, "float16": 150.0}


@pytest.mark.parametrize("implementation", supported_paths())
@pytest.mark.parametrize("policy", POLICIES)
def test_large_scores_do_not_overflow(policy, implementation):
    compute = COMPUTE_DTYPE[policy]
    query, value, key = _inputs(seed=1, query_scale=LARGE[compute])
    layer = _layer(policy, implementation)
    output = layer([query, value, key], mask=[None, VALUE_MASK])
    # The reference sees the inputs as the layer does: rounded to its dtype.
    rounded = [
        np.asarray(ops.convert_to_numpy(ops.cast(x, compute)), "float32") for x in (query, key)
    ]
    scores = 0.7 * np.einsum("bqd,bkd->bqk", *rounded)
    assert np.abs(scores).max() > (5e3 if compute != "float16" else 65504)
    expected, _ = _reference(layer, rounded[0], value, rounded[1], value_mask=VALUE_MASK)
    output = to_numpy(output).astype("float32")
    assert np.all(np.isfinite(output))
    np.testing.assert_allclose(output, expected, rtol=0, atol=TOLERANCES[compute])


@pytest.mark.parametrize("implementation", supported_paths(score_mode="general"))
@pytest.mark.parametrize("policy", POLICIES)
def test_fully_masked_rows_have_zero_outputs_and_finite_gradients(policy, implementation):
    query, value, key = _inputs(seed=2)
    layer = _layer(policy, implementation, "general")

    def loss(query, value, key):
        out = layer(
            [query, value, key], mask=[None, VALUE_MASK], use_causal_mask=True, training=True
        )
        return ops.sum(ops.cast(out, "float32"))

    total, grads = value_and_grad(loss, query, value, key)
    assert np.isfinite(total)
    for name, grad in zip(("query", "value", "key"), grads, strict=True):
        grad = grad.astype("float32")
        assert np.all(np.isfinite(grad)), name
        assert np.all(grad[1] == 0), name  # batch 1: nothing to attend to


@pytest.mark.parametrize("causal", [False, True], ids=["none", "causal"])
@pytest.mark.parametrize("implementation", supported_paths())
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_compiled_low_precision_model_trains_and_predicts(dtype, implementation, causal):
    # `predict` and `fit` compile (jax.jit, tf.function): XLA's CPU backend has no
    # float16 x float16 -> float32 product, which JAX's attention op asks for.
    query, value, _ = _inputs(seed=3)
    query_in = keras.Input((TQ, D), dtype=dtype)
    value_in = keras.Input((TV, D), dtype=dtype)
    layer = LuongAttention(use_scale=True, implementation=implementation, dtype=dtype)
    output = layer([query_in, value_in], use_causal_mask=causal)
    model = keras.Model([query_in, value_in], output)
    model.compile(optimizer="sgd", loss="mse")
    inputs = [ops.cast(query, dtype), ops.cast(value, dtype)]
    predicted = model.predict(inputs, verbose=0)
    rounded = [to_numpy(ops.cast(x, "float32")) for x in inputs]
    expected, _ = reference_attention(*rounded, causal=causal)
    np.testing.assert_allclose(
        np.asarray(predicted, "float32"), expected, rtol=0, atol=TOLERANCES[dtype]
    )
    loss = model.train_on_batch(inputs, np.zeros((B, TQ, D), dtype))
    assert np.isfinite(float(np.asarray(loss)))
