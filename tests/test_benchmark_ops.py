"""The benchmark's written-out ops compute what they stand for, its
fwd+bwd calls pull back the cotangent they say, and its results keep the
header of the run that measured them.

The overhead part of `benchmarks/grid.py` times the public function against
`reference_ops` (the reference path's tensor ops written out) and
`keras_math` (`keras.layers.Attention`'s); a figure from either is only
meaningful while each computes the same result as what it stands for.
"""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

from luong_attention import luong_attention
from tests.helpers import benchmark_module, to_numpy

B, T, D = 4, 6, 8  # Tv <= depth: the weights are where rows without a key are zeroed


def _inputs():
    rng = np.random.default_rng(0)
    q, k, v = (ops.convert_to_tensor(rng.standard_normal((B, T, D)), "float32") for _ in range(3))
    value_mask = np.arange(T) < np.array([6, 3, 1, 0])[:, None]  # the last sees no key
    return q, k, v, ops.convert_to_tensor(value_mask)


def test_reference_ops_are_the_reference_path(monkeypatch):
    grid = benchmark_module("grid", monkeypatch)
    q, k, v, value_mask = _inputs()
    scale = ops.convert_to_tensor(0.5)
    expected = luong_attention(
        q, v, k, value_mask=value_mask, scale=scale, implementation="reference"
    )
    got = to_numpy(grid.reference_ops(q, k, v, value_mask, scale))
    np.testing.assert_allclose(got, to_numpy(expected), rtol=1e-6, atol=1e-6)
    assert np.all(got[-1] == 0)


def test_keras_math_is_keras_attention(monkeypatch):
    grid = benchmark_module("grid", monkeypatch)
    q, k, v, value_mask = _inputs()
    layer = keras.layers.Attention(use_scale=True)
    expected = layer([q, v, k], mask=[None, value_mask])
    scale = ops.convert_to_tensor(layer.scale)
    got = grid.keras_math(q, k, v, value_mask, scale)
    np.testing.assert_allclose(to_numpy(got), to_numpy(expected), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("runner", ["grid.compiled", "gpu.timed_runner"])
def test_a_fwd_bwd_call_pulls_back_the_fixed_dense_cotangent(monkeypatch, runner):
    """`compiled(fn, grad=True)` (the CPU grid's) and `timed_runner(fn,
    grad=True)` (the GPU benchmark's) give the gradients of `fn`'s output
    against `cotangent` (a linear `fn` has them in closed form), the same one
    on every call: dense, not the broadcast one of a sum."""
    grid = benchmark_module("grid", monkeypatch)
    module, name = runner.split(".")
    make = getattr(benchmark_module(module, monkeypatch), name)
    q, k, v, _ = _inputs()

    def fn(q, k, v):
        return q + 2.0 * k - 3.0 * v

    run = make(fn, grad=True)
    cotangent = grid.cotangent((B, T, D))
    assert cotangent.shape == (B, T, D) and np.unique(cotangent).size == cotangent.size
    for _ in range(2):
        grads = [to_numpy(g) for g in run(q, k, v)]
        for got, factor in zip(grads, (1.0, 2.0, -3.0), strict=True):
            np.testing.assert_allclose(got, factor * cotangent, rtol=1e-6)
    np.testing.assert_array_equal(grid.cotangent((B, T, D)), cotangent)


def test_a_collected_gpu_run_carries_a_caveat_per_thing_its_gpu_py_did_not_record(
    monkeypatch, tmp_path
):
    """`gpu_collect.py` gives a run's header one caveat per header key the
    current `gpu.py` writes and that run's JSON lacks (an older `gpu.py`:
    no true peak memory, training=False, the output's sum as cotangent), and
    none to a run that has them all; the collected runs in the repository
    carry the last one where they took the sum: `gpu_report.py` reads only
    the caveats."""
    gpu_collect = benchmark_module("gpu_collect", monkeypatch)
    recorded = {"peak_mb": "...", "training": "...", "backward": "..."}
    assert set(gpu_collect.CAVEATS) == set(recorded)
    for name, keys in (("old", {}), ("sum", {"peak_mb": "...", "training": "..."})):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "gpu_bench-torch.json").write_text(json.dumps({**keys, "rows": []}))
        header, _ = gpu_collect.run_rows(str(folder), "torch")
        expected = [text for key, text in gpu_collect.CAVEATS.items() if key not in keys]
        assert header["caveats"] == expected
    assert "output's sum" in gpu_collect.CAVEATS["backward"]
    folder = tmp_path / "current"
    folder.mkdir()
    (folder / "gpu_bench-torch.json").write_text(json.dumps({**recorded, "rows": []}))
    assert gpu_collect.run_rows(str(folder), "torch")[0]["caveats"] == []

    collected = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "gpu"
    for path in sorted(collected.glob("gpu_bench-*.json")):
        for run, header in json.loads(path.read_text())["runs"].items():
            # (of the three keys, a collected header keeps only "backward")
            took_the_sum = gpu_collect.CAVEATS["backward"] in header["caveats"]
            assert took_the_sum == ("backward" not in header), (path, run)


def test_a_merge_that_would_mislabel_rows_is_refused_before_the_run(monkeypatch, tmp_path):
    """`--only` merges one backend's run into earlier results, whose header
    for that backend becomes the new run's: rows the backend keeps there in a
    part it does not rerun would carry that header, and a quick run does not
    mix with a full one. Both are refused before anything is measured."""
    grid = benchmark_module("grid", monkeypatch)
    path = tmp_path / "grid.json"
    earlier = {"quick": False, **{part: [] for part in grid.PARTS}}
    earlier["grid"] = [{"backend": "torch"}, {"backend": "jax"}]
    path.write_text(json.dumps(earlier))

    def check(parts, backends, quick=False, at=path):
        grid.check_merge(str(at), quick=quick, parts=parts, backends=backends)

    check(["grid", "overhead"], ["torch"])  # torch's grid rows are measured again
    check(["overhead"], ["tensorflow"])  # tensorflow keeps no rows there
    check(["overhead"], ["torch"], at=tmp_path / "none.json")  # nothing to merge into
    with pytest.raises(SystemExit, match="torch's grid rows of an earlier run"):
        check(["overhead"], ["torch"])
    with pytest.raises(SystemExit, match="holds a full run"):
        check(list(grid.PARTS), ["torch"], quick=True)
