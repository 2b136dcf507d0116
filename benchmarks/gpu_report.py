"""GPU results as a Markdown page: the tests, every measured case, the issue's targets.

Reads `benchmarks/results/gpu/` (written by `benchmarks/gpu_collect.py`):
`gpu_bench-<backend>.json`, `tests.json`, each run's `environment.txt`, and
`luong_attention/auto_table.json` (what "auto" picks now), and writes
`benchmarks/results/gpu/gpu.md`, which `docs/gpu.md` includes. Per backend
and case (dtype, D, T, mask; fwd+bwd) it gives the median ms of "auto", of
each path, of `keras.ops.dot_product_attention` (`flash_attention=None`
and `=True`) and of `keras.layers.Attention`, and checks the targets:

- "auto" within 1.1x of the fastest kernel the backend offers for the call
  (the faster of the two `dot_product_attention` calls that ran);
- at T = 4096, "auto" at most 0.3x `keras.layers.Attention`;
- at T = 16384, "auto" runs where `keras.layers.Attention` runs out of
  memory; where Attention runs, the ratio is reported.

"auto" in these columns is what the run measured, with the table of its
day; "auto now" is the path the current table picks for the case (training,
since the gradient is timed) and that path's time in the same case.

    python3 benchmarks/gpu_report.py [--results benchmarks/results/gpu]
"""

import argparse
import json
import os

from gpu import DIMS, DTYPES, IMPLS, MASKS, OURS
from gpu import LENGTHS as GPU_LENGTHS
from gpu_rankings import BENCH_MODES
from report import fmt_number, regime_of

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TABLE = os.path.join(ROOT, "luong_attention", "auto_table.json")
BACKENDS = {"jax": "JAX", "torch": "PyTorch", "tensorflow": "TensorFlow"}
PATHS = tuple(p for p in OURS if p != "auto")
KERNELS = ("keras_dpa", "keras_dpa_flash")
# The grid: benchmarks/gpu.py's defaults, shortest first.
LENGTHS = tuple(sorted(GPU_LENGTHS))
TARGET_KERNEL = 1.1  # auto / fastest kernel
TARGET_ATTENTION = 0.3  # auto / keras.layers.Attention at T = 4096
SLOW_FIRST_CALL_MS = 5000
STATUS = {"oom": "OOM", "unsupported": "n/a", "error": "error", "budget": "cut"}


def cases(results, mode="fwd+bwd"):
    """{(T, D, dtype, mask): {impl: row}} of the rows of `mode`; a later run's row wins."""
    index = {}
    for r in results["rows"]:
        if r["mode"] != mode:
            continue
        key = (r["T"], r["D"], r["dtype"], r["mask"])
        old = index.setdefault(key, {}).get(r["impl"])
        if old is None or old["status"] == "budget" or r["status"] != "budget":
            index[key][r["impl"]] = r
    return index


def _ms(row):
    return row["median_ms"] if row is not None and row["status"] == "ok" else None


def _cell(row):
    if row is None:
        return "—"  # this run did not time it
    return fmt_number(row["median_ms"]) if row["status"] == "ok" else STATUS[row["status"]]


def auto_pick(table, backend, length, mask, dtype, mode="fwd+bwd"):
    """The path "auto" now takes for a case of the benchmark on a GPU."""
    key = dict(
        backend=backend,
        device="gpu",
        length=regime_of(length, table["gpu_length_regimes"]),
        mask=mask,
        dtype="float32" if dtype == "float32" else "low",
        mode=BENCH_MODES[mode],
    )
    (row,) = [r for r in table["rankings"] if all(r[k] == v for k, v in key.items())]
    return row["paths"][0]  # every path supports the benchmark's calls


def verdicts(length, rows):
    """`(auto / kernel, kernel target, auto / Attention, Attention target)` of a case."""
    auto = _ms(rows.get("auto"))
    kernels = [_ms(rows.get(k)) for k in KERNELS]
    kernels = [ms for ms in kernels if ms is not None]
    kernel = min(kernels) if kernels else None
    vs_kernel = auto / kernel if auto is not None and kernel is not None else None
    kernel_ok = None if vs_kernel is None else vs_kernel <= TARGET_KERNEL
    attention_row = rows.get("keras_attention")
    attention = _ms(attention_row)
    vs_attention = auto / attention if auto is not None and attention is not None else None
    if length == 4096:
        attention_ok = None if vs_attention is None else vs_attention <= TARGET_ATTENTION
    elif length >= 16384 and attention_row is not None and attention_row["status"] == "oom":
        attention_ok = auto is not None
    else:
        attention_ok = None  # the ratio is reported, no target
    return vs_kernel, kernel_ok, vs_attention, attention_ok


def _yes_no(ok):
    return "—" if ok is None else "yes" if ok else "NO"


