"""The measured table that "auto" reads: `luong_attention/auto_table.json`.

Written by `nox -s bench` (benchmarks/report.py; its GPU rows by
benchmarks/gpu_rankings.py). It must rank every path for every regime
"auto" can meet on CPU, name only paths the layer accepts, and hold the GPU
rows that the GPU results it names give. The table does not depend on the
backend under test; it runs on each anyway.
"""

import itertools
import json
from importlib import resources
from pathlib import Path

import pytest

from luong_attention import LuongAttention
from tests.helpers import benchmark_module

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("jax", "torch", "tensorflow")
REGIMES = ("16", "64", "256", "1024", "4096")
GPU_REGIMES = ("16", "64", "256", "1024", "4096", "16384")
MASKS = ("none", "padding", "causal", "causal+padding")
DTYPES = ("float32", "low")
MODES = ("train", "infer")
PATHS = ("reference", "fused", "blocked")
KEY = ("backend", "device", "length", "mask", "dtype", "mode")


@pytest.fixture(scope="module")
def table():
    text = (resources.files("luong_attention") / "auto_table.json").read_text()
    return json.loads(text)


def test_header(table):
    assert isinstance(table["generated_by"], str) and table["generated_by"]
    if table["generated_by"] == "nox -s bench":  # measured: says from what and where
        assert table["source"].endswith(".json")
        assert isinstance(table["machine"], str) and table["machine"]


@pytest.mark.parametrize(
    ("key", "names"), [("length_regimes", REGIMES), ("gpu_length_regimes", GPU_REGIMES)]
)
def test_length_regimes_are_increasing_bounds_ending_unbounded(table, key, names):
    regimes = table[key]
    assert [name for _, name in regimes] == list(names)
    bounds = [bound for bound, _ in regimes]
    assert bounds[-1] is None
    assert all(isinstance(b, int) and not isinstance(b, bool) for b in bounds[:-1])
    assert bounds[:-1] == sorted(set(bounds[:-1]))
    # Each regime holds the grid length it is named after.
    for bound, name in regimes[:-1]:
        assert int(name) <= bound


def test_every_cpu_regime_ranked_exactly_once(table):
    keys = [tuple(entry[k] for k in KEY) for entry in table["rankings"]]
    assert len(keys) == len(set(keys)), "a regime is ranked twice"
    expected = set(itertools.product(BACKENDS, ("cpu",), REGIMES, MASKS, DTYPES, MODES))
    missing = expected - set(keys)
    assert not missing, f"{len(missing)} regimes unranked, e.g. {sorted(missing)[:3]}"


def test_the_gpu_regimes_are_the_cpu_ones_up_to_2048(table):
    # So a call of unknown length ("256") and short calls read the same regimes.
    assert table["gpu_length_regimes"][:4] == table["length_regimes"][:4]
    assert table["length_regimes"][3] == [2048, "1024"]


def test_block_sizes_use_known_values_once(table):
    keys = []
    for row in table["blocked_block_sizes"]:
        assert set(row) == {"backend", "device", "length", "mode", "causal", "min_block_size"}
        assert row["backend"] in BACKENDS
        assert row["device"] in ("cpu", "gpu")
        assert row["length"] in REGIMES
        assert row["mode"] in MODES
        assert row["causal"] in (False, True)
        size = row["min_block_size"]
        assert isinstance(size, int) and not isinstance(size, bool) and size >= 1
        keys.append(tuple(row[k] for k in ("backend", "device", "length", "mode", "causal")))
    assert len(keys) == len(set(keys)), "a regime has two block sizes"


def test_the_cpu_rows_are_those_the_results_give(table, monkeypatch):
    """What `benchmarks/report.py` computes from the results the table names."""
    if table["generated_by"] != "nox -s bench":
        pytest.skip("not a measured table")
    report = benchmark_module("report", monkeypatch)
    results = json.loads((ROOT / table["source"]).read_text())
    expected = report.auto_table(results, table["source"])
    assert [r for r in table["rankings"] if r["device"] == "cpu"] == expected["rankings"]
    assert table["blocked_block_sizes"] == expected["blocked_block_sizes"]


def test_rankings_use_known_values_only(table):
    for entry in table["rankings"]:
        assert entry["backend"] in BACKENDS
        assert entry["device"] in ("cpu", "gpu")
        assert entry["length"] in (GPU_REGIMES if entry["device"] == "gpu" else REGIMES)
        assert entry["mask"] in MASKS
        assert entry["dtype"] in DTYPES
        assert entry["mode"] in MODES


def test_each_ranking_names_every_path_once(table):
    for entry in table["rankings"]:
        assert sorted(entry["paths"]) == sorted(PATHS), entry


@pytest.mark.parametrize("path", PATHS)
def test_ranked_paths_are_accepted_by_the_layer(path):
    assert LuongAttention(implementation=path).implementation == path


def _gpu_rankings(monkeypatch):
    # It imports its sibling report.py, as when run from benchmarks/.
    benchmark_module("report", monkeypatch)
    return benchmark_module("gpu_rankings", monkeypatch)


def test_the_gpu_rows_are_what_the_gpu_results_give(table, monkeypatch):
    gpu_rankings = _gpu_rankings(monkeypatch)
    assert table["gpu_length_regimes"] == gpu_rankings.GPU_LENGTH_REGIMES
    sources = table["gpu_source"]
    assert isinstance(sources, list) and sources, "the GPU rows name no GPU results"
    rows = gpu_rankings.read_rows([ROOT / source for source in sources])
    expected = gpu_rankings.gpu_rows(rows)
    assert [r for r in table["rankings"] if r["device"] == "gpu"] == expected
    measured = [r for r in expected if r["measured"]]
    assert measured and all(r["cases"] for r in measured)


@pytest.mark.parametrize(
    ("key", "device"), [("length_regimes", "cpu"), ("gpu_length_regimes", "gpu")]
)
def test_auto_reads_the_regime_the_benchmark_filed_each_length_under(
    table, key, device, monkeypatch
):
    # report.py (stdlib only, so it runs without a backend) files a measured
    # length under a regime; "auto" looks the call's max(Tq, Tv) up in the
    # same table with its own lookup. The two must agree at every length,
    # the bounds and either side of them above all.
    from luong_attention import _dispatch

    report = benchmark_module("report", monkeypatch)
    regimes = table[key]
    lengths = set(range(1, 80))
    for bound, _ in regimes[:-1]:
        lengths |= {bound - 1, bound, bound + 1}
    lengths |= {2 * regimes[-2][0], 10**6}
    for length in sorted(lengths):
        filed = report.regime_of(length, regimes)
        assert _dispatch.length_regime(length, length, device=device) == filed, length
        # A call's regime is that of its longer side.
        assert _dispatch.length_regime(1, length, device=device) == filed, length
        assert _dispatch.length_regime(length, 1, device=device) == filed, length
