"""Which path computes a call: what each path supports, and the "auto" choice.

`unsupported_reason` is the one definition of what each path supports;
`choose_path` the one place a path is chosen. "auto" reads the measured
ranking of the paths for the call's regime from `auto_table.json`, which
`nox -s bench` writes (see `benchmarks/`; its GPU rows come from
`benchmarks/gpu_rankings.py`: measured by `benchmarks/gpu.py` where a GPU
run measured them, elsewhere the rule of which backend kernel takes which
masks, on length regimes of their own), and honours
`keras.config.enable_flash_attention()` / `disable_flash_attention()` as
`keras.layers.MultiHeadAttention` does. Where the backends' ops really
differ, `kernel_options` says so here, not in the kernels.
"""

import functools
import importlib.resources
import json
from typing import NamedTuple

import keras

from luong_attention._validation import LOW_PRECISION
from luong_attention.kernels.blocked import BlockedOptions

PATHS = ("reference", "fused", "blocked")
MASK_KINDS = ("none", "padding", "causal", "causal+padding")
# Length regime of a call whose lengths are unknown when it is traced.
_UNKNOWN_LENGTH_REGIME = "256"


class Call(NamedTuple):
    """What the choice of a path depends on; hashable, so choices are cached."""

    score_mode: str = "dot"
    dropout_active: bool = False
    return_attention_scores: bool = False
    q_len: int | None = None  # None: unknown when traced
    kv_len: int | None = None
    empty: bool = False  # some dim is 0
    masked: bool = False  # a value, key or attention mask
    causal: bool = False
    dtype: str = "float32"
    training: bool = False


def unsupported_reason(path, call):
    """Why `path` cannot compute `call`, or None if it can."""
    if path == "reference":
        return None
    if call.score_mode == "concat":
        return "score_mode='concat' (it needs the full (Tq, Tv) tanh term)"
    if call.dropout_active:
        return "dropout in training (it drops individual attention weights)"
    if call.return_attention_scores:
        return "return_attention_scores=True (it never materialises the weights)"
    if path == "blocked" and (call.q_len is None or call.kv_len is None):
        return "unknown (None) Tq or Tv at trace time (its blocks are static)"
    return None


def choose_path(implementation, call):
    """The path that computes `call`: `implementation`, or what "auto" picks.

    An empty input (a dim of size 0) goes to the reference path whatever
    was asked: there is nothing to compute, and the other paths cannot
    reshape or reduce it. A named path that cannot compute the call raises
    `ValueError`.
    """
    if call.empty:
        return "reference"
    if implementation == "auto":
        return _auto(call, keras.config.is_flash_attention_enabled(), keras.backend.backend())
    reason = unsupported_reason(implementation, call)
    if reason is not None:
        raise ValueError(
            f"Invalid value for argument implementation. implementation="
            f"{implementation!r} does not support {reason}; use 'reference' "
            f"or 'auto'. Received: implementation={implementation!r}"
        )
    return implementation


@functools.lru_cache(maxsize=1024)
def _auto(call, flash, backend):
    supported = [p for p in PATHS if unsupported_reason(p, call) is None]
    if flash is False:
        supported = [p for p in supported if p != "fused"]
    elif flash is True and "fused" in supported:
        return "fused"
    mask = "+".join(kind for kind, on in (("causal", call.causal), ("padding", call.masked)) if on)
    device, length, mode = _regime(call)
    ranked = ranking(
        backend=backend,
        device=device,
        length=length,
        mask=mask or "none",
        dtype="low" if call.dtype in LOW_PRECISION else "float32",
        mode=mode,
    )
    return next((p for p in ranked if p in supported), "reference")


def _regime(call):
    """`(device, length regime, mode)` of `call`, as the table names them."""
    device = device_kind()
    length = length_regime(call.q_len, call.kv_len, device=device)
    return device, length, "train" if call.training else "infer"


@functools.cache
def _table():
    source = importlib.resources.files("luong_attention") / "auto_table.json"
    return json.loads(source.read_text(encoding="utf-8"))


def length_regime(q_len, kv_len, *, device):
    """The name of the length regime of the table that `max(Tq, Tv)` falls in.

    A GPU has regimes of its own (`"gpu_length_regimes"`, written by
    `benchmarks/gpu_rankings.py`): the CPU's up to 2048, then two, split
    at 8192, where the GPU rule turns from the reference path to the
    blocked one.
    """
    if q_len is None or kv_len is None:
        return _UNKNOWN_LENGTH_REGIME
    length = max(q_len, kv_len)
    regimes = _table()["gpu_length_regimes" if device == "gpu" else "length_regimes"]
    for bound, name in regimes:
        if bound is None or length <= bound:
            return name
    raise ValueError(f"auto_table.json has no length regime for length {length}")


