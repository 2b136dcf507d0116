"""Distributed training on CPU with each backend's own engine, in one process.

Each case runs an example script in a fresh process (device counts are fixed
when a backend starts). The engines are backend-specific by nature, so each
backend collects only its own cases (parametrized over what exists, nothing
skipped):

- jax: DataParallel over 2 devices; ModelParallel over a (batch, model)
  mesh; sequence parallelism, a LayoutMap sharding the time dim of query,
  key and value over 4 devices (examples/sequence_parallel.py).
- tensorflow: MirroredStrategy over 2 logical CPUs.
- torch: DistributedDataParallel, 2 processes (the same as `--processes 2`).

Several processes standing in for several machines: tests/test_multiprocess.py.
"""

import json
import sys
from pathlib import Path

import keras
import pytest

from tests.helpers import run_subprocess

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CASES = {
    "jax": ["data_parallel", "model_parallel", "sequence_parallel"],
    "tensorflow": ["mirrored_strategy"],
    "torch": ["distributed_data_parallel"],
}[keras.backend.backend()]


def run(tmp_path, script, *args):
    out = tmp_path / "summary.json"
    run_subprocess([sys.executable, EXAMPLES / script, f"--json={out}", *args], 300, cwd=tmp_path)
    return json.loads(out.read_text())


def train(tmp_path, *args):
    return run(tmp_path, "distributed_training.py", "--epochs=4", "--samples=192", *args)


def check_training(summary, engine, replicas):
    assert summary["backend"] == keras.backend.backend()
    assert summary["engine"] == engine
    assert summary["replicas"] == replicas
    assert summary["loss_after"] < 0.75 * summary["loss_before"], summary
    assert summary["history"][-1] < summary["history"][0], summary
    assert summary["replica_max_difference"] <= 1e-6, summary


def data_parallel(tmp_path):
    summary = train(tmp_path)
    check_training(summary, "DataParallel", replicas=2)
    # The virtual CPU devices, also where the machine has a GPU.
    assert (summary["devices"], summary["platform"]) == (2, "cpu")


def model_parallel(tmp_path):
    summary = train(tmp_path, "--model-parallel")
    # 4 devices on a (batch=2, model=2) mesh: unsharded weights have 4 copies.
    check_training(summary, "ModelParallel", replicas=4)
    assert (summary["devices"], summary["platform"]) == (4, "cpu")
    layouts = summary["layouts"]
    assert layouts["attention/general_score_weight"] == ["model", None]
    assert layouts["split_heads/output"] == ["batch", "model", None, None]
    assert layouts["attention/output"][:2] == ["batch", "model"]


def sequence_parallel(tmp_path):
    summary = run(tmp_path, "sequence_parallel.py", "--devices=4", "--length=256")
    assert (summary["devices"], summary["platform"]) == (4, "cpu")
    assert summary["layouts"]["attention/output"] == [None, "seq"]  # time split
    assert summary["within_1e-6"], summary  # |sharded - one device| <= 1e-6 (1 + |one device|)
    # Each device holds a quarter of the activations: its peak is below one device's.
    assert summary["peak_bytes_per_device_sharded"] < summary["peak_bytes_one_device"], summary


def mirrored_strategy(tmp_path):
    check_training(train(tmp_path), "MirroredStrategy", replicas=2)


def distributed_data_parallel(tmp_path):
    summary = train(tmp_path)
    check_training(summary, "DistributedDataParallel", replicas=2)
    assert summary["replica_max_difference"] == 0


@pytest.mark.parametrize("case", CASES)
def test_distributed(tmp_path, case):
    globals()[case](tmp_path)
