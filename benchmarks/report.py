"""Tables, plot and "auto" ranking from the benchmark grid's results.

Reads `benchmarks/results/grid.json` (written by `benchmarks/grid.py`) and writes

- `benchmarks/results/grid.md`: per backend, every cell in ms with the ratios
  ours("auto") / `keras.layers.Attention` and / `keras.ops.dot_product_attention`
  and whether the target is met; the useful FLOP rate at T = 4096 causal; the
  end-to-end training steps; the per-call overhead; what zeroing padded
  keys and values costs at short lengths;
- `benchmarks/results/grid.png`: auto / `keras.layers.Attention` against T;
- `luong_attention/auto_table.json`: for every backend, device, length
  regime, mask, dtype ("low": the bfloat16 cells) and mode, our explicit
  paths ranked by measured median, fastest first (geometric mean over D).
  A regime the run did not measure (a `--quick` run) takes the ranking of
  the nearest measured one and says so in `"measured_length"`. Its
  `"blocked_block_sizes"` give the blocked path's smallest block per
  backend, device, length regime, mode and causal mask or not, from the
  blocks part (a run without it keeps the table's earlier ones). Written
  only when the results cover all three backends, so a one-backend run
  cannot drop the others from the table.

    python benchmarks/report.py [--results benchmarks/results/grid.json]
"""

import argparse
import json
import math
import os
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BACKENDS = ("jax", "torch", "tensorflow")
PATHS = ("reference", "fused", "blocked")
VARIANTS = ("auto", *PATHS, "keras_attention", "keras_dpa")
PARTS = ("grid", "matmul", "e2e", "overhead", "guard", "skip", "blocks")  # as in grid.py
# The variants of grid.py's skip part, in the columns of its table.
SKIP_VARIANTS = ("auto", "auto_skip", "keras_attention", "keras_dpa")
MASKS = ("none", "padding", "causal", "causal+padding")
MODES = {"fwd": "infer", "fwd+bwd": "train"}
DTYPES = {"float32": "float32", "bfloat16": "low", "float16": "low"}
# max(Tq, Tv) <= bound -> regime; the names are the grid's lengths.
LENGTH_REGIMES = [[32, "16"], [128, "64"], [512, "256"], [2048, "1024"], [None, "4096"]]
TARGET = 1.0  # ours("auto") / keras.layers.Attention, every cell
TARGET_LONG_CAUSAL = 0.5  # at T = 4096, causal
TARGET_FLOP_RATE = 0.5  # of the backend's own float32 matmul rate
TARGET_OVERHEAD = 0.10  # validation and dispatch, fraction of the call
INTERVAL_LEVEL = 0.95  # of the confidence interval beside a ratio against Keras
# The blocked path's default smallest block (BlockedOptions.min_block_size,
# which this stdlib-only module cannot import; tests/test_report.py checks);
# the blocks part replaces it in a regime only with a size faster by more
# than BLOCK_MARGIN, so that noise between equal sizes leaves it alone.
DEFAULT_BLOCK = 256
BLOCK_MARGIN = 0.05


def regime_of(length, regimes=LENGTH_REGIMES):
    """The name of the first `[bound, name]` of `regimes` with `length <= bound` (None: any)."""
    for bound, name in regimes:
        if bound is None or length <= bound:
            return name
    raise ValueError(f"Invalid value for argument length. Expected an int. Received: {length!r}")


def cell_index(results):
    """{(backend, device, T, B, D, mask, mode, dtype): {variant: row}}."""
    index = {}
    for r in results["grid"]:
        key = (r["backend"], r["device"], r["T"], r["B"], r["D"], r["mask"], r["mode"], r["dtype"])
        index.setdefault(key, {})[r["variant"]] = r
    return index


def _ms(row):
    return None if row is None or row["status"] != "ok" else row["median_ms"]


def fmt_number(x):
    """`x` with three significant figures or so (no exponent)."""
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _fmt(x):
    return "unsupported" if x is None else fmt_number(x)


