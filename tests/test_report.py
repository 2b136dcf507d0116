"""How benchmarks/report.py reads a run: paired ratios and their intervals.

The report is stdlib-only and does not depend on the backend under test; it
runs on each anyway.
"""

import numpy as np
import pytest

from tests.helpers import benchmark_module


@pytest.fixture
def report(monkeypatch):
    return benchmark_module("report", monkeypatch)


def _row(samples, status="ok"):
    return {"status": status, "median_ms": float(np.median(samples)), "samples_ms": samples}


def test_paired_ratios_divide_round_by_round(report):
    ours, keras = _row([2.0, 6.0, 3.0]), _row([1.0, 4.0, 3.0])
    assert report.paired_ratios(ours, keras) == [2.0, 1.5, 1.0]
    # The median of the round ratios, not the ratio of the medians (3 / 3).
    assert report.paired_ratio(ours, keras) == 1.5


@pytest.mark.parametrize(
    "other",
    [None, _row([1.0, 2.0, 3.0], status="unsupported"), {"status": "ok", "median_ms": 2.0}],
    ids=["missing", "unsupported", "no samples"],
)
def test_no_paired_ratios_without_paired_samples(report, other):
    assert report.paired_ratios(_row([1.0, 2.0, 3.0]), other) is None


def test_rows_without_samples_fall_back_to_the_medians(report):
    assert report.paired_ratio({"median_ms": 3.0}, {"median_ms": 2.0}) == 1.5


@pytest.mark.parametrize(
    ("n", "k"),
    # The order statistics of the sign test's 95 % interval for the median
    # (at least 95 % coverage, as tabulated for these n).
    [(6, 1), (10, 2), (15, 4), (20, 6)],
)
def test_median_interval_takes_the_sign_test_order_statistics(report, n, k):
    values = list(np.random.default_rng(n).permutation(np.arange(1.0, n + 1)))
    assert report.median_interval(values) == (float(k), float(n + 1 - k))


@pytest.mark.parametrize("n", [0, 1, 3, 5])
def test_no_median_interval_from_too_few_rounds(report, n):
    assert report.median_interval([1.0] * n) is None


def test_median_interval_covers_the_median_as_often_as_it_says(report):
    rng = np.random.default_rng(0)
    trials = 4000
    # Skewed ratios with median exactly 1, as timings' ratios are.
    samples = rng.lognormal(0.0, 0.1, size=(trials, 15))
    covered = 0
    for values in samples:
        low, high = report.median_interval(list(values))
        covered += low <= 1.0 <= high
    # 96.5 % for 15 values; three standard errors below it still clears 95 %.
    assert covered / trials >= 0.95


def _results(cells):
    """A results file with one jax cell per `(T, per-round auto / Attention)`."""
    grid = []
    for length, ratios in cells:
        keras = [1.0 + 0.01 * i for i in range(len(ratios))]
        for variant, samples in (
            ("keras_attention", keras),
            ("auto", [r * k for r, k in zip(ratios, keras, strict=True)]),
        ):
            grid.append(
                {
                    "backend": "jax",
                    "device": "cpu",
                    "T": length,
                    "B": 32,
                    "D": 64,
                    "mask": "padding",
                    "mode": "fwd",
                    "dtype": "float32",
                    "variant": variant,
                    **_row(samples),
                }
            )
    return {"grid": grid}


def test_misses_are_told_apart_by_their_interval(report):
    faster = [0.9] * 15
    slower = [1.2 + 0.01 * i for i in range(15)]
    straddling = [0.9 + 0.02 * i for i in range(15)]  # median 1.04
    lines = report.grid_tables(_results([(16, faster), (64, slower), (256, straddling)]))
    assert "- jax, float32: 1 of 3; misses: 1 within noise, 1 above it" in lines
    row_16, row_64, row_256 = (line for line in lines if line.startswith("| fwd |"))
    assert "| yes (≤ 1.0) |" in row_16
    assert "| 1.27 | 1.23–1.31 |" in row_64 and "| NO (≤ 1.0) |" in row_64
    assert "| 1.04 | 0.96–1.12 |" in row_256 and "| NO (≤ 1.0) |" in row_256


