"""The suite's GPU tests: every path on the GPU against the NumPy reference.

Marked `gpu`: they run only with `pytest --check-gpu`, which fails at
start-up when the backend sees no GPU and turns TF32 off (see conftest.py),
so float32 tolerances are float32 ones. Inputs are cast to the tested dtype
before the reference sees them, so the tolerances cover the computation,
not the rounding of the inputs. The low-precision tolerances: bfloat16 keeps
8 significant bits (unit roundoff 2^-9), float16 11 (2^-12); scores of
scaled N(0, 1) inputs are O(1), so a weight is off by about 1% in bfloat16
after the exponential and the output (a weighted mean of O(1) values,
rounded once more) by about as much: 3e-2 for bfloat16, 1e-2 for float16.

The last test is not a GPU test: it checks, on any machine, that
`--check-gpu` stops pytest with a usage error when no GPU is visible.
"""

import os
import sys

import keras
import numpy as np
import pytest
from keras import ops

from luong_attention import LuongAttention, luong_attention
from luong_attention.kernels import BlockedOptions
from tests.helpers import run_subprocess, supported_paths, to_numpy, value_and_grad
from tests.reference import reference_attention

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPES = ("float32", "float16", "bfloat16")
TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 3e-2}
MASKS = ("none", "padding", "causal", "causal+padding")
# "blocked-small": many blocks, chained, weights recomputed in the backward pass.
IMPLEMENTATIONS = ("auto", "reference", "fused", "blocked", "blocked-small")
SMALL_BLOCKS = BlockedOptions(block_size=16, chain_above_bytes=0, save_weights_below_bytes=0)
# (batch, heads, T, dim): heads as a second batch dim, as multi-head models call it.
SHAPE = (2, 3, 80, 32)


def _normal(rng, *shape):
    return rng.standard_normal(shape).astype("float32")


def _on_gpu(tensor):
    return "cpu" not in str(getattr(tensor, "device", "gpu")).lower()


def _case(seed, dtype, mask):
    """Query, key, value (rounded to `dtype`, as float32 NumPy) and the value mask."""
    rng = np.random.default_rng(seed)
    qkv = [rng.standard_normal(SHAPE).astype("float32") for _ in range(3)]
    qkv = [to_numpy(ops.cast(ops.cast(t, dtype), "float32")) for t in qkv]
    value_mask = None
    if "padding" in mask:
        value_mask = rng.random(SHAPE[:1] + SHAPE[2:3]) > 0.25
        value_mask[0, :5] = False  # the first rows of a causal call see no key
        # (batch, heads, T): the same for every head.
        value_mask = np.repeat(value_mask[:, None, :], SHAPE[1], axis=1)
    return qkv, value_mask


def _run(implementation, dtype, mask, query, key, value, value_mask):
    return luong_attention(
        ops.cast(query, dtype),
        ops.cast(value, dtype),
        ops.cast(key, dtype),
        value_mask=value_mask,
        causal="causal" in mask,
        scale=SHAPE[-1] ** -0.5,
        implementation=implementation.removesuffix("-small"),
        blocked_options=SMALL_BLOCKS if implementation == "blocked-small" else None,
    )


@pytest.mark.gpu
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_each_path_on_the_gpu_matches_the_reference(implementation, dtype, mask):
    (query, key, value), value_mask = _case(0, dtype, mask)
    out = _run(implementation, dtype, mask, query, key, value, value_mask)
    assert _on_gpu(out)
    assert keras.backend.standardize_dtype(out.dtype) == dtype
    expected, _ = reference_attention(
        query,
        value,
        key,
        value_mask=value_mask,
        causal="causal" in mask,
        scale=SHAPE[-1] ** -0.5,
    )
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(to_numpy(out).astype("float32"), expected, atol=tol, rtol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_each_path_on_the_gpu_has_the_reference_gradients(implementation, dtype, mask):
    (query, key, value), value_mask = _case(1, dtype, mask)
    weights = np.random.default_rng(2).standard_normal(SHAPE).astype("float32")

    def loss(implementation, dtype):
        def fn(q, k, v):
            out = _run(implementation, dtype, mask, q, k, v, value_mask)
            return ops.sum(ops.cast(out, "float32") * ops.convert_to_tensor(weights))

        return fn

    # The float32 reference path, with TF32 off, stands for the exact gradients.
    _, expected = value_and_grad(loss("reference", "float32"), query, key, value)
    _, got = value_and_grad(loss(implementation, dtype), query, key, value)
    # A gradient sums T terms of the size of an output error.
    tol = 10 * TOLERANCE[dtype]
    for name, g, e in zip(("query", "key", "value"), got, expected, strict=True):
        np.testing.assert_allclose(g, e, atol=tol, rtol=tol, err_msg=f"d loss / d {name}")


@pytest.mark.gpu
@pytest.mark.parametrize("implementation", supported_paths())
@pytest.mark.parametrize("dtype", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_on_the_gpu_matches_the_reference(dtype, implementation, rng):
    query, value = _normal(rng, 2, 64, 32), _normal(rng, 2, 80, 32)
    value_mask = rng.random((2, 80)) > 0.2
    value_mask[1] = False
    layer = LuongAttention(dtype=dtype, implementation=implementation)
    out = layer([query, value], mask=[None, value_mask])
    assert _on_gpu(out)
    # The layer computes on its inputs rounded to the compute dtype; so does the reference.
    query, value = (
        to_numpy(ops.cast(ops.cast(t, layer.compute_dtype), "float32")) for t in (query, value)
    )
    ref = reference_attention(query, value, value_mask=value_mask)
    atol = 1e-4 if dtype == "float32" else 3e-2
    np.testing.assert_allclose(to_numpy(out).astype("float32"), ref[0], atol=atol, rtol=atol)
    if implementation in supported_paths(return_attention_scores=True):
        out, weights = layer([query, value], mask=[None, value_mask], return_attention_scores=True)
        np.testing.assert_allclose(to_numpy(out).astype("float32"), ref[0], atol=atol, rtol=atol)
        np.testing.assert_allclose(
            to_numpy(weights).astype("float32"), ref[1], atol=atol, rtol=atol
        )


def test_check_gpu_is_a_usage_error_without_a_gpu():
    # No GPU visible to any backend, whatever this machine has.
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    proc = run_subprocess(
        [sys.executable, "-m", "pytest", "--check-gpu", "-p", "no:cacheprovider", __file__],
        timeout=300,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert f"the {keras.backend.backend()} backend sees no GPU" in proc.stderr
    assert "passed" not in proc.stdout
