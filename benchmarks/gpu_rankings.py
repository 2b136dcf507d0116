"""The GPU rows of `luong_attention/auto_table.json`: measured, or from the rule.

`gpu_rows(results)` returns one row per (backend, GPU length regime, mask
kind, dtype, mode) for device "gpu". The table's `"gpu_length_regimes"`
are the CPU's up to T = 2048, then "4096" (T <= 8192) and "16384" (above):
a GPU's choice between the reference and blocked paths changes between
the two long lengths the GPU benchmark runs (see the rule below).

Where `results` (rows of `benchmarks/gpu.py`, as
`benchmarks/results/gpu/gpu_bench-<backend>.json` holds them) measured
paths in a row's regime, the row is `"measured": true` and ranks them:
two paths are compared on the cases (T, D, dtype) that measured both; the
one that ran out of memory or failed in fewer of them wins, else the one
with the smaller geometric mean of the time ratios. Paths are ordered by
the number of paths they beat (ties: the rule's order); a path no case
measured follows them in the rule's order (named in `"unmeasured"`), and
a path that failed in every case it ran comes last. `"cases"` names the
cases and runs. Rows with status "budget" were not run and count for
nothing. Every other row follows the rule and says `"measured": false`
with the rule it applied.

Which backend kernel takes which call, read from Keras 3.15's
`dot_product_attention` on each backend (what `"fused"` calls):

- PyTorch: `scaled_dot_product_attention` on CUDA runs the flash kernel
  (float16/bfloat16, no mask; `is_causal` for a plain causal call) or the
  memory-efficient kernel (float32, or a boolean mask, which Keras turns
  into an additive one): every dtype and mask has a kernel, so "fused"
  first.
- JAX: Keras asks for cuDNN's flash attention when the inputs are
  float16/bfloat16 (cuDNN takes no float32; float32 runs XLA's dense
  attention). cuDNN gets `is_causal` natively, but Keras's op has no
  sequence-lengths argument: a padding mask reaches cuDNN as a dense
  additive bias, and one broadcast over the query rows (`(B, 1, 1, S)`)
  is refused there, so Keras falls back to XLA; the fused path therefore
  hands the op the mask with every row (`kernel_options`'
  `fused_full_mask`). So "fused" first for float16/bfloat16 without a
  mask or with a plain causal one at any length, and with a padding mask
  where a `(T, T)` bias fits (T <= 8192); otherwise no kernel.
- TensorFlow: an einsum, no flash kernel.

Without a kernel: "reference" up to the "4096" regime (T <= 8192),
"blocked" above. Until the H100 runs (`benchmarks/results/gpu/`, table
in `gpu.md`) the rule switched at T = 2048, as on the CPU. On the GPU,
wherever both ran at T = 4096, the reference path was faster than the
blocked one (2 to 2.5x on PyTorch, 1.4 to 1.8x on JAX, where the blocked
path also compiled for up to 37 s). These runs differentiated the blocked
path through its forward pass, not its memory-saving backward, which
recomputes the forward and so is not expected to be faster. So "blocked"
stays only where the reference path's memory needs it: its float32 (T, T)
scores take B*H*T*T*4 bytes, 2 GiB for B*H = 32 at T = 4096 and 8 GiB at
T = 8192, which a GPU holds; at T = 16384 they take 32 GiB, and PyTorch's
reference path ran out of memory there on the 80 GB H100. The switch sits
at 8192, twice the longest length where the reference path ran, as each
CPU regime holds lengths up to twice its name. TensorFlow was not run on
a GPU; its rows follow the same rule.

    python benchmarks/gpu_rankings.py                      # rule rows into the table
    python benchmarks/gpu_rankings.py --results benchmarks/results/gpu/gpu_bench-*.json
"""

import argparse
import json
import math
import os
import statistics

from report import BACKENDS, MASKS, PATHS, regime_of
from report import MODES as BENCH_MODES  # the benchmark's mode names -> the table's

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TABLE = os.path.join(ROOT, "luong_attention", "auto_table.json")

DTYPES = ("float32", "low")
MODES = ("train", "infer")
LOW_PRECISION = ("float16", "bfloat16")
# max(Tq, Tv) <= bound -> regime: the CPU's regimes up to 2048, then the
# GPU benchmark's two long lengths, each holding lengths up to twice its name.
GPU_LENGTH_REGIMES = [
    [32, "16"],
    [128, "64"],
    [512, "256"],
    [2048, "1024"],
    [8192, "4096"],
    [None, "16384"],
]
# Regimes where the reference path's float32 (T, T) scores fit a GPU.
DENSE_REGIMES = ("16", "64", "256", "1024", "4096")


def kernel_rule(backend, mask, dtype, *, dense):
    """`(has_kernel, reason)`: whether the backend's fused op has a GPU kernel for the call.

    `dense`: the call's length regime is one where a `(T, T)` array fits
    (`DENSE_REGIMES`).
    """
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
        if dense:
            return True, (
                "jax: cuDNN flash attention with the padding mask as a dense (T, T) bias, "
                "which the fused path gives it whole"
            )
        return False, (
            "jax: Keras's op gives cuDNN no sequence lengths, and a padding mask as a dense "
            "(T, T) bias grows with T squared"
        )
    if backend == "tensorflow":
        return False, "tensorflow: Keras's op is an einsum, no flash kernel"
    raise ValueError(f"Unknown backend {backend!r}; expected one of {BACKENDS}")


