"""Smoke tests: a tiny run of each example script on the current backend.

The scripts run in a subprocess with this interpreter and environment (so
KERAS_BACKEND carries over). They check that the examples still work end to
end, not what accuracy they reach: the docs' figures come from full runs
(`nox -s examples`). Outputs go to a temporary folder, never into the repository.
"""

import json
import sys
from pathlib import Path

import keras

from tests.helpers import run_subprocess

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name, *args, cwd):
    result = run_subprocess([sys.executable, str(EXAMPLES / name), *args], timeout=300, cwd=cwd)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_text_similarity_runs(tmp_path):
    out_dir = tmp_path / "out"
    out = run_example(
        "text_similarity.py",
        "--samples=128",
        "--test-samples=32",
        "--epochs=1",
        "--verbose=0",
        f"--output-dir={out_dir}",
        cwd=tmp_path,
    )
    assert "held-out accuracy on 32 pairs" in out
    summary = json.loads((out_dir / "text_similarity.json").read_text())
    assert summary["backend"] == keras.backend.backend()
    assert summary["test_samples"] == 32
    assert 0.0 <= summary["accuracy"] <= 1.0


def test_seq2seq_dates_runs(tmp_path):
    out_dir = tmp_path / "out"
    out = run_example(
        "seq2seq_dates.py",
        "--samples=64",
        "--test-samples=4",
        "--epochs=1",
        "--units=8",
        "--verbose=0",
        f"--output-dir={out_dir}",
        cwd=tmp_path,
    )
    assert "exact match, greedy decoding, 4 held-out dates" in out
    assert (out_dir / "dates_attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out_dir / "seq2seq_dates.json").read_text())
    assert summary["backend"] == keras.backend.backend()
    assert summary["test_samples"] == 4