def backend_table(backend, index, table, mode="fwd+bwd"):
    """The table of one backend's cases of `mode`; `index` is `cases(results, mode)`."""
    measured = {k: v for k, v in index.items() if any(r["status"] != "budget" for r in v.values())}
    lines = [
        "| dtype | D | T | mask | auto | reference | fused | blocked | dpa | dpa flash "
        "| Attention | auto / kernel | ≤ 1.1x | auto / Attention | Attention target "
        "| auto now | run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    counts = {"kernel": [0, 0], "now": [0, 0], "attention": [0, 0]}
    order = sorted(
        measured,
        key=lambda k: (DTYPES.index(k[2]), k[1], LENGTHS.index(k[0]), MASKS.index(k[3])),
    )
    for key in order:
        length, dim, dtype, mask = key
        rows = measured[key]
        vs_kernel, kernel_ok, vs_attention, attention_ok = verdicts(length, rows)
        for name, ok in (("kernel", kernel_ok), ("attention", attention_ok)):
            if ok is not None:
                counts[name][0] += ok
                counts[name][1] += 1
        pick = auto_pick(table, backend, length, mask, dtype, mode)
        pick_ms = _ms(rows.get(pick))
        kernels = [_ms(rows.get(k)) for k in KERNELS if _ms(rows.get(k)) is not None]
        now = f"{pick} {fmt_number(pick_ms)}" if pick_ms is not None else f"{pick} (not timed)"
        if pick_ms is not None and kernels:
            now_ratio = pick_ms / min(kernels)
            now += f" ({now_ratio:.2f}x)"
            counts["now"][0] += now_ratio <= TARGET_KERNEL
            counts["now"][1] += 1
        if length == 4096:
            attention_target = f"{_yes_no(attention_ok)} (≤ {TARGET_ATTENTION})"
        elif length >= 16384 and attention_ok is not None:
            attention_target = f"{_yes_no(attention_ok)} (Attention OOM)"
        else:
            attention_target = "ratio only"
        runs = sorted({r["run"] for r in rows.values() if r["status"] != "budget"})
        lines.append(
            f"| {dtype} | {dim} | {length} | {mask} | "
            + " | ".join(_cell(rows.get(i)) for i in IMPLS)
            + f" | {fmt_number(vs_kernel) if vs_kernel is not None else '—'} | {_yes_no(kernel_ok)}"
            + f" | {fmt_number(vs_attention) if vs_attention is not None else '—'}"
            + f" | {attention_target} | {now} | {', '.join(runs)} |"
        )
    grid = {(t, d, dt, m) for t in LENGTHS for d in DIMS for dt in DTYPES for m in MASKS}
    cut = sorted(
        (k for k in index if k not in measured), key=lambda k: (k[1], DTYPES.index(k[2]), k[0])
    )
    never = grid - set(index)
    summary = [
        f"{len(measured)} of the {len(grid)} cases of the issue's grid measured "
        f"({len(cut)} cut by the time budget, {len(never)} never reached).",
        "",
        f"- auto within {TARGET_KERNEL}x of the fastest kernel: "
        f"{counts['kernel'][0]} of {counts['kernel'][1]} cases "
        f"(the path auto picks now: {counts['now'][0]} of {counts['now'][1]});",
        f"- Attention target (≤ {TARGET_ATTENTION}x at T = 4096; runs where Attention "
        f"runs out of memory at T = 16384): {counts['attention'][0]} of "
        f"{counts['attention'][1]} cases.",
    ]
    if cut:
        summary += ["", "Cut by the time budget (not run): " + _case_list(cut) + "."]
    return summary + [""] + lines


def _case_list(keys):
    groups = {}
    for length, dim, dtype, mask in keys:
        groups.setdefault((dim, dtype, length), []).append(mask)
    return "; ".join(
        f"D={dim} {dtype} T={length} ({', '.join(sorted(masks, key=MASKS.index))})"
        for (dim, dtype, length), masks in sorted(
            groups.items(), key=lambda g: (g[0][0], DTYPES.index(g[0][1]), g[0][2])
        )
    )


def measured_rows(table):
    """The GPU rows of `auto_table.json` ranked by these results, as a table."""
    lines = [
        "Every other GPU row follows the rule of `benchmarks/gpu_rankings.py`.",
        "",
        "| backend | T regime | mask | dtype | mode | ranking | placed by the rule | cases |",
        "|---|---|---|---|---|---|---|---|",
    ]
    regimes = {name: bound for bound, name in table["gpu_length_regimes"]}
    names = list(regimes)
    for r in table["rankings"]:
        if r["device"] != "gpu" or not r["measured"]:
            continue
        i = names.index(r["length"])
        low = regimes[names[i - 1]] + 1 if i else 1
        span = f"{low}–{regimes[r['length']]}" if regimes[r["length"]] else f"> {low - 1}"
        lines.append(
            f"| {BACKENDS[r['backend']]} | {span} | {r['mask']} | {r['dtype']} | {r['mode']} "
            f"| {' > '.join(r['paths'])} | {', '.join(r.get('unmeasured', [])) or '—'} "
            f"| {'; '.join(r['cases'])} |"
        )
    return lines


def tests_lines(folder):
    with open(os.path.join(folder, "tests.json"), encoding="utf-8") as f:
        tests = json.load(f)
    lines = [
        "| run | backend | passed | failed | errors | skipped | time | modules |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run, backends in tests.items():
        for backend, t in backends.items():
            modules = ", ".join(
                f"`{m.removeprefix('tests/')}` {n}" for m, n in t["modules"].items()
            )
            lines.append(
                f"| {run} | {BACKENDS[backend]} | {t['passed']} of {t['tests']} | "
                f"{t['failures']} | {t['errors']} | {t['skipped']} | {t['time_s']:.0f} s | "
                f"{modules} |"
            )
    return lines


def markdown(folder, table):
    results = {}
    for backend in BACKENDS:
        path = os.path.join(folder, f"gpu_bench-{backend}.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                results[backend] = json.load(f)
    headers = [(b, name, h) for b, r in results.items() for name, h in r["runs"].items()]
    devices = sorted({h["device_name"] for _, _, h in headers})
    rel = os.path.relpath(folder, ROOT)
    lines = [
        f"Generated by `benchmarks/gpu_report.py` from `{rel}/`. Device: "
        f"**{', '.join(devices)}**. Milliseconds, median of each run's repeats after a "
        "first (compiling) call; B = 4, 8 heads, inputs `(batch, heads, T, D)`, forward "
        "and backward (the gradients with respect to query, key and value against a fixed "
        "dense cotangent, as `benchmarks/grid.py` pulls back; the runs listed below as "
        "taking the gradient of the output's sum predate it).",
        "",
    ]
    environments = sorted({h["environment"] for _, _, h in headers if h.get("environment")})
    for environment in environments:
        with open(os.path.join(folder, environment), encoding="utf-8") as f:
            text = f.read().strip().splitlines()
        lines += [f"Environment (`{environment}`):", "", "```text", *text, "```", ""]
    lines += ["Runs:", ""]
    for backend, name, h in headers:
        repeats = sorted(
            {r["repeats"] for r in results[backend]["rows"] if r["run"] == name and "repeats" in r}
        )
        rows = [r for r in results[backend]["rows"] if r["run"] == name]
        impls = [i for i in IMPLS if any(r["impl"] == i and r["status"] != "budget" for r in rows)]
        timed = sum(r["status"] != "budget" for r in rows)
        lines.append(
            f"- {name}, {BACKENDS[backend]}: started {h['when']}, {h['device_name']}, Keras "
            f"{h['keras']}, Python {h['python']}; {timed} rows timed"
            + (f" ({h['rows_from_log']} of them from the log)" if h["rows_from_log"] else "")
            + f", repeats {', '.join(map(str, repeats))}; timed: {', '.join(impls)}."
        )
    caveats = {}
    for backend, name, h in headers:
        for caveat in h["caveats"]:
            caveats.setdefault(caveat, []).append(f"{name} {BACKENDS[backend]}")
    for caveat, where in caveats.items():
        every = len(where) == len(headers)
        lines.append(f"- {'Every run' if every else ', '.join(where)}: {caveat}.")
    slow = [
        (b, r)
        for b, res in results.items()
        for r in res["rows"]
        if r.get("first_call_ms", 0) > SLOW_FIRST_CALL_MS
    ]
    if slow:
        lines += ["", f"First (compiling) calls over {SLOW_FIRST_CALL_MS / 1000:.0f} s:", ""]
        lines += [
            f"- {BACKENDS[b]} {r['impl']}, {r['dtype']} D={r['D']} T={r['T']} {r['mask']}: "
            f"{r['first_call_ms'] / 1000:.1f} s ({r['run']})"
            for b, r in slow
        ]
    lines += [
        "",
        "#### Tests",
        "",
        *tests_lines(folder),
        "",
        "Columns: `dpa` is `keras.ops.dot_product_attention` with `flash_attention=None`, "
        "`dpa flash` with `flash_attention=True` (n/a: the backend refused), `Attention` "
        "is `keras.layers.Attention`; OOM: out of memory; cut: not run, the run's time was "
        "spent; — : not timed in this run. The fastest kernel is the faster `dpa` column. "
        "auto: as the run measured it, with the `auto_table.json` of that day; auto now: the "
        "path the current `auto_table.json` picks, its time in this case and its ratio to the "
        "fastest kernel.",
    ]
    for backend, r in results.items():
        lines += ["", f"#### {BACKENDS[backend]}", "", *backend_table(backend, cases(r), table)]
        forward = cases(r, "fwd")
        if forward:
            lines += [
                "",
                f"#### {BACKENDS[backend]}, forward pass alone",
                "",
                "Inference: `training=False`, no gradient. The issue's targets are set for "
                "the forward and backward pass; the same ratios are shown here for comparison.",
                "",
                *backend_table(backend, forward, table, "fwd"),
            ]
    lines += ["", "#### Measured rows of the auto table", "", *measured_rows(table)]
    missing = [BACKENDS[b] for b in BACKENDS if b not in results]
    if missing:
        lines += ["", f"Not run on the GPU: {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=os.path.join(HERE, "results", "gpu"))
    parser.add_argument("--table", default=TABLE)
    args = parser.parse_args(argv)
    with open(args.table, encoding="utf-8") as f:
        table = json.load(f)
    out = os.path.join(args.results, "gpu.md")
    with open(out, "w", encoding="utf-8") as f:
        f.write(markdown(os.path.abspath(args.results), table))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
