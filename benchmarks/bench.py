"""Speed and memory of LuongAttention against Keras's own attention.

For each backend and sequence length T (causal, float32, D=64) it compares

- `ours`: `LuongAttention(causal=True)` with `implementation="auto"`, plus
  the explicit `fused` and `blocked` paths;
- `keras.layers.Attention` (`use_causal_mask=True`);
- `keras.ops.dot_product_attention` (`is_causal=True`, `scale=1.0`);
- `matmul`: plain matrix products with the useful FLOPs of causal attention
  (half of the full product): one `(B, T, D) @ (B, D, T)` product for the
  forward pass, three for forward+backward (on distinct operand pairs, which
  graph optimisers cannot merge). Above T=8192 the product runs in row
  chunks of 4096, each summed so that no `(T, T)` result is kept.

Time: one process per backend; every implementation is run in turn within
each repeat (interleaved, so load from other processes hits all alike) and
the median is reported. JAX calls are jitted, TensorFlow ones wrapped in
`tf.function` (a graph, without XLA), PyTorch runs eagerly; forward is inference (no gradient
tape), fwd+bwd is the gradient of the output's sum w.r.t. query, key, value.

Peak memory: a fresh process per case runs one fwd+bwd at B=1 and reports
its peak resident set (`ru_maxrss`), next to an `idle` process that only
imports the backend and makes the inputs.

Cases whose score matrix alone would take more than `--max-dense-gb`
(materialising implementations) are not run and show as `skip`.

Usage (one Python per backend, or one Python with all three installed):

    python benchmarks/bench.py --python jax=/path/to/python ...
    python benchmarks/bench.py --lengths 512 4096 --out /tmp/bench
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

BACKENDS = ("jax", "torch", "tensorflow")
LENGTHS = (512, 1024, 2048, 4096, 8192, 32768)
IMPLS = ("ours", "fused", "blocked", "keras_attention", "keras_dpa", "matmul")
MEMORY_IMPLS = ("ours", "keras_attention", "keras_dpa")
DIM = 64
HERE = os.path.dirname(os.path.abspath(__file__))


def batch_for(length):
    """B=2 up to T=8192; B=1 above, so the long cases stay in time and memory."""
    return 2 if length <= 8192 else 1


def repeats_for(length):
    return 5 if length <= 2048 else 3 if length <= 8192 else 1


def dense(impl, backend):
    """Whether `impl` materialises the (T, T) scores on `backend` (CPU)."""
    if impl == "keras_attention":
        return True
    if impl in ("keras_dpa", "fused"):
        # PyTorch's SDPA has a causal flash kernel on CPU; JAX and TensorFlow
        # fall back to a dense einsum on CPU.
        return backend != "torch"
    return False


def skipped(impl, backend, length, batch, max_dense_gb):
    # Above T=8192 the explicit paths are not timed: "ours" is one of them.
    if impl in ("fused", "blocked") and length > 8192:
        return True
    # Forward+backward keeps about three (B, T, T) float32 tensors.
    return dense(impl, backend) and 3 * batch * length * length * 4 > max_dense_gb * 2**30


# --- worker side (imports keras; the backend comes from KERAS_BACKEND) ----------


def _make_fns(impl, length):
    import keras
    from keras import ops

    from luong_attention import LuongAttention

    if impl in ("ours", "fused", "blocked"):
        layer = LuongAttention(causal=True, implementation="auto" if impl == "ours" else impl)
        return lambda q, k, v: layer([q, v, k])
    if impl == "keras_attention":
        layer = keras.layers.Attention()
        return lambda q, k, v: layer([q, v, k], use_causal_mask=True)
    if impl == "keras_dpa":

        def dpa(q, k, v):
            four = [ops.expand_dims(t, 2) for t in (q, k, v)]
            return ops.squeeze(ops.dot_product_attention(*four, scale=1.0, is_causal=True), axis=2)

        return dpa
    if impl == "matmul":

        def matmul(q, k, v, times=1):
            # Distinct operand pairs: graph optimisers (TensorFlow's Grappler,
            # XLA) merge identical products, which made three count as one.
            outs = []
            for a, b in [(q, k), (q, v), (k, v)][:times]:
                bt = ops.swapaxes(b, -1, -2)
                if length <= 8192:
                    outs.append(ops.matmul(a, bt))
                else:
                    for r in range(0, length, 4096):
                        outs.append(ops.sum(ops.matmul(a[:, r : r + 4096], bt)))
            return outs

        return matmul
    raise ValueError(f"Unknown impl {impl!r}")


def _runner(impl, length, grad):
    """A function of (q, k, v) that runs the case and blocks until done."""
    fn = _make_fns(impl, length)
    if impl == "matmul":
        times = 3 if grad else 1
        base = fn
        fn = lambda q, k, v: base(q, k, v, times)  # noqa: E731
        grad = False
    return compiled(fn, grad)


def compiled(fn, grad):
    """`fn(q, k, v)`, or the gradient of its sum w.r.t. q, k, v when `grad`,
    jitted on JAX, a `tf.function` on TensorFlow, eager on PyTorch; the
    result blocks until done."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        if grad:
            f = jax.jit(jax.grad(lambda q, k, v: fn(q, k, v).sum(), argnums=(0, 1, 2)))
        else:
            f = jax.jit(fn)
        return lambda q, k, v: jax.block_until_ready(f(q, k, v))
    if backend == "torch":
        import torch

        if grad:

            def run(q, k, v):
                q, k, v = (t.detach().requires_grad_(True) for t in (q, k, v))
                return torch.autograd.grad(fn(q, k, v).sum(), (q, k, v))

            return run

        def run_nograd(q, k, v):
            with torch.no_grad():
                return fn(q, k, v)

        return run_nograd
    import tensorflow as tf

    # A graph without XLA, as Keras runs on CPU with `jit_compile=False`.
    # With XLA the blocked path measured slower on CPU (B=2, fwd+bwd: T=4096
    # 69 vs 57 ms, T=16384 1079 vs 1003 ms): XLA's matrix products are
    # slower than oneDNN's.
    if grad:

        @tf.function
        def run_tf(q, k, v):
            with tf.GradientTape() as tape:
                tape.watch([q, k, v])
                out = tf.reduce_sum(fn(q, k, v))
            return tape.gradient(out, [q, k, v])

    else:
        run_tf = tf.function(fn)

    # Eager calls of a tf.function return computed tensors.
    return run_tf


