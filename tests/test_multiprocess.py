"""Two processes on 127.0.0.1 standing in for two machines, each backend's own engine.

`examples/distributed_training.py --processes 2` launches its workers:
jax.distributed with keras.distribution.DataParallel over both processes'
devices (jax), MultiWorkerMirroredStrategy through TF_CONFIG (tensorflow),
DistributedDataParallel over gloo (torch). Each worker writes its final
weights; the test checks that the loss fell and that both workers' weights
are bit for bit the same (equal SHA-256 checksums).

The example kills its workers after its own `--timeout`; `run_subprocess`
kills the whole process group (launcher and workers) if that fails.
"""

import json
import sys
from pathlib import Path

import keras
import pytest

from tests.helpers import run_subprocess

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "distributed_training.py"
ENGINES = {
    "jax": "jax.distributed + DataParallel",
    "tensorflow": "MultiWorkerMirroredStrategy",
    "torch": "DistributedDataParallel",
}


@pytest.mark.slow
def test_two_processes_train_to_the_same_weights(tmp_path):
    out = tmp_path / "summary.json"
    args = ["--processes=2", "--epochs=4", "--samples=192", "--timeout=240", f"--json={out}"]
    run_subprocess([sys.executable, SCRIPT, *args], 300, cwd=tmp_path)
    summary = json.loads(out.read_text())
    assert summary["backend"] == keras.backend.backend()
    assert summary["engine"] == ENGINES[keras.backend.backend()]
    assert summary["processes"] == summary["replicas"] == 2
    assert summary["loss_after"] < 0.75 * summary["loss_before"], summary
    assert summary["history"][-1] < summary["history"][0], summary
    first, second = summary["weight_checksums"]
    assert first == second, summary
    assert summary["replica_max_difference"] == 0, summary