def test_a_miss_from_three_rounds_has_no_interval(report):
    lines = report.grid_tables(_results([(16, [1.1, 1.2, 1.3])]))
    assert (
        "- jax, float32: 0 of 1; misses: 0 within noise, 0 above it, 1 without an interval" in lines
    )
    assert "| 1.20 | — |" in lines[-1]


def _skip_results():
    times = {
        "auto": [10.0, 11.0, 12.0, 10.0, 11.0, 12.0],
        "auto_skip": [6.0, 6.6, 7.2, 6.0, 6.6, 7.2],  # 0.6 of auto in every round
        "keras_attention": [20.0] * 6,
        "keras_dpa": [12.0] * 6,
    }
    row = {
        "backend": "torch",
        "device": "cpu",
        "T": 1024,
        "B": 32,
        "D": 128,
        "masks": "query+value",
        "order": "sorted",
        "mode": "fwd",
        "real_pairs": 0.4375,
        "median_ms": {k: float(np.median(v)) for k, v in times.items()},
        "samples_ms": times,
        "rounds": 6,
    }
    return {"skip": [row]}


def test_the_skip_table_gives_ratios_paired_by_round(report):
    lines = report.skip_table(_skip_results())
    (row,) = (line for line in lines if line.startswith("| 1024 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == [
        "1024", "query+value", "sorted", "fwd", "0.44",
        "11.0", "6.60", "20.0", "12.0", "0.60", "0.60–0.60", "0.33", "0.55",
    ]  # fmt: skip


def _run_of(parts):
    """A results file of `grid.py --only torch --parts <parts>` holding the skip part's rows."""
    return {
        **_skip_results(),
        "quick": False,
        "command": f"benchmarks/grid.py --only torch --parts {' '.join(parts)}",
        "spec": {"rounds": 3, "parts": list(parts)},
        "machine": {
            "cpu": "cpu",
            "cores": 2,
            "platform": "linux",
            "when": "now",
            "commit": "abc",
            "omp_wait_policy": None,
        },
        "backends": {"torch": {"versions": {"keras": "3"}}},
        "grid": [],
    }


def test_a_run_of_some_parts_reports_only_those(report):
    text = report.markdown(_run_of(["skip"]))
    assert "#### Skipping padding" in text
    for other in ("#### Grid", "FLOP rate", "End to end", "zeroing padded"):
        assert other not in text


def test_rows_a_merged_run_kept_are_reported(report):
    """A run of some parts merged into an earlier file keeps the other parts'
    rows (grid.py's `merge_into`); the report shows them too."""
    results = _run_of(["grid"])
    assert "#### Skipping padding" in report.markdown(results)
    assert "#### Skipping padding" not in report.markdown({**results, "skip": []})


def test_the_machine_line_says_what_fwd_bwd_pulled_back(report):
    """Each backend's run says whether its fwd+bwd calls took the gradients
    against grid.py's dense cotangent or (runs before it) of the output's sum."""
    results = _run_of(["grid"])
    assert "the gradients of the output's sum" in report.markdown(results)
    results["machine"]["backward"] = "dense cotangent"
    text = report.markdown(results)
    assert "fixed standard-normal cotangent" in text and "output's sum" not in text


def _blocks_results(times):
    """Blocks-part rows: `times` maps (T, mode, min_block_size) to ms, for D 64 and 128."""
    rows = []
    for (length, mode, size), ms in times.items():
        for dim, factor in ((64, 1.0), (128, 4.0)):
            rows.append(
                {
                    "kind": "blocks",
                    "backend": "tensorflow",
                    "device": "cpu",
                    "T": length,
                    "B": 2,
                    "D": dim,
                    "mask": "causal",
                    "mode": mode,
                    "dtype": "float32",
                    "min_block_size": size,
                    "median_ms": ms * factor,
                }
            )
    return {"blocks": rows}


def test_the_default_block_is_the_blocked_paths(report):
    from luong_attention.kernels import BlockedOptions

    assert report.DEFAULT_BLOCK == BlockedOptions().min_block_size


def test_the_block_size_is_the_default_unless_another_is_clearly_faster(report):
    assert report.chosen_block({128: 10.0, 256: 10.0, 512: 9.6}) == 256  # 4 % faster: noise
    assert report.chosen_block({128: 10.0, 256: 10.0, 512: 9.4}) == 512
    assert report.chosen_block({256: 10.0, 1024: 12.0}) == 256
    assert report.chosen_block({512: 9.0, 1024: 8.0}) == 1024  # no default measured


def test_block_sizes_per_regime_and_mode_from_the_geometric_mean(report):
    results = _blocks_results(
        {
            (4096, "fwd+bwd", 256): 10.0,
            (4096, "fwd+bwd", 512): 8.0,
            (4096, "fwd", 256): 10.0,
            (4096, "fwd", 512): 11.0,
            (1024, "fwd+bwd", 256): 10.0,
            (1024, "fwd+bwd", 512): 9.9,
        }
    )
    speeds = report.block_speeds(results)
    # Geometric mean over D: sqrt(8 * 32) = 16.
    assert speeds["tensorflow", "cpu", "4096", "train", True][512] == pytest.approx(16.0)
    assert report.block_sizes(results) == [
        dict(backend="tensorflow", device="cpu", length=length, mode=mode, causal=True,
             min_block_size=size)
        for length, mode, size in (("1024", "train", 256), ("4096", "infer", 256), ("4096", "train", 512))
    ]  # fmt: skip
    lines = report.blocks_table(results)
    (row,) = (line for line in lines if line.startswith("| tensorflow | cpu | 4096 | train |"))
    assert row == "| tensorflow | cpu | 4096 | train | yes | 20.0 (1.00) | 16.0 (0.80) | 512 |"


def test_padding_goes_with_no_mask_and_causal_padding_with_causal(report):
    rows = _blocks_results({(4096, "fwd", 256): 10.0})["blocks"]
    kinds = [dict(r, mask=mask) for r in rows for mask in ("none", "padding", "causal+padding")]
    keys = set(report.block_speeds({"blocks": kinds}))
    assert keys == {("tensorflow", "cpu", "4096", "infer", c) for c in (False, True)}


def test_the_blocks_section_only_with_blocks_rows(report):
    results = _run_of(["blocks"])
    assert "#### Block size of the blocked path" in report.markdown(results)
    assert "| (not measured in this run) |" in report.markdown(results)
    with_rows = {**results, **_blocks_results({(4096, "fwd", 256): 10.0})}
    assert "| tensorflow | cpu | 4096 | infer | yes | 20.0 (1.00) | 256 |" in report.markdown(
        with_rows
    )


def test_the_overhead_line_gives_the_paired_fraction_its_interval_and_verdict(report):
    """Validation and dispatch: 1 - written-out ops / function, paired by
    round, with the sign test's interval of the per-round fractions and the
    10 % target held against the median."""
    rounds = 15
    ops_ms = [1.0 + 0.05 * i for i in range(rounds)]  # the machine's load moves both
    fractions = [0.02 * i for i in range(rounds)]  # 0 % to 28 %, median 14 %
    function_ms = [o / (1 - f) for o, f in zip(ops_ms, fractions, strict=True)]
    samples = {
        "kernel_same_ops": ops_ms,
        "function_reference": function_ms,
        **{
            name: [2.0] * rounds
            for name in ("kernel", "function_auto", "layer_auto", "layer_reference")
        },
        "keras_attention": [3.0] * rounds,
    }
    row = {
        "backend": "torch",
        "device": "cpu",
        "T": 16,
        "B": 32,
        "D": 128,
        "mask": "padding",
        "mode": "fwd",
        "rounds": rounds,
        "same_ops": "default",
        "median_ms": {name: float(np.median(s)) for name, s in samples.items()},
        "samples_ms": samples,
    }
    assert report.overhead_fraction(row, "function_reference", "kernel_same_ops") == (
        pytest.approx(0.14)
    )
    # 15 rounds: the 4th smallest and 4th largest fraction.
    low, high = report.overhead_interval(row, "function_reference", "kernel_same_ops")
    assert (low, high) == (pytest.approx(0.06), pytest.approx(0.22))
    (line,) = [x for x in report.overhead_lines({"overhead": [row]}) if x.startswith("- ")]
    assert "alone are 14% of the function call on that path (95% interval 6% to 22%)" in line
    assert "(target NOT met: ≤ 10%)" in line

    fast = {**samples, "function_reference": [o / 0.95 for o in ops_ms]}
    (line,) = [
        x
        for x in report.overhead_lines({"overhead": [{**row, "samples_ms": fast}]})
        if x.startswith("- ")
    ]
    assert "alone are 5% of the function call" in line and "(target met: ≤ 10%)" in line