def inputs(batch, length):
    import numpy as np
    from keras import ops

    rng = np.random.default_rng(0)
    return [
        ops.convert_to_tensor(rng.standard_normal((batch, length, DIM)).astype("float32"))
        for _ in range(3)
    ]


def worker_time(args):
    import keras

    backend = keras.backend.backend()
    rows = []
    for length in args.lengths:
        batch = batch_for(length)
        qkv = inputs(batch, length)
        for grad in (False, True):
            impls = [
                i for i in args.impls if not skipped(i, backend, length, batch, args.max_dense_gb)
            ]
            runners = {}
            for impl in impls:
                runners[impl] = _runner(impl, length, grad)
                runners[impl](*qkv)  # compile / warm up
            samples = {impl: [] for impl in impls}
            for _ in range(repeats_for(length)):
                for impl in impls:
                    start = time.perf_counter()
                    runners[impl](*qkv)
                    samples[impl].append(time.perf_counter() - start)
            for impl in args.impls:
                row = dict(
                    backend=backend, T=length, B=batch, mode="fwd+bwd" if grad else "fwd", impl=impl
                )
                if impl in samples:
                    row.update(
                        ms=1000 * statistics.median(samples[impl]), repeats=len(samples[impl])
                    )
                else:
                    row.update(ms=None, skipped=True)
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def worker_memory(args):
    import keras

    (length,) = args.lengths
    (impl,) = args.impls
    qkv = inputs(1, length)
    if impl != "idle":
        _runner(impl, length, grad=True)(*qkv)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(backend=keras.backend.backend(), T=length, impl=impl, peak_mb=peak_mb)))


# --- driver side ----------------------------------------------------------------


def _run_worker(python, backend, argv, timeout):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    # libgomp threads spin while waiting; on a machine shared with other
    # processes that collapses PyTorch runs of many small ops (5x slower).
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [os.path.dirname(HERE), env.get("PYTHONPATH")])
    )
    cmd = [python, os.path.abspath(__file__), *argv]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [], "timeout"
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return rows, None if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1:]


def drive(args):
    pythons = dict(p.split("=", 1) for p in args.python)
    results = {"time": [], "memory": [], "machine": _machine()}
    for backend in args.backends:
        python = pythons.get(backend, sys.executable)
        if not args.skip_time:
            argv = [
                "--worker",
                "time",
                "--lengths",
                *map(str, args.lengths),
                "--impls",
                *args.impls,
            ]
            argv += ["--max-dense-gb", str(args.max_dense_gb)]
            rows, error = _run_worker(python, backend, argv, timeout=None)
            if error:
                print(f"{backend} time worker failed: {error}", file=sys.stderr)
            results["time"] += rows
        if not args.skip_memory:
            for length in args.memory_lengths:
                for impl in ("idle", *[i for i in args.impls if i in MEMORY_IMPLS]):
                    if skipped(impl, backend, length, 1, args.max_dense_gb):
                        results["memory"].append(
                            dict(backend=backend, T=length, impl=impl, peak_mb=None, skipped=True)
                        )
                        continue
                    argv = ["--worker", "memory", "--lengths", str(length), "--impls", impl]
                    rows, error = _run_worker(python, backend, argv, timeout=1800)
                    if error:
                        print(
                            f"{backend} memory {impl} T={length} failed: {error}", file=sys.stderr
                        )
                        rows = [
                            dict(
                                backend=backend, T=length, impl=impl, peak_mb=None, error=str(error)
                            )
                        ]
                    results["memory"] += rows
                    print(json.dumps(rows[-1]), flush=True)
    _write(results, args.out)


