"""Property-based tests: every implementation path against the NumPy reference.

Hypothesis draws a problem (rank 3-5, sizes from 1, score mode, key or not,
masks with fully-masked rows, causal with either alignment, an attention
mask, a scale); each implementation path in `_validation.IMPLEMENTATIONS`
must give the reference's outputs, weights (where it returns them) and
gradients, and nothing non-finite. A path that does not support a
combination (`tests.helpers.supported_paths`) is left out of that example;
"auto" and "reference" never are.

Gradients: each backend's autodiff of `sum(output * R)` against central
differences of the float64 reference. The number of examples comes from the
hypothesis profile (tests/conftest.py: "ci" by default, "dev" for more).
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import ops

from luong_attention import _validation, luong_attention
from tests.helpers import (
    finite_differences,
    small_blocks,
    supported_paths,
    to_numpy,
    value_and_grad,
)
from tests.reference import reference_attention

pytestmark = pytest.mark.filterwarnings("ignore:You are using a softmax over axis -1:UserWarning")

ATOL = RTOL = 2e-5
GRAD_ATOL = GRAD_RTOL = 2e-4
# Few distinct sizes (1 included): JAX compiles each op once per shape in
# eager mode, so examples that reuse shapes run much faster there.
BATCH_SIZES = (1, 2)
LENGTHS = (1, 3)
DIMS = (1, 2)


def _mask(draw, rng, batch, length, prefix):
    """None, or a boolean mask over `batch + (length,)` (or `batch[:1]`)."""
    if not draw(st.booleans()):
        return None
    density = draw(st.sampled_from([0.0, 0.5, 0.8, 1.0]))
    shape = (*(batch[:1] if prefix else batch), length)
    mask = rng.random(shape) < density
    return mask


@st.composite
def problems(draw):
    rank = draw(st.integers(3, 5))
    batch = tuple(draw(st.sampled_from(BATCH_SIZES)) for _ in range(rank - 2))
    tq, tv = draw(st.sampled_from(LENGTHS)), draw(st.sampled_from(LENGTHS))
    score_mode = draw(st.sampled_from(_validation.SCORE_MODES))
    given_key = draw(st.booleans())
    dv = draw(st.sampled_from(DIMS))
    dk = draw(st.sampled_from(DIMS)) if given_key else dv
    d = draw(st.sampled_from(DIMS)) if score_mode == "general" else dk
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    prefix = draw(st.booleans())
    problem = {
        "query": rng.standard_normal((*batch, tq, d)).astype("float32"),
        "value": rng.standard_normal((*batch, tv, dv)).astype("float32"),
        "key": rng.standard_normal((*batch, tv, dk)).astype("float32") if given_key else None,
        "query_mask": _mask(draw, rng, batch, tq, prefix),
        "value_mask": _mask(draw, rng, batch, tv, prefix),
        "key_mask": _mask(draw, rng, batch, tv, prefix),
        "attention_mask": None,
        "causal": draw(st.booleans()),
        "causal_alignment": draw(st.sampled_from(_validation.CAUSAL_ALIGNMENTS)),
        "score_mode": score_mode,
        "scale": draw(st.sampled_from([None, 0.5, 1.7])),
    }
    attention = draw(st.sampled_from([None, "full", "2d"]))
    if attention is not None:
        shape = (*batch, tq, tv) if attention == "full" else (tq, tv)
        problem["attention_mask"] = rng.random(shape) < 0.7
    if score_mode == "concat":
        problem["concat_score_weight"] = np.float32(draw(st.sampled_from([1.0, -0.8])))
    if score_mode == "general":
        problem["general_score_weight"] = rng.standard_normal((d, dk)).astype("float32")
    return problem


def _reference_output(problem, **arrays):
    args = {**problem, **arrays}
    if args["score_mode"] != "concat":
        args.pop("concat_score_weight", None)
    return reference_attention(**args)


def _projection(problem):
    query, value = problem["query"], problem["value"]
    rng = np.random.default_rng(1)
    return rng.standard_normal((*query.shape[:-1], value.shape[-1]))


def _finite_difference_grads(problem, names):
    """Central differences of sum(output * R) of the float64 reference."""
    projection = _projection(problem)

    def loss(**arrays):
        return float(np.sum(_reference_output(problem, **arrays)[0] * projection))

    return finite_differences(loss, {n: problem[n] for n in names}, names)


def _call(problem, implementation, blocks=None, **overrides):
    """`luong_attention` on the problem; the blocked path in blocks of 2 rows."""
    args = {**problem, **overrides}
    query, value, key = args.pop("query"), args.pop("value"), args.pop("key")
    blocks = small_blocks() if blocks is None else blocks
    return luong_attention(
        query, value, key, implementation=implementation, blocked_options=blocks, **args
    )


def _differentiable(problem):
    names = ["query", "value"] + (["key"] if problem["key"] is not None else [])
    for name in ("scale", "concat_score_weight", "general_score_weight"):
        if problem.get(name) is not None:
            names.append(name)
    return names


def _loss_and_grads(problem, implementation, names, blocks):
    """In training, where the blocked path uses its own backward pass."""
    projection = ops.convert_to_tensor(_projection(problem).astype("float32"))

    def loss(*tensors):
        arrays = dict(zip(names, tensors, strict=True))
        out = _call(problem, implementation, blocks, training=True, **arrays)
        return ops.sum(out * projection)

    return value_and_grad(loss, *[np.asarray(problem[n], "float32") for n in names])


PROPERTY_SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(problem=problems())
def test_outputs_and_weights_match_the_reference(problem):
    expected_output, expected_weights = _reference_output(problem)
    with_weights = supported_paths(**problem, return_attention_scores=True)
    for implementation in supported_paths(**problem):
        output = to_numpy(_call(problem, implementation))
        assert np.all(np.isfinite(output)), implementation
        np.testing.assert_allclose(
            output, expected_output, atol=ATOL, rtol=RTOL, err_msg=implementation
        )
        if implementation in with_weights:
            weights = to_numpy(_call(problem, implementation, return_attention_scores=True)[1])
            assert np.all(np.isfinite(weights)), implementation
            np.testing.assert_allclose(
                weights, expected_weights, atol=ATOL, rtol=RTOL, err_msg=implementation
            )


@PROPERTY_SETTINGS
@given(problem=problems())
def test_gradients_match_finite_differences_of_the_reference(problem):
    names = _differentiable(problem)
    expected = _finite_difference_grads(problem, names)
    # The blocked path also with its long-input backward pass, which
    # recomputes the weights instead of keeping them.
    paths = supported_paths(**problem)
    runs = [(name, small_blocks()) for name in paths]
    if "blocked" in paths:
        runs.append(("blocked", small_blocks(recompute_weights=True)))
    for implementation, blocks in runs:
        _, grads = _loss_and_grads(problem, implementation, names, blocks)
        save_below = blocks.save_weights_below_bytes
        for name, grad, want in zip(names, grads, expected, strict=True):
            message = f"{implementation} (weights saved below {save_below} bytes): d/d{name}"
            assert np.all(np.isfinite(grad)), message
            np.testing.assert_allclose(grad, want, atol=GRAD_ATOL, rtol=GRAD_RTOL, err_msg=message)
