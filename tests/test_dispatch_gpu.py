"""The "auto" choice on a GPU, checked on any machine.

`_dispatch.device_kind` is made to say "gpu", so the GPU rows of
`auto_table.json` decide. A row the GPU benchmark did not measure holds
the rule of `benchmarks/gpu_rankings.py`, restated here by hand: "fused"
wherever the backend's kernel takes the call's dtype and masks (PyTorch:
every dtype and mask; JAX: float16/bfloat16 with no mask or a plain causal
one, or up to T=8192 with a padding mask, which cuDNN takes as a dense
bias; TensorFlow: never), else "reference" up to T=8192 and "blocked" above
(on the H100 the reference path was faster than the blocked one at
T=4096 and ran out of memory at T=16384). A row that a GPU benchmark
measured (`"measured": true`) is checked against its own order here, and
against the results it was computed from in `tests/test_auto_table.py`.
"""

import itertools

import keras
import numpy as np
import pytest

from luong_attention import _dispatch, functional, luong_attention
from luong_attention.kernels import fused as fused_kernel
from tests.helpers import to_numpy
from tests.reference import reference_attention

BACKENDS = ("jax", "torch", "tensorflow")
DTYPES = ("float32", "float16", "bfloat16")
MASKS = ("none", "padding", "causal", "causal+padding")
LENGTHS = (16, 1024, 2048, 4096, 8192, 8193, 16384)


@pytest.fixture
def on_gpu(monkeypatch):
    monkeypatch.setattr(_dispatch, "device_kind", lambda: "gpu")
    _dispatch._auto.cache_clear()
    _dispatch.kernel_options.cache_clear()  # its options depend on the device too
    yield
    _dispatch._auto.cache_clear()
    _dispatch.kernel_options.cache_clear()


@pytest.fixture
def flash_disabled():
    before = keras.config.is_flash_attention_enabled()
    keras.config.disable_flash_attention()
    yield
    if before is None:
        keras.utils.clear_session(free_memory=False)  # the only way back to "unset"
    elif before:
        keras.config.enable_flash_attention()


def _call(length, mask, dtype, training, **options):
    return _dispatch.Call(
        q_len=length,
        kv_len=length,
        masked="padding" in mask,
        causal="causal" in mask,
        dtype=dtype,
        training=training,
        **options,
    )


def _has_kernel(backend, length, mask, dtype):
    if backend == "torch":
        return True
    if backend == "jax":
        # cuDNN takes a padding mask as a dense (T, T) bias: while that fits.
        return dtype in ("float16", "bfloat16") and (mask in ("none", "causal") or length <= 8192)
    return False


def _row(backend, length, mask, dtype, training):
    regime = _dispatch.length_regime(length, length, device="gpu")
    low = "low" if dtype in ("float16", "bfloat16") else "float32"
    mode = "train" if training else "infer"
    (row,) = [
        r
        for r in _dispatch._table()["rankings"]
        if (r["backend"], r["device"], r["length"], r["mask"], r["dtype"], r["mode"])
        == (backend, "gpu", regime, mask, low, mode)
    ]
    return row


def _expected(backend, length, mask, dtype, training=False, flash=None):
    row = _row(backend, length, mask, dtype, training)
    if row["measured"]:
        return next(p for p in row["paths"] if not (flash is False and p == "fused"))
    if flash is not False and _has_kernel(backend, length, mask, dtype):
        return "fused"
    return "reference" if length <= 8192 else "blocked"


CASES = list(itertools.product(BACKENDS, LENGTHS, MASKS, DTYPES, (False, True)))


@pytest.mark.parametrize(("backend", "length", "mask", "dtype", "training"), CASES)
def test_auto_on_gpu_follows_the_kernel_rule(on_gpu, backend, length, mask, dtype, training):
    call = _call(length, mask, dtype, training)
    expected = _expected(backend, length, mask, dtype, training)
    assert _dispatch._auto(call, None, backend) == expected


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "options",
    [
        dict(return_attention_scores=True),
        dict(score_mode="concat"),
        dict(dropout_active=True),
    ],
    ids=["return_attention_scores", "concat", "dropout"],
)
@pytest.mark.parametrize("length", [16, 4096])
def test_auto_on_gpu_falls_back_for_what_only_reference_supports(on_gpu, backend, options, length):
    for mask, dtype in itertools.product(MASKS, DTYPES):
        call = _call(length, mask, dtype, training=True, **options)
        assert _dispatch._auto(call, None, backend) == "reference"