def _ratio(a, b):
    return None if a is None or b is None else a / b


def paired_ratios(row, reference):
    """`row`'s time over `reference`'s in each round (paired in time, so load
    that slows one round slows both); None if either is missing or has no
    samples (results written before grid.py kept them)."""
    if not _both_measured(row, reference):
        return None
    a, b = row.get("samples_ms"), reference.get("samples_ms")
    if a and b and len(a) == len(b):
        return [x / y for x, y in zip(a, b, strict=True)]
    return None


def paired_ratio(row, reference):
    """`row`'s time over `reference`'s: the median of `paired_ratios`, or the
    ratio of the medians for rows without samples. None if either is missing."""
    ratios = paired_ratios(row, reference)
    if ratios is not None:
        return statistics.median(ratios)
    if not _both_measured(row, reference):
        return None
    return row["median_ms"] / reference["median_ms"]


def _both_measured(row, reference):
    return all(r is not None and r.get("status", "ok") == "ok" for r in (row, reference))


def median_interval(values, level=INTERVAL_LEVEL):
    """A distribution-free confidence interval for the median of `values`.

    The k-th smallest and k-th largest value, for the largest k such that
    the true median lies outside them with probability at most `1 - level`
    (the number of values below the median is Binomial(n, 1/2)), so it
    assumes nothing about the ratios' spread. None when there are too few
    values for any such k (5 or fewer at 95 %).
    """
    if not values:
        return None
    n, xs = len(values), sorted(values)
    below, k = 0.0, 0  # P(fewer than k of n values lie below the median)
    while 2 * (below + math.comb(n, k) / 2**n) <= 1 - level:
        below += math.comb(n, k) / 2**n
        k += 1
    return None if k == 0 else (xs[k - 1], xs[n - k])


def _fmt_interval(interval):
    return "—" if interval is None else f"{fmt_number(interval[0])}–{fmt_number(interval[1])}"


def target_for(length, mask):
    return TARGET_LONG_CAUSAL if length >= 4096 and mask == "causal" else TARGET


