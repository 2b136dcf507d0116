"""Cross-backend check: same inputs and weights, same numbers on every backend.

Runs `tests/crossbackend/worker.py` once per backend, each with the Python of
that backend's own environment, on inputs written once here; then compares:

- outputs and returned weights of every case on jax, torch and tensorflow,
  pairwise and against the NumPy reference in `tests/reference.py`;
- the `.keras` file saved under each backend, loaded under each backend
  (all 3 x 3 pairs), against the saving backend's own outputs.

Exit status 0 when every difference is within the tolerance, 1 otherwise.

Interpreters, first found wins, for each backend:
  --python BACKEND=PATH                    (repeatable)
  CROSSBACKEND_PYTHON_JAX / _TORCH / _TENSORFLOW
  --venv-root DIR                          DIR/<backend>/bin/python
  .nox/tests-backend-<backend>/bin/python  made by `nox -s tests`

    python tests/crossbackend/driver.py --venv-root /work/venvs
"""

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.crossbackend.cases import CASES, case_arrays, make_all_arrays  # noqa: E402
from tests.helpers import run_subprocess  # noqa: E402
from tests.reference import reference_attention  # noqa: E402

BACKENDS = ("jax", "torch", "tensorflow")
TOLERANCE = 1e-5
OUTPUTS = ("output", "weights", "output_fast")
# Seconds one worker phase may take (a backend's import included) before it
# and its children are killed.
WORKER_TIMEOUT = 900


def find_interpreters(pairs, venv_root):
    given = {}
    for pair in pairs:
        backend, sep, path = pair.partition("=")
        if not sep or backend not in BACKENDS:
            raise SystemExit(
                f"--python expects BACKEND=PATH with BACKEND in {BACKENDS}; got {pair!r}"
            )
        given[backend] = Path(path)
    found, missing = {}, []
    for backend in BACKENDS:
        candidates = [
            given.get(backend),
            os.environ.get(f"CROSSBACKEND_PYTHON_{backend.upper()}"),
            venv_root and Path(venv_root) / backend / "bin" / "python",
            ROOT / ".nox" / f"tests-backend-{backend}" / "bin" / "python",
        ]
        for candidate in candidates:
            if candidate and Path(candidate).exists():
                found[backend] = Path(candidate)
                break
        else:
            missing.append(f"{backend} (tried {', '.join(str(c) for c in candidates if c)})")
    if missing:
        raise SystemExit(
            "No Python found for: " + "; ".join(missing) + ". Run `nox -s tests` first "
            "(it makes .nox/tests-backend-<backend>), or pass --venv-root / --python."
        )
    return found


def run_workers(interpreters, phase, directory):
    for backend, python in interpreters.items():
        start = time.perf_counter()
        env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
        result = run_subprocess(
            [str(python), "-m", "tests.crossbackend.worker", phase, str(directory)],
            timeout=WORKER_TIMEOUT,
            env=env,
            cwd=ROOT,
            check=False,
        )
        if result.returncode != 0:
            print(result.stdout, result.stderr, sep="\n")
            raise SystemExit(f"{backend} worker ({python}) failed in phase {phase!r}")
        print(f"  {backend:<10} {phase:<7} {time.perf_counter() - start:5.1f} s  ({python})")


def reference(name, arrays):
    case = CASES[name]
    masks = {
        k: arrays[k]
        for k in ("query_mask", "value_mask", "key_mask", "attention_mask")
        if k in arrays
    }
    layer = case["layer"]
    output, weights = reference_attention(
        arrays["query"],
        arrays["value"],
        arrays.get("key"),
        **masks,
        causal=layer.get("causal", False) or case.get("call", {}).get("use_causal_mask", False),
        causal_alignment=layer.get("causal_alignment", "top_left"),
        score_mode=layer.get("score_mode", "dot"),
        scale=arrays.get("weight:scale"),
        concat_score_weight=arrays.get("weight:concat_score_weight", 1.0),
        general_score_weight=arrays.get("weight:general_score_weight"),
    )
    return {"output": output, "weights": weights, "output_fast": output}


class Report:
    def __init__(self, tolerance):
        self.tolerance = tolerance
        self.worst = 0.0
        self.failures = []
        self.count = 0

    def compare(self, label, a, b):
        self.count += 1
        if a.shape != b.shape:
            self.failures.append(f"{label}: shapes {a.shape} != {b.shape}")
            return
        diff = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
        self.worst = max(self.worst, diff)
        if not diff <= self.tolerance:  # NaN fails too
            self.failures.append(f"{label}: max |difference| {diff:.3g} > {self.tolerance:g}")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--python", action="append", default=[], metavar="BACKEND=PATH")
    parser.add_argument("--venv-root", help="directory holding <backend>/bin/python")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    parser.add_argument("--keep", help="directory to keep the inputs, results and .keras files in")
    args = parser.parse_args(argv)
    interpreters = find_interpreters(args.python, args.venv_root)

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(args.keep or tmp)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = make_all_arrays()
        np.savez(directory / "inputs.npz", **arrays)
        print(f"{len(CASES)} cases; workers:")
        run_workers(interpreters, "compute", directory)
        run_workers(interpreters, "load", directory)
        computed = {b: dict(np.load(directory / f"compute_{b}.npz")) for b in BACKENDS}
        loaded = {b: dict(np.load(directory / f"load_{b}.npz")) for b in BACKENDS}

    report = Report(args.tolerance)
    for name in CASES:
        expected = reference(name, case_arrays(arrays, name))
        for out in OUTPUTS:
            for backend in BACKENDS:
                for variant in ("auto", "reference", "model"):
                    got = computed[backend][f"{name}/{variant}/{out}"]
                    report.compare(f"{name} {out} {backend}/{variant} vs NumPy", got, expected[out])
            for a, b in itertools.combinations(BACKENDS, 2):
                for variant in ("auto", "reference", "model"):
                    key = f"{name}/{variant}/{out}"
                    report.compare(f"{key}: {a} vs {b}", computed[a][key], computed[b][key])
            for saved, loader in itertools.product(BACKENDS, BACKENDS):
                report.compare(
                    f"{name} {out}: saved by {saved}, loaded by {loader}",
                    loaded[loader][f"{saved}/{name}/{out}"],
                    computed[saved][f"{name}/model/{out}"],
                )
    print(
        f"{report.count} comparisons, worst max |difference| {report.worst:.3g} (tolerance {args.tolerance:g})"
    )
    for failure in report.failures:
        print("FAIL", failure)
    if report.failures:
        print(f"{len(report.failures)} of {report.count} comparisons failed")
        return 1
    print("OK: jax, torch and tensorflow agree; .keras files load across all 3 x 3 pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