@pytest.mark.parametrize("backend", BACKENDS)
def test_auto_on_gpu_with_unknown_lengths_never_takes_blocked(on_gpu, backend):
    for mask, dtype in itertools.product(MASKS, DTYPES):
        call = _call(None, mask, dtype, training=True)
        # Unknown lengths take the regime of T = 256 (a dense one).
        expected = "fused" if _has_kernel(backend, 256, mask, dtype) else "reference"
        assert _dispatch._auto(call, None, backend) == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_auto_on_gpu_never_takes_fused_with_flash_disabled(on_gpu, backend):
    for length, mask, dtype in itertools.product(LENGTHS, MASKS, DTYPES):
        call = _call(length, mask, dtype, training=False)
        assert _dispatch._auto(call, False, backend) != "fused"
        assert _dispatch._auto(call, False, backend) == _expected(
            backend, length, mask, dtype, flash=False
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_auto_on_gpu_takes_fused_with_flash_enabled(on_gpu, backend):
    for length, mask, dtype in itertools.product(LENGTHS, MASKS, DTYPES):
        assert _dispatch._auto(_call(length, mask, dtype, False), True, backend) == "fused"


def test_a_gpu_splits_the_long_lengths_at_8192_and_a_cpu_does_not():
    assert _dispatch.length_regime(2048, 2048, device="gpu") == "1024"
    assert _dispatch.length_regime(2049, 8192, device="gpu") == "4096"
    assert _dispatch.length_regime(8193, 16, device="gpu") == "16384"
    assert _dispatch.length_regime(None, 8193, device="gpu") == "256"
    for length in (2049, 8192, 8193, 16384):
        assert _dispatch.length_regime(length, length, device="cpu") == "4096"


def test_the_gpu_table_covers_every_regime():
    keys = set(_dispatch._rankings())
    regimes = [name for _, name in _dispatch._table()["gpu_length_regimes"]]
    for backend, length, mask, dtype, mode in itertools.product(
        BACKENDS, regimes, MASKS, ("float32", "low"), ("train", "infer")
    ):
        assert (backend, "gpu", length, mask, dtype, mode) in keys
    for row in _dispatch._table()["rankings"]:
        if row["device"] == "gpu":
            assert sorted(row["paths"]) == sorted(_dispatch.PATHS)
            assert row["measured"] or row["rule"]


@pytest.fixture
def chosen_paths(monkeypatch):
    """Records which kernel each `luong_attention` call ran."""
    calls = []
    for name in ("reference_attention", "fused_attention", "blocked_attention"):
        kernel = getattr(functional, name)

        def recording(*args, _kernel=kernel, _name=name, **kwargs):
            calls.append(_name.removesuffix("_attention"))
            return _kernel(*args, **kwargs)

        monkeypatch.setattr(functional, name, recording)
    return calls


def _inputs(dtype, length=8, dim=8):
    rng = np.random.default_rng(0)
    query, value = (rng.standard_normal((2, length, dim)).astype("float32") for _ in range(2))
    value_mask = rng.random((2, length)) > 0.3
    value_mask[:, 0] = True
    return query, value, value_mask


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_call_on_gpu_runs_the_chosen_kernel(on_gpu, chosen_paths, mask, dtype):
    backend = keras.backend.backend()
    query, value, value_mask = _inputs(dtype)
    masked = "padding" in mask
    out = luong_attention(
        keras.ops.cast(query, dtype),
        keras.ops.cast(value, dtype),
        value_mask=value_mask if masked else None,
        causal="causal" in mask,
    )
    assert chosen_paths == [_expected(backend, 8, mask, dtype)]
    ref, _ = reference_attention(
        query, value, value_mask=value_mask if masked else None, causal="causal" in mask
    )
    tol = 1e-5 if dtype == "float32" else 5e-2
    np.testing.assert_allclose(to_numpy(out).astype("float32"), ref, atol=tol, rtol=tol)


def test_a_call_on_gpu_with_flash_disabled_never_runs_fused(on_gpu, flash_disabled, chosen_paths):
    query, value, value_mask = _inputs("bfloat16")
    for mask in MASKS:
        luong_attention(
            keras.ops.cast(query, "bfloat16"),
            keras.ops.cast(value, "bfloat16"),
            value_mask=value_mask if "padding" in mask else None,
            causal="causal" in mask,
        )
    assert chosen_paths == ["reference"] * len(MASKS)


@pytest.mark.parametrize("heads", [None, 2], ids=["rank3", "rank4"])
def test_a_fused_call_on_gpu_gives_jax_a_mask_with_every_query_row(on_gpu, monkeypatch, heads):
    """cuDNN takes a mask only as a dense bias; Keras falls back to XLA for a row-broadcast one.

    On JAX the op gets the value mask as `(batch, 1, Tq, Tv)`, shared by
    the heads; the other backends' kernels take it broadcast over the rows.
    """
    shapes = []
    op = keras.ops.dot_product_attention

    def spy(*args, mask=None, **kwargs):
        shapes.append(tuple(mask.shape))
        return op(*args, mask=mask, **kwargs)

    monkeypatch.setattr(fused_kernel.ops, "dot_product_attention", spy)
    query, value, value_mask = _inputs("bfloat16", length=8)
    if heads:  # (batch, heads, T, dim); the (batch, T) mask covers every head
        query, value = (np.stack([x] * heads, axis=1) for x in (query, value))
    out = luong_attention(
        keras.ops.cast(query, "bfloat16"),
        keras.ops.cast(value, "bfloat16"),
        value_mask=value_mask,
        implementation="fused",
    )
    if keras.backend.backend() == "jax":
        assert shapes == [(2, 1, 8, 8)]
    else:
        assert len(shapes) == 1 and shapes[0][-2] == 1
    ref, _ = reference_attention(
        query, value, value_mask=value_mask[:, None, :] if heads else value_mask
    )
    np.testing.assert_allclose(to_numpy(out).astype("float32"), ref, atol=5e-2, rtol=5e-2)
