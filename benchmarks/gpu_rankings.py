"""The GPU rows of `luong_attention/auto_table.json`: measured, or from the rule.

`gpu_rows(results)` returns one row per (backend, length regime, mask kind,
dtype, mode) for device "gpu". Where `results` (the JSON that
`benchmarks/gpu.py` writes) measured the paths for a row's regime, the row
ranks them fastest first (geometric mean over the measured cases; a path
that ran out of memory or failed in any of them ranks last) and says
`"measured": true`. Every other row follows the rule below and says
`"measured": false` with the rule it applied.

The rule, read from Keras 3.15's `dot_product_attention` on each backend
(what `"fused"` calls):

- PyTorch: `scaled_dot_product_attention` on CUDA runs the flash kernel
  (float16/bfloat16, no mask; `is_causal` for a plain causal call) or the
  memory-efficient kernel (float32, or a boolean mask, which Keras turns
  into an additive one): every dtype and mask has a kernel, so "fused"
  first.
- JAX: Keras asks for cuDNN's flash attention when the inputs are
  float16/bfloat16 (cuDNN takes no float32; float32 runs XLA's dense
  attention). cuDNN gets `is_causal` natively, but Keras's op has no
  sequence-lengths argument: a padding mask reaches cuDNN as a dense
  additive bias (and a `(B, 1, 1, S)` one is refused there, so Keras falls
  back to XLA). So "fused" first for float16/bfloat16 without a mask or
  with a plain causal one; otherwise no kernel.
- TensorFlow: an einsum, no flash kernel.

Without a kernel: "reference" up to the 1024 regime (T <= 2048, where the
(T, T) scores of a batch of heads fit easily), "blocked" above (O(T) memory).

    python benchmarks/gpu_rankings.py                      # rule rows into the table
    python benchmarks/gpu_rankings.py --results gpu-results/gpu_bench-*.json
"""

import argparse
import json
import math
import os
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))
TABLE = os.path.join(os.path.dirname(HERE), "luong_attention", "auto_table.json")

BACKENDS = ("jax", "torch", "tensorflow")
PATHS = ("reference", "fused", "blocked")
MASKS = ("none", "padding", "causal", "causal+padding")
DTYPES = ("float32", "low")
MODES = ("train", "infer")
LOW_PRECISION = ("float16", "bfloat16")
# The benchmark's mode names -> the table's.
BENCH_MODES = {"fwd+bwd": "train", "fwd": "infer"}
# Regimes where the (T, T) scores are small enough for the reference path.
DENSE_REGIMES = ("16", "64", "256", "1024")


def _length_regimes():
    with open(TABLE, encoding="utf-8") as f:
        return json.load(f)["length_regimes"]


def regime_of(length, regimes):
    for bound, name in regimes:
        if bound is None or length <= bound:
            return name
    raise ValueError(f"No length regime for T={length}")


def kernel_rule(backend, mask, dtype):
    """`(has_kernel, reason)`: whether the backend's fused op has a GPU kernel for the call."""
    if backend == "torch":
        return (
            True,
            "torch: SDPA has a flash or memory-efficient CUDA kernel for every dtype and mask",
        )
    if backend == "jax":
        if dtype != "low":
            return False, "jax: cuDNN attention takes float16/bfloat16 only (float32 runs XLA)"
        if mask in ("none", "causal"):
            return True, "jax: cuDNN flash attention (float16/bfloat16, no mask or is_causal)"
        return False, (
            "jax: Keras's op gives cuDNN no sequence lengths; a padding mask becomes a dense "
            "bias or falls back to XLA"
        )
    if backend == "tensorflow":
        return False, "tensorflow: Keras's op is an einsum, no flash kernel"
    raise ValueError(f"Unknown backend {backend!r}; expected one of {BACKENDS}")


def rule_paths(backend, length, mask, dtype):
    """`(paths, rule)`: the ranking the rule gives, fastest first, and why."""
    has_kernel, reason = kernel_rule(backend, mask, dtype)
    dense = length in DENSE_REGIMES
    fallback = ["reference", "blocked"] if dense else ["blocked", "reference"]
    if has_kernel:
        return ["fused", *fallback], reason
    where = "T <= 2048: reference" if dense else "T > 2048: blocked"
    return [*fallback, "fused"], f"{reason}; {where}"


def _measured(results, regimes):
    """{(backend, regime, mask, dtype, mode): {path: [ms or inf, ...]}} of GPU rows."""
    measured = {}
    for r in results["rows"]:
        if r.get("device") != "gpu" or r["impl"] not in PATHS or r["mode"] not in BENCH_MODES:
            continue
        dtype = "low" if r["dtype"] in LOW_PRECISION else "float32"
        key = (r["backend"], regime_of(r["T"], regimes), r["mask"], dtype, BENCH_MODES[r["mode"]])
        ms = r["median_ms"] if r["status"] == "ok" else math.inf
        measured.setdefault(key, {}).setdefault(r["impl"], []).append(ms)
    return measured


def _speed(times):
    if not times or math.inf in times:
        return math.inf
    return math.exp(statistics.fmean(math.log(t) for t in times))


def gpu_rows(results=None):
    """The device "gpu" rows of the table, for every backend and regime."""
    regimes = _length_regimes()
    measured = _measured(results, regimes) if results is not None else {}
    rows = []
    for backend in BACKENDS:
        for _, length in regimes:
            for mask in MASKS:
                for dtype in DTYPES:
                    for mode in MODES:
                        paths, rule = rule_paths(backend, length, mask, dtype)
                        row = dict(
                            backend=backend,
                            device="gpu",
                            length=length,
                            mask=mask,
                            dtype=dtype,
                            mode=mode,
                        )
                        times = measured.get((backend, length, mask, dtype, mode))
                        if times and all(p in times for p in PATHS):
                            speed = {p: _speed(times[p]) for p in PATHS}
                            # Ties (all out of memory) keep the rule's order.
                            row["paths"] = sorted(paths, key=lambda p: speed[p])
                            row["measured"] = True
                            row["cases"] = len(times["fused"])
                        else:
                            row.update(paths=paths, measured=False, rule=rule)
                        rows.append(row)
    return rows


def with_gpu_rows(table, rows):
    """`table` with its "gpu" rows replaced by `rows`; every other key and row kept."""
    kept = [r for r in table["rankings"] if r["device"] != "gpu"]
    return {**table, "rankings": kept + rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results", nargs="+", help="gpu_bench-<backend>.json files of benchmarks/gpu.py"
    )
    parser.add_argument("--table", default=TABLE)
    args = parser.parse_args(argv)
    results = None
    if args.results:
        results = {"rows": []}
        for path in args.results:
            with open(path, encoding="utf-8") as f:
                results["rows"] += json.load(f)["rows"]
    rows = gpu_rows(results)
    with open(args.table, encoding="utf-8") as f:
        table = json.load(f)
    table = with_gpu_rows(table, rows)
    root = os.path.dirname(HERE)
    table["gpu_source"] = (
        [os.path.relpath(os.path.abspath(p), root) for p in args.results]
        if args.results
        else "rule (no GPU run yet): benchmarks/gpu_rankings.py"
    )
    with open(args.table, "w", encoding="utf-8") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    measured = sum(r["measured"] for r in rows)
    print(f"wrote {len(rows)} gpu rows ({measured} measured) into {args.table}")


if __name__ == "__main__":
    main()