def rule_paths(backend, length, mask, dtype):
    """`(paths, rule)`: the ranking the rule gives, fastest first, and why."""
    dense = length in DENSE_REGIMES
    has_kernel, reason = kernel_rule(backend, mask, dtype, dense=dense)
    fallback = ["reference", "blocked"] if dense else ["blocked", "reference"]
    if has_kernel:
        return ["fused", *fallback], reason
    where = "T <= 8192: reference" if dense else "T > 8192: blocked"
    return [*fallback, "fused"], f"{reason}; {where}"


def measured_cases(rows):
    """{(backend, regime, mask, dtype, mode): {case: {path: ms, or inf if it failed}}}.

    A case is `(T, D, dtype, run)`; of two rows of the same case, path and
    run, the later wins. Rows not run ("budget") are left out.
    """
    measured = {}
    for r in rows:
        if r.get("device") != "gpu" or r["impl"] not in PATHS or r["mode"] not in BENCH_MODES:
            continue
        if r["status"] == "budget":
            continue
        dtype = "low" if r["dtype"] in LOW_PRECISION else "float32"
        key = (
            r["backend"],
            regime_of(r["T"], GPU_LENGTH_REGIMES),
            r["mask"],
            dtype,
            BENCH_MODES[r["mode"]],
        )
        case = (r["T"], r["D"], r["dtype"], r.get("run", ""))
        ms = r["median_ms"] if r["status"] == "ok" else math.inf
        measured.setdefault(key, {}).setdefault(case, {})[r["impl"]] = ms
    return measured


def beats(a, b, cases):
    """Whether path `a` beats `b` on the cases that measured both; None for a tie."""
    both = [c for c in cases.values() if a in c and b in c]
    failed_a = sum(math.isinf(c[a]) for c in both)
    failed_b = sum(math.isinf(c[b]) for c in both)
    if failed_a != failed_b:
        return failed_a < failed_b
    ran = [c for c in both if not (math.isinf(c[a]) or math.isinf(c[b]))]
    if not ran:
        return None
    log_ratio = statistics.fmean(math.log(c[a] / c[b]) for c in ran)
    return None if log_ratio == 0 else log_ratio < 0


def measured_order(cases, rule_order):
    """`(paths, unmeasured)`: the ranking of `cases` (see the module docstring)."""
    ran = {p for c in cases.values() for p, ms in c.items() if not math.isinf(ms)}
    seen = {p for c in cases.values() for p in c}
    wins = {p: sum(beats(p, q, cases) is True for q in seen if q != p) for p in seen}
    ranked = sorted(ran, key=lambda p: (-wins[p], rule_order.index(p)))
    unmeasured = [p for p in rule_order if p not in seen]
    failed = sorted(seen - ran, key=rule_order.index)
    return ranked + unmeasured + failed, unmeasured


def _case_name(case):
    length, dim, dtype, run = case
    return f"T={length} D={dim} {dtype}" + (f" ({run})" if run else "")


def gpu_rows(rows=()):
    """The device "gpu" rows of the table, for every backend and GPU regime.

    `rows`: result rows of `benchmarks/gpu.py` (of any backends and runs).
    """
    measured = measured_cases(rows)
    table_rows = []
    for backend in BACKENDS:
        for _, length in GPU_LENGTH_REGIMES:
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
                        cases = measured.get((backend, length, mask, dtype, mode))
                        if cases:
                            ranked, unmeasured = measured_order(cases, paths)
                            row.update(paths=ranked, measured=True)
                            row["cases"] = [_case_name(c) for c in sorted(cases)]
                            if unmeasured:
                                row.update(unmeasured=unmeasured, rule=rule)
                        else:
                            row.update(paths=paths, measured=False, rule=rule)
                        table_rows.append(row)
    return table_rows


def with_gpu_rows(table, rows, source):
    """`table` with its "gpu" rows and GPU keys replaced; every other key and row kept."""
    kept = [r for r in table["rankings"] if r["device"] != "gpu"]
    # Keys keep their places (benchmarks/report.py writes the GPU keys last).
    return {
        **table,
        "rankings": kept + rows,
        "gpu_length_regimes": GPU_LENGTH_REGIMES,
        "gpu_source": source,
    }


def read_rows(paths):
    """The rows of `gpu_bench-<backend>.json` files, in the order given."""
    rows = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            rows += json.load(f)["rows"]
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results", nargs="+", help="gpu_bench-<backend>.json files of benchmarks/gpu.py"
    )
    parser.add_argument("--table", default=TABLE)
    args = parser.parse_args(argv)
    rows = gpu_rows(read_rows(args.results or ()))
    with open(args.table, encoding="utf-8") as f:
        table = json.load(f)
    source = (
        [os.path.relpath(os.path.abspath(p), ROOT) for p in args.results]
        if args.results
        else "rule (no GPU results given): benchmarks/gpu_rankings.py"
    )
    table = with_gpu_rows(table, rows, source)
    with open(args.table, "w", encoding="utf-8") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    measured = sum(r["measured"] for r in rows)
    print(f"wrote {len(rows)} gpu rows ({measured} measured) into {args.table}")


if __name__ == "__main__":
    main()