def merge(args):
    """Combines the `bench.json` of runs made one backend at a time."""
    time_rows, memory_rows, machine = {}, {}, None
    for directory in args.merge:  # a later run's row replaces an earlier one's
        with open(os.path.join(directory, "bench.json")) as f:
            part = json.load(f)
        for row in part["time"]:
            time_rows[row["backend"], row["mode"], row["T"], row["impl"]] = row
        for row in part["memory"]:
            memory_rows[row["backend"], row["T"], row["impl"]] = row
        machine = machine or part["machine"]
    results = {"time": list(time_rows.values()), "memory": list(memory_rows.values())}
    results["machine"] = machine
    _write(results, args.out)


def _write(results, out):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "bench.json"), "w") as f:
        json.dump(results, f, indent=1)
    table = report(results)
    with open(os.path.join(out, "bench.md"), "w") as f:
        f.write(table)
    print(table)
    plot(results, os.path.join(out, "bench.png"))


def _machine():
    return dict(
        cpus=os.cpu_count(),
        platform=platform.platform(),
        python=platform.python_version(),
        when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )


def _fmt(x, unit=""):
    return "skip" if x is None else f"{x:.0f}{unit}" if x >= 10 else f"{x:.1f}{unit}"


def report(results):
    """Markdown tables: time with ratios, then peak memory."""
    lines = [
        "Time (ms, median; causal, float32, D=64; B=2 up to T=8192, B=1 above). "
        "ratio = ours / other; efficiency = matmul / ours.",
        "",
        "| backend | mode | T | ours | fused | blocked | keras Attention | keras dpa | matmul "
        "| ours/Attention | ours/dpa | efficiency |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    index = {(r["backend"], r["mode"], r["T"], r["impl"]): r.get("ms") for r in results["time"]}
    keys = sorted(
        {(r["backend"], r["mode"], r["T"]) for r in results["time"]},
        key=lambda k: (BACKENDS.index(k[0]), k[1], k[2]),
    )
    for backend, mode, length in keys:
        ms = {impl: index.get((backend, mode, length, impl)) for impl in IMPLS}
        ours = ms["ours"]

        def ratio(a, b):
            return "—" if a is None or b is None else f"{a / b:.2f}"

        lines.append(
            f"| {backend} | {mode} | {length} | "
            + " | ".join(_fmt(ms[i]) for i in IMPLS)
            + f" | {ratio(ours, ms['keras_attention'])} | {ratio(ours, ms['keras_dpa'])}"
            f" | {ratio(ms['matmul'], ours)} |"
        )
    if results["memory"]:
        lines += [
            "",
            "Peak resident memory (MiB) of one fwd+bwd at B=1 in a fresh process; "
            "idle = backend imported and inputs made.",
            "",
            "| backend | T | idle | ours | fused | blocked | keras Attention | keras dpa |",
            "|---|---|---|---|---|---|---|---|",
        ]
        mem = {(r["backend"], r["T"], r["impl"]): r for r in results["memory"]}
        for backend, length in sorted(
            {(r["backend"], r["T"]) for r in results["memory"]},
            key=lambda k: (BACKENDS.index(k[0]), k[1]),
        ):
            cells = []
            for impl in ("idle", "ours", "fused", "blocked", "keras_attention", "keras_dpa"):
                r = mem.get((backend, length, impl))
                if r is None:
                    cells.append("—")
                elif r.get("error"):
                    cells.append("fail")
                else:
                    cells.append(_fmt(r.get("peak_mb")))
            lines.append(f"| {backend} | {length} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = [b for b in BACKENDS if any(r["backend"] == b for r in results["time"])]
    if not backends:
        return
    fig, axes = plt.subplots(2, len(backends), figsize=(5 * len(backends), 8), squeeze=False)
    for col, backend in enumerate(backends):
        for row, mode in enumerate(("fwd", "fwd+bwd")):
            ax = axes[row][col]
            for impl in ("ours", "keras_attention", "keras_dpa", "matmul"):
                pts = [
                    (r["T"], r["ms"])
                    for r in results["time"]
                    if r["backend"] == backend
                    and r["mode"] == mode
                    and r["impl"] == impl
                    and r.get("ms")
                ]
                if pts:
                    ax.plot(*zip(*sorted(pts), strict=True), marker="o", label=impl)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{backend}, {mode}")
            ax.set_xlabel("T")
            ax.set_ylabel("ms (median)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
    fig.suptitle("Causal attention on CPU, float32, D=64 (B=2 to T=8192, B=1 above)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=("time", "memory"))
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--lengths", nargs="+", type=int, default=list(LENGTHS))
    parser.add_argument("--memory-lengths", nargs="+", type=int, default=[4096, 32768])
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS + ("idle",))
    parser.add_argument(
        "--python",
        nargs="*",
        default=[],
        metavar="BACKEND=PYTHON",
        help="the Python to run a backend's worker with (default: this one)",
    )
    parser.add_argument("--max-dense-gb", type=float, default=4.0)
    parser.add_argument("--skip-time", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--merge", nargs="+", metavar="DIR", help="combine earlier runs' results")
    args = parser.parse_args(argv)
    if args.worker == "time":
        worker_time(args)
    elif args.worker == "memory":
        worker_memory(args)
    elif args.merge:
        merge(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
