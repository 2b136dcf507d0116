"""GPU benchmark: our paths against Keras's attention, fwd+bwd, one backend per run.

For B=4, 8 heads, T in {1024, 4096, 16384}, D in {64, 128}, bfloat16,
float16 and float32, masks none / causal / padding (a quarter of the keys of
every other sequence masked), it times the gradients with respect to
query, key and value against a fixed dense cotangent, the one
`benchmarks/grid.py` pulls back (mode "fwd+bwd"; runs before the results
recorded `"backward"` took the gradient of the output's sum; `--modes fwd`
adds the forward pass alone) of

- `luong_attention(..., implementation=...)` for "auto", "reference",
  "fused" and "blocked", inputs `(batch, heads, T, dim)`;
- `keras.ops.dot_product_attention` (`keras_dpa`, inputs `(batch, T, heads,
  dim)`) with `flash_attention=None` (the backend decides) and, as
  `keras_dpa_flash`, `flash_attention=True` (a padding mask passed as a
  full `(batch, 1, T, T)` mask, the shape cuDNN takes as a bias); where
  the backend refuses, the row says "unsupported";
- `keras.layers.Attention` (`keras_attention`) on the `(batch, heads, T,
  dim)` inputs (the heads act as a batch dim).

JAX functions are jitted, TensorFlow ones are a `tf.function`, PyTorch runs
eagerly; each timed call waits for the device (`jax.block_until_ready`,
`torch.cuda.synchronize`, a host copy of a scalar on TensorFlow). The first
call (compilation, autotuning) is not timed; the median of `--repeats` calls
is, or of more calls where those took under `MIN_TIMED_MS` together. A case
that runs out of memory is recorded as "oom", not raised. Cases run most
important first (D=64, bfloat16, T=4096, ...); with `--budget-s`
the cases left when the budget is spent are recorded as "budget". The
loops run D, then dtype, then T, then mask, so a run cut short has
measured every T.

Results: `<out>/gpu_bench-<backend>.json` (rewritten after every case, so
a run cut short keeps what it measured); `benchmarks/gpu_rankings.py
--results ...` turns them into the GPU rows of the auto table.

    KERAS_BACKEND=torch python benchmarks/gpu.py --out gpu-results
    KERAS_BACKEND=jax python benchmarks/gpu.py --out /tmp/smoke --quick   # CPU smoke run
"""

import argparse
import gc
import itertools
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

BATCH, HEADS = 4, 8
LENGTHS = (4096, 16384, 1024)  # in the order they run
DIMS = (64, 128)
DTYPES = ("bfloat16", "float16", "float32")
MASKS = ("none", "causal", "padding")
OURS = ("auto", "reference", "fused", "blocked")
IMPLS = (*OURS, "keras_dpa", "keras_dpa_flash", "keras_attention")
# A case of a millisecond or less is timed until MIN_TIMED_MS have passed (at
# most MAX_REPEATS calls): in eager PyTorch such a call is mostly host work,
# and the medians of five differed widely between two timings of one path
# (docs/gpu.md).
MIN_TIMED_MS, MAX_REPEATS = 200, 100
QUICK = dict(lengths=(64, 256), dims=(16,), repeats=2)


