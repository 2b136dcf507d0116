"""Training killed hard mid-epoch resumes with BackupAndRestore; damaged `.keras` files.

`tests/workers/train_resume.py` trains a small model holding LuongAttention in
a subprocess (deterministic on CPU: fixed seeds, shuffle=False) and kills
itself with SIGKILL after batch 4 of the second epoch. Started again with the
same backup directory, `keras.callbacks.BackupAndRestore` resumes.

What Keras 3.15 restores: the weights and optimizer state of the last
checkpoint, and the epoch it was taken in; the epoch then restarts at its
first batch (`training_metadata.json` records the batch, `fit` does not read
it). So with checkpoints at epoch ends the resumed run ends with exactly the
weights of an uninterrupted one; with checkpoints every N batches it ends
with exactly the weights of a run that trained the checkpoint's batches of
that epoch twice. Both are asserted bit for bit: every backend reproduces
them exactly on CPU.
"""

import json
import signal
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from luong_attention import LuongAttention
from tests.helpers import run_subprocess, to_numpy

WORKER = Path(__file__).resolve().parent / "workers" / "train_resume.py"
TIMEOUT = 240


def train(tmp_path, out, *args, killed=False):
    result = run_subprocess(
        [sys.executable, WORKER, tmp_path / out, *args], TIMEOUT, cwd=tmp_path, check=not killed
    )
    if killed:
        assert result.returncode == -signal.SIGKILL, result.stderr
        assert not (tmp_path / out).exists()
        return None
    with np.load(tmp_path / out) as weights:
        return [weights[k] for k in sorted(weights.files, key=lambda k: int(k.split("_")[1]))]


def assert_same_weights(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    uninterrupted = train(tmp_path, "uninterrupted.npz")
    backup = ["--backup", tmp_path / "backup"]
    train(tmp_path, "resumed.npz", *backup, "--kill-at", "1", "4", killed=True)
    assert (tmp_path / "backup" / "latest.weights.h5").exists()
    resumed = train(tmp_path, "resumed.npz", *backup)
    assert_same_weights(resumed, uninterrupted)


def test_resume_from_batch_checkpoint_restarts_its_epoch(tmp_path):
    backup = ["--backup", tmp_path / "backup", "--save-freq", "2"]
    train(tmp_path, "resumed.npz", *backup, "--kill-at", "1", "4", killed=True)
    # Saved after batches 1 and 3 of epoch 1; killed after batch 4.
    metadata = (tmp_path / "backup" / "training_metadata.json").read_text()
    assert metadata.replace(" ", "") == '{"epoch":1,"batch":3}'
    resumed = train(tmp_path, "resumed.npz", *backup)
    replayed = train(tmp_path, "replayed.npz", "--replay-batches", "4")
    assert_same_weights(resumed, replayed)
    uninterrupted = train(tmp_path, "uninterrupted.npz")
    assert any(not np.array_equal(r, u) for r, u in zip(resumed, uninterrupted, strict=True))


# --- Damaged .keras files ---------------------------------------------------


@pytest.fixture
def saved_model(tmp_path):
    query, value = keras.Input((4, 8)), keras.Input((5, 8))
    model = keras.Model([query, value], LuongAttention(score_mode="general")([query, value]))
    model.get_layer(index=2).general_score_weight.assign(np.eye(8, dtype="float32") * 0.5)
    path = tmp_path / "model.keras"
    model.save(path)
    return model, path


def rewrite_entry(path, name, damage):
    """Rewrites the zip with `damage(bytes)` as the entry `name`, checksums intact."""
    with zipfile.ZipFile(path) as archive:
        entries = {n: archive.read(n) for n in archive.namelist()}
    assert name in entries, sorted(entries)
    with zipfile.ZipFile(path, "w") as archive:
        for n, data in entries.items():
            archive.writestr(n, damage(data) if n == name else data)


def test_good_file_loads_in_safe_mode(saved_model):
    model, path = saved_model
    rng = np.random.default_rng(0)
    inputs = [
        rng.standard_normal((2, 4, 8)).astype("float32"),
        rng.standard_normal((2, 5, 8)).astype("float32"),
    ]
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.layers[2], LuongAttention)
    np.testing.assert_array_equal(to_numpy(loaded(inputs)), to_numpy(model(inputs)))


def test_truncated_file_raises(saved_model):
    _, path = saved_model
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    # Keras's wording ("File not found", though the file exists); its point
    # is the second sentence.
    with pytest.raises(ValueError, match=r"accessible `\.keras` zip file"):
        keras.saving.load_model(path)


def test_flipped_bytes_in_the_weights_raise(saved_model):
    _, path = saved_model
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("model.weights.h5")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)  # entry's data
    data = bytearray(path.read_bytes())
    data[start + 100 : start + 400] = bytes(b ^ 0xFF for b in data[start + 100 : start + 400])
    path.write_bytes(bytes(data))
    with pytest.raises(zipfile.BadZipFile, match="Bad CRC-32 for file 'model.weights.h5'"):
        keras.saving.load_model(path)


def test_truncated_weights_entry_raises(saved_model):
    _, path = saved_model
    rewrite_entry(path, "model.weights.h5", lambda data: data[: len(data) // 2])
    with pytest.raises(OSError, match="truncated file"):
        keras.saving.load_model(path)


def test_truncated_config_entry_raises(saved_model):
    _, path = saved_model
    rewrite_entry(path, "config.json", lambda data: data[: len(data) // 2])
    # Where the cut falls decides the message; the error is JSON's own.
    with pytest.raises(json.JSONDecodeError, match=r"line 1 column \d+"):
        keras.saving.load_model(path)
