"""The suite's own helpers do what the tests rely on."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import finite_differences, run_subprocess, small_blocks


def test_run_subprocess_returns_the_output_and_status():
    command = [sys.executable, "-c", "print('out'); raise SystemExit(3)"]
    result = run_subprocess(command, timeout=60, check=False)
    assert result.returncode == 3 and result.stdout == "out\n"
    with pytest.raises(AssertionError, match="exited with 3"):
        run_subprocess(command, timeout=60)


def test_run_subprocess_kills_the_children_on_timeout(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time;"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid));"
        "time.sleep(60)"
    )
    with pytest.raises(subprocess.TimeoutExpired):
        run_subprocess([sys.executable, "-c", script], timeout=5)
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child not yet reaped by its new parent is a zombie: dead.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_finite_differences_of_a_known_function():
    arrays = {"x": np.array([1.0, -2.0]), "y": np.array(3.0)}
    grads = finite_differences(lambda x, y: float(np.sum(x**2) * y), arrays, ["x", "y"])
    np.testing.assert_allclose(grads[0], [6.0, -12.0], rtol=1e-6)
    np.testing.assert_allclose(grads[1], 5.0, rtol=1e-6)


def test_small_blocks_are_the_blocked_default_only_when_asked(monkeypatch):
    import keras

    from luong_attention import _dispatch
    from luong_attention.kernels import blocked

    options = small_blocks(3, recompute_weights=True)
    assert (options.block_size, options.chain_above_bytes) == (3, 0)
    assert options.save_weights_below_bytes == 0
    assert blocked.BlockedOptions() != options
    call = _dispatch.Call(q_len=4096, kv_len=4096, training=True)
    assert _dispatch.blocked_options(call, keras.backend.backend()) != options
    small_blocks(3, recompute_weights=True, monkeypatch=monkeypatch)
    assert blocked.BlockedOptions() == options
    assert _dispatch.blocked_options(call, keras.backend.backend()) == options