def device_info():
    """`(kind, name)` of the device the backend computes on: ("gpu" or "cpu", a name)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        kind = "gpu" if device.platform == "gpu" else "cpu"
        return kind, device.device_kind if kind == "gpu" else platform.processor() or "cpu"
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return "gpu", torch.cuda.get_device_name(0)
        return "cpu", platform.processor() or "cpu"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return "gpu", details.get("device_name", "GPU")
    return "cpu", platform.processor() or "cpu"


def _error_kinds():
    """The exceptions a case may raise that are recorded, not raised."""
    import keras

    kinds = [RuntimeError, ValueError, NotImplementedError, MemoryError]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        kinds.append(tf.errors.OpError)
    return tuple(kinds)


def _is_oom(error):
    text = f"{type(error).__name__} {error}".lower()
    return isinstance(error, MemoryError) or any(
        s in text
        for s in ("resource_exhausted", "resourceexhausted", "out of memory", "outofmemory")
    )


def _free_memory():
    import keras

    gc.collect()
    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()


def _peak_mb():
    import keras

    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2**20
    return None


class Case:
    """Inputs of one (T, D, dtype, mask) in both layouts, and its masks."""

    def __init__(self, length, dim, dtype, mask, seed=0):
        from keras import ops

        rng = np.random.default_rng(seed)
        shape = (BATCH, HEADS, length, dim)
        self.length, self.dim, self.dtype, self.mask = length, dim, dtype, mask
        self.causal = mask == "causal"
        self.bhtd = [
            ops.cast(rng.standard_normal(shape).astype("float32"), dtype) for _ in range(3)
        ]
        self.bthd = [ops.transpose(t, (0, 2, 1, 3)) for t in self.bhtd]
        self.value_mask = self.mask_4d = self.mask_full = None
        if mask == "padding":
            keep = np.ones((BATCH, length), bool)
            keep[1::2, length - length // 4 :] = False
            self.value_mask = ops.convert_to_tensor(
                np.broadcast_to(keep[:, None, :], (BATCH, HEADS, length)).copy()
            )
            self.mask_4d = ops.convert_to_tensor(keep[:, None, None, :])
            self.mask_full = ops.convert_to_tensor(
                np.broadcast_to(keep[:, None, None, :], (BATCH, 1, length, length)).copy()
            )


def attention_fn(impl, case, training):
    """`(fn, inputs)`: `fn(q, k, v)` runs `impl` on `case`; `inputs` in its layout.

    `training` is passed to ours, so that "auto" reads the table's training
    rows when the gradient is timed.
    """
    import keras
    from keras import ops

    from luong_attention import luong_attention

    scale = case.dim**-0.5
    if impl in OURS:

        def ours(q, k, v):
            return luong_attention(
                q,
                v,
                k,
                value_mask=case.value_mask,
                causal=case.causal,
                scale=scale,
                implementation=impl,
                training=training,
            )

        return ours, case.bhtd
    if impl in ("keras_dpa", "keras_dpa_flash"):
        flash = impl == "keras_dpa_flash"
        mask = case.mask_full if flash else case.mask_4d

        def dpa(q, k, v):
            return ops.dot_product_attention(
                q,
                k,
                v,
                mask=mask,
                scale=scale,
                is_causal=case.causal,
                flash_attention=True if flash else None,
            )

        return dpa, case.bthd
    if impl == "keras_attention":
        layer = keras.layers.Attention(dtype=case.dtype)
        # On 4-D inputs the layer broadcasts a non-causal value mask against
        # the (batch, heads, Tq, Tv) scores as it is: (batch, 1, 1, Tv).
        masks = None if case.mask_4d is None else [None, case.mask_4d]

        def attention(q, k, v):
            return layer([q, v, k], mask=masks, use_causal_mask=case.causal)

        return attention, case.bhtd
    raise ValueError(f"Invalid value for argument impl. Expected one of {IMPLS}. Received: {impl}")


def timed_runner(fn, grad):
    """A function of (q, k, v) that runs `fn` and waits for the device; it
    returns `fn`'s output, or when `grad` the gradients with respect to q, k
    and v of the output against a fixed dense cotangent (`grid.cotangent`,
    the one the CPU grid pulls back, as a loss gives a layer's output in
    training).

    The cotangent has the query's shape and dtype, as every variant's output
    here does (the values' depth is the keys'); it is made on the first
    (untimed) call, on the device, and passed in rather than traced in as a
    constant: at T = 16384 it is hundreds of MB.
    """
    import keras
    from grid import cotangent
    from keras import ops

    backend = keras.backend.backend()
    held = []

    def dense(q):
        if not held:
            held.append(ops.cast(ops.convert_to_tensor(cotangent(q.shape)), q.dtype))
        return held[0]

    if backend == "jax":
        import jax

        def pull_back(q, k, v, ct):
            _, vjp = jax.vjp(fn, q, k, v)
            return vjp(ct)

        if grad:
            f = jax.jit(pull_back)
            return lambda q, k, v: jax.block_until_ready(f(q, k, v, dense(q)))
        f = jax.jit(fn)
        return lambda q, k, v: jax.block_until_ready(f(q, k, v))
    if backend == "torch":
        import torch

        sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

        def run(q, k, v):
            if grad:
                ct = dense(q)
                q, k, v = (t.detach().requires_grad_(True) for t in (q, k, v))
                out = torch.autograd.grad(fn(q, k, v), (q, k, v), grad_outputs=ct)
            else:
                with torch.no_grad():
                    out = fn(q, k, v)
            sync()
            return out

        return run
    import tensorflow as tf

    @tf.function
    def run_tf(q, k, v, ct):
        if not grad:
            out = fn(q, k, v)
            return out, tf.reduce_sum(tf.cast(out, "float32"))
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            out = fn(q, k, v)
        grads = tape.gradient(out, [q, k, v], output_gradients=ct)
        return grads, tf.add_n([tf.reduce_sum(tf.cast(g, "float32")) for g in grads])

    def run(q, k, v):
        out, total = run_tf(q, k, v, dense(q) if grad else None)
        total.numpy()  # a scalar copied to the host: waits
        return out

    return run


def measure(impl, case, grad, repeats):
    """One result row's measurement: status, median ms, ..."""
    errors = _error_kinds()
    _free_memory()
    try:
        fn, inputs = attention_fn(impl, case, training=grad)
        run = timed_runner(fn, grad)
        start = time.perf_counter()
        run(*inputs)  # compile, autotune, warm up
        first_ms = 1000 * (time.perf_counter() - start)
        samples = []
        while len(samples) < MAX_REPEATS:
            start = time.perf_counter()
            run(*inputs)
            samples.append(1000 * (time.perf_counter() - start))
            if sum(samples) > 10_000:  # a slow case: two seconds or more each
                break
            if len(samples) >= repeats and sum(samples) >= MIN_TIMED_MS:
                break
        peak = _peak_mb()  # before the cleanup below resets the counter
    except errors as error:
        if _is_oom(error):
            status = "oom"
        elif impl == "keras_dpa_flash" or "Invalid value for argument implementation" in str(error):
            status = "unsupported"
        else:
            status = "error"
        message = (
            f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
            if str(error).strip()
            else type(error).__name__
        )
        return dict(status=status, median_ms=None, message=message)
    finally:
        run = fn = None
        _free_memory()
    row = dict(status="ok", median_ms=statistics.median(samples), repeats=len(samples))
    row["first_call_ms"] = first_ms
    if peak is not None:
        row["peak_mb"] = peak
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for gpu_bench-<backend>.json")
    parser.add_argument("--quick", action="store_true", help="tiny T and D: a CPU smoke run")
    parser.add_argument("--lengths", type=int, nargs="+")
    parser.add_argument("--dims", type=int, nargs="+")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--masks", nargs="+", default=list(MASKS), choices=MASKS)
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--modes", nargs="+", default=["fwd+bwd"], choices=["fwd+bwd", "fwd"])
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--budget-s", type=float, help="start no case after this many seconds")
    parser.add_argument("--require-gpu", action="store_true", help="exit 2 unless a GPU is seen")
    args = parser.parse_args(argv)
    lengths = args.lengths or (QUICK["lengths"] if args.quick else LENGTHS)
    dims = args.dims or (QUICK["dims"] if args.quick else DIMS)
    repeats = args.repeats or (QUICK["repeats"] if args.quick else 5)

    import keras

    backend = keras.backend.backend()
    kind, name = device_info()
    if args.require_gpu and kind != "gpu":
        print(f"benchmarks/gpu.py: the {backend} backend sees no GPU", file=sys.stderr)
        return 2
    results = dict(
        backend=backend,
        device=kind,
        device_name=name,
        keras=keras.__version__,
        python=platform.python_version(),
        quick=args.quick,
        batch=BATCH,
        heads=HEADS,
        # What this version records; benchmarks/gpu_collect.py flags runs without.
        peak_mb="torch.cuda.max_memory_allocated() over each case's calls",
        training="ours take training=True where the gradient is timed",
        backward="the gradients against a fixed standard-normal cotangent (grid.cotangent)",
        when=time.strftime("%Y-%m-%d %H:%M:%S"),
        rows=[],
    )
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"gpu_bench-{backend}.json")
    began = time.perf_counter()
    # Every length early (a run cut short by its budget still spans them).
    grid = itertools.product(dims, args.dtypes, lengths, args.masks)
    for dim, dtype, length, mask in grid:
        over_budget = args.budget_s is not None and time.perf_counter() - began > args.budget_s
        case = None if over_budget else Case(length, dim, dtype, mask)
        for mode, impl in itertools.product(args.modes, args.impls):
            row = dict(backend=backend, device=kind, T=length, D=dim, dtype=dtype, mask=mask)
            row.update(mode=mode, impl=impl)
            if case is None:
                row.update(status="budget", median_ms=None)
            else:
                row.update(measure(impl, case, mode == "fwd+bwd", repeats))
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
        case = None
        results["elapsed_s"] = round(time.perf_counter() - began, 1)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    print(f"wrote {path} ({len(results['rows'])} rows, {results['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