def grid_tables(results):
    lines = []
    index = cell_index(results)
    order = sorted(
        index,
        key=lambda k: (
            BACKENDS.index(k[0]),
            k[1],
            k[7] != "float32",
            k[6],
            MASKS.index(k[5]),
            k[4],
            k[2],
        ),
    )
    current = None
    met = {}
    for key in order:
        backend, device, length, batch, dim, mask, mode, dtype = key
        if (backend, device, dtype) != current:
            current = (backend, device, dtype)
            lines += [
                "",
                f"##### {backend}, {device}, {dtype}",
                "",
                "| mode | mask | D | T | B | auto | reference | fused | blocked | Attention "
                "| dot_product_attention | auto / Attention | 95 % interval | auto / dpa "
                "| target met |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
        rows = index[key]
        ms = {v: _ms(rows.get(v)) for v in VARIANTS}
        auto, keras_row = rows.get("auto"), rows.get("keras_attention")
        vs_keras = paired_ratio(auto, keras_row)
        interval = median_interval(paired_ratios(auto, keras_row))
        vs_dpa = paired_ratio(auto, rows.get("keras_dpa"))
        target = target_for(length, mask)
        ok = vs_keras is not None and vs_keras <= target
        counts = met.setdefault((backend, dtype), {"cells": 0, "met": 0, "noise": 0, "above": 0})
        counts["cells"] += 1
        counts["met"] += ok
        if not ok and interval is not None:
            counts["noise" if interval[0] <= target else "above"] += 1
        lines.append(
            f"| {mode} | {mask} | {dim} | {length} | {batch} | "
            + " | ".join(_fmt(ms[v]) for v in VARIANTS)
            + f" | {_fmt(vs_keras)} | {_fmt_interval(interval)} | {_fmt(vs_dpa)} "
            f"| {'yes' if ok else 'NO'} (≤ {target}) |"
        )
    summary = [
        "",
        "Cells where auto / Attention meets its target, per backend and dtype. Beside each ratio, a "
        f"{INTERVAL_LEVEL:.0%} confidence interval for it (the median of the per-round "
        "ratios), distribution-free, from that cell's rounds (none for 5 rounds or fewer). "
        "A miss whose interval reaches down to the target is one this run cannot tell "
        "from noise; a miss whose interval lies wholly above it is slower beyond the noise.",
        "",
    ]
    for (b, dtype), c in met.items():
        line = f"- {b}, {dtype}: {c['met']} of {c['cells']}"
        misses = c["cells"] - c["met"]
        if misses:
            line += f"; misses: {c['noise']} within noise, {c['above']} above it"
            if misses > c["noise"] + c["above"]:
                line += f", {misses - c['noise'] - c['above']} without an interval"
        summary.append(line)
    return summary + lines


def flop_rate_table(results):
    """Useful FLOP rate of auto at T = 4096, causal, fwd+bwd (6·B·T²·D)."""
    matmul = {(r["backend"], r["device"]): r["gflops"] for r in results["matmul"]}
    lines = [
        "",
        "#### Useful FLOP rate at T = 4096, causal, fwd+bwd, float32",
        "",
        "Useful work 6·B·T²·D (half of the full score matrix, forward and backward) over auto's "
        "median, against the backend's float32 rate on one 2048³ matrix product.",
        "",
        "| backend | device | D | auto ms | GFLOP/s | matmul GFLOP/s | fraction | target met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    found = False
    for r in results["grid"]:
        if (r["T"], r["mask"], r["mode"], r["dtype"], r["variant"]) != (
            4096,
            "causal",
            "fwd+bwd",
            "float32",
            "auto",
        ) or r["status"] != "ok":
            continue
        found = True
        rate = 6 * r["B"] * r["T"] ** 2 * r["D"] / (r["median_ms"] / 1000) / 1e9
        peak = matmul.get((r["backend"], r["device"]))
        frac = _ratio(rate, peak)
        ok = frac is not None and frac >= TARGET_FLOP_RATE
        lines.append(
            f"| {r['backend']} | {r['device']} | {r['D']} | {_fmt(r['median_ms'])} | {rate:.1f} "
            f"| {_fmt(peak)} | {_fmt(frac)} | {'yes' if ok else 'NO'} (≥ {TARGET_FLOP_RATE}) |"
        )
    if not found:
        lines.append("| (no T = 4096 cell in this run) | | | | | | | |")
    return lines


def e2e_table(results):
    lines = [
        "",
        "#### End to end: training steps per second",
        "",
        "`model.train_on_batch` on a batch of 64 from the example's own generator; "
        "the same model with `keras.layers.Attention` and with `LuongAttention`. "
        "Time ratio: LuongAttention's time per step over Attention's, the median over "
        "rounds of the two samples' ratio in each round, with its confidence interval "
        "as in the grid.",
        "",
        "| backend | device | example | Attention steps/s | LuongAttention steps/s "
        "| time ratio | 95 % interval | target met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    index = {(r["backend"], r["device"], r["example"], r["variant"]): r for r in results["e2e"]}
    for backend, device, example in sorted(
        {k[:3] for k in index}, key=lambda k: (BACKENDS.index(k[0]), k[1], k[2])
    ):
        keras_row = index[backend, device, example, "keras_attention"]
        ours_row = index[backend, device, example, "luong_attention"]
        keras_sps, ours_sps = keras_row["steps_per_s"], ours_row["steps_per_s"]
        # Time per step, ours over Attention's (rows without samples: the
        # ratio of the medians, Attention steps/s over ours).
        ours = {"samples_ms": ours_row.get("samples_ms"), "median_ms": 1000 / ours_sps}
        theirs = {"samples_ms": keras_row.get("samples_ms"), "median_ms": 1000 / keras_sps}
        ratio = paired_ratio(ours, theirs)
        interval = median_interval(paired_ratios(ours, theirs))
        lines.append(
            f"| {backend} | {device} | {example} | {keras_sps:.1f} | {ours_sps:.1f} "
            f"| {ratio:.2f} | {_fmt_interval(interval)} "
            f"| {'yes' if ratio <= TARGET else 'NO'} (≤ {TARGET}) |"
        )
    return lines


def overhead_fraction(row, name, base):
    """What `base` leaves of variant `name`'s time, as a fraction of it:
    1 - base / name, the ratio paired by round where the row keeps its
    samples (as every ratio against Keras is), else of the medians."""
    return 1 - paired_ratio(*_overhead_pair(row, name, base))


def overhead_interval(row, name, base):
    """The `median_interval` of `overhead_fraction`'s per-round fractions
    (low, high); None where the row keeps no samples or too few rounds."""
    interval = median_interval(paired_ratios(*_overhead_pair(row, name, base)))
    return None if interval is None else (1 - interval[1], 1 - interval[0])


def _overhead_pair(row, name, base):
    """Variants `base` and `name` of an overhead row, as rows of their own."""
    ms, samples = row["median_ms"], row.get("samples_ms", {})
    return tuple({"median_ms": ms[v], "samples_ms": samples.get(v)} for v in (base, name))


def overhead_lines(results):
    lines = ["", "#### Per-call overhead (eager PyTorch)", ""]
    for r in results["overhead"]:
        ms = r["median_ms"]
        with_guard = overhead_fraction(r, "function_auto", "kernel")
        line = (
            f"- {r['backend']}, {r['device']}, T={r['T']}, B={r['B']}, D={r['D']}, {r['mask']}, "
            f"{r['mode']}, {r['rounds']} rounds: kernel alone {_fmt(ms['kernel'])} ms; "
            f"`luong_attention(...)` {_fmt(ms['function_auto'])} ms (reference path "
            f"{_fmt(ms['function_reference'])}); layer {_fmt(ms['layer_auto'])} ms (reference "
            f"{_fmt(ms['layer_reference'])}); `keras.layers.Attention` "
            f"{_fmt(ms['keras_attention'])} ms. "
        )
        if "kernel_same_ops" in ms:
            # The ops written out are the reference path's, so they are held
            # against the function on that path ("auto" may take another).
            dispatch = overhead_fraction(r, "function_reference", "kernel_same_ops")
            interval = overhead_interval(r, "function_reference", "kernel_same_ops")
            ok = dispatch <= TARGET_OVERHEAD
            if r.get("same_ops") == "default":
                extra_ops = "zeroing rows without a key"
                same_ops = "rows without a key zeroed as well"
            else:  # rows from before nan_safe_padding, when the default zeroed padding
                extra_ops = "zeroing the padded keys and values"
                same_ops = "padded keys and values zeroed as well"
            line += (
                f"Against Keras's ops alone, validation, dispatch and {extra_ops} "
                f"are {with_guard:.0%} of the function call; against the "
                f"reference path's tensor ops written out ({_fmt(ms['kernel_same_ops'])} ms: "
                f"{same_ops}), validation and dispatch alone are "
                f"{dispatch:.0%} of the function call on that path"
                + (
                    ""
                    if interval is None
                    else f" ({INTERVAL_LEVEL:.0%} interval {interval[0]:.0%} to {interval[1]:.0%})"
                )
                + f" ({'target met' if ok else 'target NOT met'}: ≤ {TARGET_OVERHEAD:.0%})"
            )
        else:
            # Older result files have no written-out ops: only the figure
            # with the zeroing in it, held against the target.
            ok = with_guard <= TARGET_OVERHEAD
            line += (
                f"Validation, dispatch and zeroing the padded keys and values: "
                f"{with_guard:.0%} of the function call "
                f"({'target met' if ok else 'target NOT met'}: ≤ {TARGET_OVERHEAD:.0%})"
            )
        layer = overhead_fraction(r, "layer_auto", "kernel")
        line += f"; with Keras's layer call: {layer:.0%} of the layer call."
        lines.append(line)
    if not results["overhead"]:
        lines.append("- (not measured in this run)")
    return lines


def guard_table(results):
    """Keras's attention math with padded keys and values zeroed, over without."""
    lines = [
        "",
        "#### What zeroing padded keys and values costs",
        "",
        "The math of `keras.layers.Attention` (padding mask, B = 32) written with "
        "keras.ops, with the padded keys and values zeroed first (what keeps a NaN in "
        "padding out of the output and the gradients), over the same math without; "
        "compiled as in the grid.",
        "",
        "| backend | device | T | D | mode | Keras's math | with keys and values zeroed "
        "| zeroed / Keras's math |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = results.get("guard", [])
    for r in rows:
        ms, samples = r["median_ms"], r["samples_ms"]
        ratio = paired_ratio(
            {"median_ms": ms["zeroed"], "samples_ms": samples["zeroed"]},
            {"median_ms": ms["keras_math"], "samples_ms": samples["keras_math"]},
        )
        lines.append(
            f"| {r['backend']} | {r['device']} | {r['T']} | {r['D']} | {r['mode']} "
            f"| {_fmt(ms['keras_math'])} | {_fmt(ms['zeroed'])} | {ratio:.2f} |"
        )
    if not rows:
        lines.append("| (not measured in this run) | | | | | | | |")
    return lines


def skip_table(results):
    """`skip_padded_keys` on padded batches: its time over auto's, Attention's and dpa's."""
    lines = [
        "",
        "#### Skipping padding (`skip_padded_keys=True`, eager PyTorch)",
        "",
        "B = 32, D = 128, lengths drawn uniformly in [T/4, T], in random order or sorted "
        "by length; a value mask alone, or a query mask too; the same masks for every "
        "variant. Real pairs: the (query, key) pairs that are not padding, of all; the work "
        "that skipping could at best keep. Ratios are paired by round as in the grid, "
        "with the 95 % interval of the first.",
        "",
        "| T | masks | order | mode | real pairs | auto | auto, skipping | Attention "
        "| dot_product_attention | skipping / auto | 95 % interval | skipping / Attention "
        "| skipping / dpa |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results.get("skip", []):
        ms, samples = r["median_ms"], r["samples_ms"]
        row = {v: {"median_ms": ms[v], "samples_ms": samples[v]} for v in ms}
        skipping = row["auto_skip"]
        lines.append(
            f"| {r['T']} | {r['masks']} | {r['order']} | {r['mode']} | {r['real_pairs']:.2f} | "
            + " | ".join(_fmt(ms[v]) for v in SKIP_VARIANTS)
            + f" | {_fmt(paired_ratio(skipping, row['auto']))} "
            f"| {_fmt_interval(median_interval(paired_ratios(skipping, row['auto'])))} "
            f"| {_fmt(paired_ratio(skipping, row['keras_attention']))} "
            f"| {_fmt(paired_ratio(skipping, row['keras_dpa']))} |"
        )
    if not results.get("skip"):
        lines.append("| (not measured in this run) |" + " |" * 12)
    return lines


def block_speeds(results):
    """{(backend, device, regime, mode, causal): {size: geometric mean ms over D}}.

    Without a causal mask every block computes all its keys, so a padding
    mask (which changes no block's work) goes with no mask; under a causal
    mask, larger blocks also compute more of the tiles it cuts through.
    """
    cells = {}
    for r in results.get("blocks", []):
        causal = "causal" in r["mask"]
        key = (r["backend"], r["device"], regime_of(r["T"]), MODES[r["mode"]], causal)
        cells.setdefault(key, {}).setdefault(r["min_block_size"], []).append(r["median_ms"])
    return {key: {size: _geomean(ms) for size, ms in sizes.items()} for key, sizes in cells.items()}


def chosen_block(speeds):
    """The size of `{size: ms}` the blocked path takes: the default block,
    unless another is faster by more than `BLOCK_MARGIN`."""
    fastest = min(speeds, key=lambda size: (speeds[size], size))
    if DEFAULT_BLOCK in speeds and speeds[fastest] > (1 - BLOCK_MARGIN) * speeds[DEFAULT_BLOCK]:
        return DEFAULT_BLOCK
    return fastest


def block_sizes(results):
    """The auto table's `"blocked_block_sizes"` rows, from the blocks part."""
    return [
        dict(
            backend=backend,
            device=device,
            length=regime,
            mode=mode,
            causal=causal,
            min_block_size=chosen_block(speeds),
        )
        for (backend, device, regime, mode, causal), speeds in sorted(block_speeds(results).items())
    ]


def blocks_table(results):
    """The blocked path's time per smallest block, against the default block."""
    speeds = block_speeds(results)
    sizes = sorted({size for by_size in speeds.values() for size in by_size})
    lines = [
        "",
        "#### Block size of the blocked path",
        "",
        "Per backend, length regime, mode and causal mask or not: the blocked path with "
        "`BlockedOptions(min_block_size=n)`, the geometric mean over the D measured of the "
        f"median ms, and in brackets its ratio to the default block's ({DEFAULT_BLOCK}). "
        "Chosen: the size the blocked path takes with no `blocked_options` (the "
        f"default, unless another is more than {BLOCK_MARGIN:.0%} faster).",
        "",
        "| backend | device | T | mode | causal | "
        + " | ".join(f"{n}" for n in sizes)
        + " | chosen |",
        "|---|---|---|---|---|" + "---|" * len(sizes) + "---|",
    ]
    for (backend, device, regime, mode, causal), by_size in sorted(speeds.items()):
        base = by_size.get(DEFAULT_BLOCK)
        cells = [
            "—"
            if n not in by_size
            else f"{fmt_number(by_size[n])}" + (f" ({by_size[n] / base:.2f})" if base else "")
            for n in sizes
        ]
        lines.append(
            f"| {backend} | {device} | {regime} | {mode} | {'yes' if causal else 'no'} | "
            + " | ".join(cells)
            + f" | {chosen_block(by_size)} |"
        )
    if not speeds:
        lines.append("| (not measured in this run) |" + " |" * 5)
    return lines


def _rounds(spec):
    """How many rounds a cell got, in words."""
    if not spec.get("min_cell_ms"):
        return str(spec["rounds"])
    return (
        f"{spec['rounds']} or more (up to {spec['max_rounds']}, until each variant's "
        f"samples add up to {spec['min_cell_ms']:g} ms)"
    )


def _omp_policy(machine):
    """How PyTorch's OpenMP threads waited during the run, in words."""
    if "omp_wait_policy" not in machine:
        # Runs before the key was recorded set PASSIVE for PyTorch's worker.
        return "OpenMP wait policy: PASSIVE (grid.py set it for PyTorch's worker then)."
    policy = machine["omp_wait_policy"]
    return f"OpenMP wait policy: {policy or 'the default (OMP_WAIT_POLICY unset)'}."


def _backward(machine):
    """What the run's fwd+bwd calls pulled back through the output, in words."""
    if machine.get("backward") == "dense cotangent":  # as grid.py records it
        return "fwd+bwd: the gradients against a fixed standard-normal cotangent."
    # Runs before the key was recorded took the gradient of the output's sum.
    return "fwd+bwd: the gradients of the output's sum."


def _machine_line(results):
    """Where and when each backend was measured: one sentence per machine
    (a file merged by `grid.py --only` may hold backends from two runs)."""
    runs = {}
    for backend, info in results["backends"].items():
        machine = info.get("machine", results["machine"])
        key = json.dumps(machine, sort_keys=True)
        runs.setdefault(key, (machine, []))[1].append(backend)
    sentences = []
    for machine, backends in runs.values():
        who = "" if len(runs) == 1 else ", ".join(backends) + ": "
        sentences.append(
            f"{who}Machine: {machine['cpu']}, {machine['cores']} cores, {machine['platform']}, "
            f"{machine['when']}, commit {machine['commit']}. {_omp_policy(machine)} "
            f"{_backward(machine)}"
        )
    versions = "; ".join(
        f"{b}: "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if k != "luong_attention_path")
        for b, info in results["backends"].items()
    )
    return " ".join(sentences) + f" Versions: {versions}."


def markdown(results, source="benchmarks/results/grid.json"):
    lines = [
        f"Generated by `benchmarks/report.py` from `{source}` "
        f"(`{results['command']}`). Milliseconds, medians of {_rounds(results['spec'])} "
        "interleaved round(s) after warm-up, each sample after one untimed call; "
        + (
            "the variants' order rotates from round to round, and a ratio is the median "
            "over rounds of the two variants' ratio within each round; "
            if any("samples_ms" in r for r in results["grid"])
            else ""
        )
        + "ratios below 1 mean ours is faster.",
        "",
        _machine_line(results),
    ]
    if results.get("quick"):
        lines += [
            "",
            "**Quick run** (`--quick`): a few cells and one round, to check the pipeline. "
            "These numbers are not the benchmark.",
        ]
    # The sections of the parts this run measured (every part, unless
    # `--parts`), and of those whose rows a run of other parts kept from the
    # file it merged into (`grid.py --only ... --parts ...`).
    measured = results["spec"].get("parts", PARTS)
    parts = [part for part in PARTS if part in measured or results.get(part)]
    if "grid" in parts:
        lines += ["", "#### Grid"]
        lines += grid_tables(results)
    sections = (
        # The FLOP rate takes the grid's T = 4096 cells over the matmul rate.
        ("matmul" if "grid" in parts else None, flop_rate_table),
        ("e2e", e2e_table),
        ("overhead", overhead_lines),
        ("guard", guard_table),
        ("skip", skip_table),
        ("blocks", blocks_table),
    )
    for part, section in sections:
        if part in parts:
            lines += section(results)
    return "\n".join(lines) + "\n"


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = cell_index(results)
    backends = [b for b in BACKENDS if any(k[0] == b for k in index)]
    if not backends:  # a run of other parts only (--parts e2e)
        return False
    fig, axes = plt.subplots(
        2, len(backends), figsize=(4.5 * len(backends), 7), squeeze=False, sharey=True
    )
    for col, backend in enumerate(backends):
        for row, mode in enumerate(MODES):
            ax = axes[row][col]
            for mask in MASKS:
                for dim, style in ((64, "--"), (128, "-")):
                    pts = sorted(
                        (k[2], paired_ratio(v.get("auto"), v.get("keras_attention")))
                        for k, v in index.items()
                        if k[0] == backend
                        and (k[4], k[5], k[6], k[7]) == (dim, mask, mode, "float32")
                    )
                    pts = [p for p in pts if p[1] is not None]
                    if pts:
                        ax.plot(
                            *zip(*pts, strict=True), style, marker="o", label=f"{mask}, D={dim}"
                        )
            ax.axhline(TARGET, color="black", linewidth=0.8)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{backend}, {mode}")
            ax.set_xlabel("T")
            ax.set_ylabel("auto / keras.layers.Attention")
            ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    title = "LuongAttention(auto) time over keras.layers.Attention, float32 (below 1: faster)"
    fig.suptitle(title + (" — quick run" if results.get("quick") else ""))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _geomean(values):
    return math.exp(statistics.fmean(math.log(v) for v in values))


def auto_table(results, source):
    """The ranking `luong_attention/_dispatch.py` reads (format: SPEC / issue 11)."""
    names = [name for _, name in LENGTH_REGIMES]
    measured = {}  # (backend, device, regime, mask, dtype, mode) -> {path: [ms, ...]}
    for r in results["grid"]:
        if r["variant"] not in PATHS or r["dtype"] not in DTYPES:
            continue
        key = (
            r["backend"],
            r["device"],
            regime_of(r["T"]),
            r["mask"],
            DTYPES[r["dtype"]],
            MODES[r["mode"]],
        )
        ms = r["median_ms"] if r["status"] == "ok" else math.inf
        measured.setdefault(key, {}).setdefault(r["variant"], []).append(ms)
    rankings = []
    for backend, device in sorted({k[:2] for k in measured}):
        for regime in names:
            for mask in MASKS:
                for dtype in ("float32", "low"):
                    for mode in ("train", "infer"):
                        near = sorted(
                            (abs(names.index(n) - names.index(regime)), names.index(n), n)
                            for n in names
                            if (backend, device, n, mask, dtype, mode) in measured
                        )
                        if not near:
                            raise SystemExit(
                                f"No measurement for {backend} {device} {mask} {dtype} {mode}"
                            )
                        source_regime = near[0][2]
                        paths = measured[backend, device, source_regime, mask, dtype, mode]
                        speed = {
                            p: _geomean(paths[p])
                            if math.inf not in paths.get(p, [math.inf])
                            else math.inf
                            for p in PATHS
                        }
                        entry = dict(
                            backend=backend,
                            device=device,
                            length=regime,
                            mask=mask,
                            dtype=dtype,
                            mode=mode,
                            paths=sorted(PATHS, key=lambda p: (speed[p], PATHS.index(p))),
                        )
                        if source_regime != regime:
                            entry["measured_length"] = source_regime
                        rankings.append(entry)
    machine = results["machine"]
    return {
        "generated_by": "nox -s bench",
        "source": source,
        "machine": f"{machine['cpu']}, {machine['cores']} cores ({machine['when']})",
        "quick": bool(results.get("quick")),
        "length_regimes": LENGTH_REGIMES,
        "rankings": rankings,
        "blocked_block_sizes": block_sizes(results),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=os.path.join(HERE, "results", "grid.json"))
    parser.add_argument("--table", default=os.path.join(ROOT, "luong_attention", "auto_table.json"))
    args = parser.parse_args(argv)
    with open(args.results) as f:
        results = json.load(f)
    out_dir = os.path.dirname(os.path.abspath(args.results))
    with open(os.path.join(out_dir, "grid.md"), "w") as f:
        f.write(markdown(results, os.path.relpath(os.path.abspath(args.results), ROOT)))
    plotted = plot(results, os.path.join(out_dir, "grid.png"))
    print(f"wrote {os.path.join(out_dir, 'grid.md')}" + (" and grid.png" if plotted else ""))
    missing = [b for b in BACKENDS if b not in results["backends"]]
    if missing:
        print(f"not writing {args.table}: no results for {', '.join(missing)}")
        return
    table = auto_table(results, os.path.relpath(os.path.abspath(args.results), ROOT))
    if os.path.exists(args.table):
        # Rows of devices this run did not measure (the GPU's, from
        # benchmarks/gpu_rankings.py) stay as they are.
        with open(args.table) as f:
            previous = json.load(f)
        devices = {row["device"] for row in table["rankings"]}
        table["rankings"] += [r for r in previous["rankings"] if r["device"] not in devices]
        table.update({k: v for k, v in previous.items() if k.startswith("gpu_")})
        if not table["blocked_block_sizes"]:  # a run without the blocks part
            table["blocked_block_sizes"] = previous.get("blocked_block_sizes", [])
    with open(args.table, "w") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    print(f"wrote {args.table} ({len(table['rankings'])} rankings)")


if __name__ == "__main__":
    main()
