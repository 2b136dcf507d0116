"""Gradients against finite differences, for every path and score mode.

The layer runs through `stateless_call`, so its weights (`scale`,
`concat_score_weight`, `general_score_weight`) are differentiated like the
inputs by each backend's autodiff; the expected gradients are float64
central differences of the NumPy reference.
"""

import numpy as np
import pytest
from keras import ops

from luong_attention import LuongAttention, _validation
from tests.helpers import finite_differences, small_blocks, supported_paths, value_and_grad
from tests.reference import reference_attention

B, TQ, TV, D = 2, 3, 4, 3
_rng = np.random.default_rng(3)
Q = _rng.standard_normal((B, TQ, D))
K = _rng.standard_normal((B, TV, D))
V = _rng.standard_normal((B, TV, D))
R = _rng.standard_normal((B, TQ, D))
# Batch 1, query row 0 under a top-left causal mask sees only key 0, which
# this value mask hides: a fully-masked row (bottom-right, it sees key 1
# alone: weight 1 whatever the query, so again no gradient to the query).
QUERY_MASK = np.array([[1, 1, 0], [1, 1, 1]], bool)
VALUE_MASK = np.array([[1, 1, 1, 0], [0, 1, 1, 1]], bool)
WEIGHTS = {
    "scale": np.float64(0.8),
    "concat_score_weight": np.float64(-1.3),
    "general_score_weight": _rng.uniform(-0.6, 0.6, (D, D)),
}


@pytest.fixture(autouse=True, params=["saved", "recomputed"])
def blocks(request, monkeypatch):
    # Blocks of 2 rows for the layer's blocked path, and both its backward
    # passes: weights kept from the forward pass, and recomputed block by
    # block (what long inputs get).
    recompute = request.param == "recomputed"
    return small_blocks(2, recompute_weights=recompute, monkeypatch=monkeypatch)


def _reference_loss(score_mode, causal_alignment, **arrays):
    weights = {name: arrays[name] for name in WEIGHTS if name in arrays}
    output, _ = reference_attention(
        arrays["query"],
        arrays["value"],
        arrays["key"],
        query_mask=QUERY_MASK,
        value_mask=VALUE_MASK,
        causal=True,
        causal_alignment=causal_alignment,
        score_mode=score_mode,
        **weights,
    )
    return float(np.sum(output * R))


@pytest.mark.parametrize("causal_alignment", _validation.CAUSAL_ALIGNMENTS)
@pytest.mark.parametrize(
    "score_mode,implementation",
    [(mode, path) for mode in _validation.SCORE_MODES for path in supported_paths(score_mode=mode)],
)
def test_layer_gradients_match_finite_differences(score_mode, implementation, causal_alignment):
    layer = LuongAttention(
        use_scale=True,
        score_mode=score_mode,
        causal=True,
        causal_alignment=causal_alignment,
        implementation=implementation,
    )
    layer.build([Q.shape, V.shape, K.shape])
    weight_names = [w.name for w in layer.trainable_weights]
    assert weight_names == [n for n in WEIGHTS if getattr(layer, n) is not None]
    arrays = {"query": Q, "value": V, "key": K, **{n: WEIGHTS[n] for n in weight_names}}
    names = ["query", "value", "key", *weight_names]
    projection = ops.convert_to_tensor(R.astype("float32"))

    def loss(query, value, key, *weights):
        output, _ = layer.stateless_call(
            list(weights),
            [],
            [query, value, key],
            mask=[QUERY_MASK, VALUE_MASK, None],
            training=True,  # where the blocked path uses its own backward pass
        )
        return ops.sum(output * projection)

    _, grads = value_and_grad(loss, *[np.asarray(arrays[n], "float32") for n in names])
    expected = finite_differences(
        lambda **a: _reference_loss(score_mode, causal_alignment, **a), arrays, names
    )
    for name, grad, want in zip(names, grads, expected, strict=True):
        assert np.all(np.isfinite(grad)), name
        np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-4, err_msg=name)
    # The fully-masked row and the masked query row get no gradient.
    assert np.all(grads[0][1, 0] == 0) and np.all(grads[0][0, 2] == 0)