def ranking(*, backend, device, length, mask, dtype, mode):
    """The paths, fastest first, measured for one regime (from `auto_table.json`)."""
    return _rankings().get((backend, device, length, mask, dtype, mode), ("reference",))


@functools.cache
def _rankings():
    keys = ("backend", "device", "length", "mask", "dtype", "mode")
    return {tuple(row[k] for k in keys): tuple(row["paths"]) for row in _table()["rankings"]}


def blocked_options(call, backend):
    """The blocked path's options for `call` when the caller gives none.

    The smallest block of query rows is the one `nox -s bench` measured
    fastest for the call's backend, device, length regime, mode and causal
    mask or not (the table's `"blocked_block_sizes"`); a regime it did not
    measure keeps `BlockedOptions`' default.
    """
    size = _block_sizes().get((backend, *_regime(call), call.causal))
    return BlockedOptions() if size is None else BlockedOptions(min_block_size=size)


@functools.cache
def _block_sizes():
    keys = ("backend", "device", "length", "mode", "causal")
    return {
        tuple(row[k] for k in keys): row["min_block_size"]
        for row in _table().get("blocked_block_sizes", [])
    }


@functools.cache
def device_kind():
    """`"gpu"` where the backend computes on an accelerator by default, else `"cpu"`."""
    try:
        devices = keras.distribution.list_devices()
    except AttributeError:  # no distribution support on this backend (PyTorch)
        devices = [str(getattr(keras.ops.zeros(()), "device", "cpu"))]
    name = str(devices[0]).lower() if devices else "cpu"
    return "gpu" if ("gpu" in name or "cuda" in name or "tpu" in name) else "cpu"


@functools.cache
def kernel_options(backend):
    """Keyword arguments of the kernels where this backend's ops differ.

    - fused `equal_depths`: `jax.nn.dot_product_attention` needs one depth
      for query, key and value.
    - fused `float32_dtypes`, the low-precision dtypes the fused path hands
      its kernel in float32: Keras's TensorFlow op takes the score einsum in
      the input dtype, where float16 overflows past 65504; XLA's CPU
      `dot_general` has no float16 x float16 -> float32 product, which JAX's
      attention asks for (it raises under `jit`).
    - fused `transpose_heads`: a `(batch, heads, T, dim)` call goes to the
      op transposed, not reshaped: eager PyTorch pays for each `keras.ops`
      call in Python, a reshape several times a transpose, and its op
      transposes back to the same memory; XLA and TensorFlow's graphs pay
      nothing per op, and keep the flattened layout their kernels were
      measured with.
    - fused `full_mask`: on a GPU, JAX's cuDNN attention takes a mask only
      as a dense `(batch, heads or 1, Tq, Tv)` bias; Keras's op logs the
      refusal of a mask broadcast over the query rows and falls back to
      XLA's dense attention, well behind cuDNN with the same mask given
      whole (docs/gpu.md). Where Keras's op still falls back to XLA, the
      mask is the same values broadcast earlier (not timed on a GPU).
    - blocked `chain_slices`: TensorFlow copies each slice as soon as its
      input is ready, so the slices of every block would exist at once.
    - reference `keep_constants`: the causal mask's bias of a short sequence
      is converted to a tensor once and kept (`_masks.causal_fill`), which
      saves eager calls the conversion. A tensor handed to a JAX or PyTorch
      trace becomes a constant of it; one handed to a TensorFlow trace
      becomes an input of the graph (a capture), which an ONNX export of the
      model then asks its callers for.
    """
    if backend == "tensorflow":
        float32_dtypes = frozenset(LOW_PRECISION)
    elif backend == "jax" and device_kind() == "cpu":
        float32_dtypes = frozenset({"float16"})
    else:
        float32_dtypes = frozenset()
    return {
        "fused_equal_depths": backend == "jax",
        "fused_float32_dtypes": float32_dtypes,
        "fused_transpose_heads": backend == "torch",
        "fused_full_mask": backend == "jax" and device_kind() == "gpu",
        "blocked_chain_slices": backend == "tensorflow",
        "reference_keep_constants": backend != "tensorflow",
    }
