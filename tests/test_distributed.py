"""Distributed training on CPU with each backend's own engine.

Each test runs `examples/distributed_training.py` in a fresh process (device
counts are fixed when a backend starts) and checks that the loss falls and
that every replica ends with the same weights. A test runs only on its own
backend: the engines are backend-specific by nature.
"""

import json
import sys
from pathlib import Path

import keras
import pytest

from tests.helpers import run_subprocess

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "distributed_training.py"


def only_on(backend):
    return pytest.mark.skipif(
        keras.backend.backend() != backend,
        reason=f"{backend}'s own distributed engine; the backend is {keras.backend.backend()}",
    )


def train(tmp_path, *args):
    out = tmp_path / "summary.json"
    result = run_subprocess(
        [sys.executable, str(SCRIPT), "--epochs=4", "--samples=192", f"--json={out}", *args],
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return json.loads(out.read_text())


def check_training(summary, engine, replicas):
    assert summary["backend"] == keras.backend.backend()
    assert summary["engine"] == engine
    assert summary["replicas"] == replicas
    assert summary["loss_after"] < 0.75 * summary["loss_before"], summary
    assert summary["history"][-1] < summary["history"][0], summary
    assert summary["replica_max_difference"] <= 1e-6, summary


@only_on("jax")
def test_jax_data_parallel(tmp_path):
    summary = train(tmp_path)
    check_training(summary, "DataParallel", replicas=2)
    assert summary["devices"] == 2


@only_on("jax")
def test_jax_model_parallel_shards_batch_and_heads(tmp_path):
    summary = train(tmp_path, "--model-parallel")
    # 4 devices on a (batch=2, model=2) mesh: unsharded weights have 4 copies.
    check_training(summary, "ModelParallel", replicas=4)
    layouts = summary["layouts"]
    assert layouts["attention/general_score_weight"] == ["model", None]
    assert layouts["split_heads/output"] == ["batch", "model", None, None]
    assert layouts["attention/output"][:2] == ["batch", "model"]


@only_on("tensorflow")
def test_tensorflow_mirrored_strategy(tmp_path):
    check_training(train(tmp_path), "MirroredStrategy", replicas=2)


@only_on("torch")
def test_torch_distributed_data_parallel(tmp_path):
    check_training(train(tmp_path), "DistributedDataParallel", replicas=2)
