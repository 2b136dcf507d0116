"""Measures the multi-process and sequence-parallel runs that docs/scaling.md reports.

    python benchmarks/scaling.py --python jax=PATH --python torch=PATH --python tensorflow=PATH
    python benchmarks/scaling.py --render-only

Runs `examples/distributed_training.py --processes 2` with each backend's
Python (KERAS_BACKEND set per run) and `examples/sequence_parallel.py` on
jax, writes benchmarks/results/scaling.json, and renders it as the table in
benchmarks/results/scaling.md and between the markers in docs/scaling.md.
Without `--python`, each backend uses the venv of its nox tests session.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "scaling.json"
TABLE = ROOT / "benchmarks" / "results" / "scaling.md"
DOC = ROOT / "docs" / "scaling.md"
START, END = "<!-- scaling-results:start -->", "<!-- scaling-results:end -->"
BACKENDS = ("jax", "tensorflow", "torch")
EPOCHS, SAMPLES = 6, 256


def run(python, backend, script, *args):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "summary.json"
        env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
        subprocess.run(
            [python, str(ROOT / "examples" / script), f"--json={out}", *args],
            env=env,
            check=True,
            timeout=900,
            start_new_session=True,
        )
        return json.loads(out.read_text())


def measure(pythons):
    runs = []
    for backend in BACKENDS:
        summary = run(
            pythons[backend],
            backend,
            "distributed_training.py",
            "--processes=2",
            f"--epochs={EPOCHS}",
            f"--samples={SAMPLES}",
        )
        runs.append(summary)
    sequence = run(pythons["jax"], "jax", "sequence_parallel.py", "--devices=4", "--length=512")
    return {
        "generated_by": "python benchmarks/scaling.py",
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, 2 processes on 127.0.0.1",
        "epochs": EPOCHS,
        "samples": SAMPLES,
        "multiprocess": runs,
        "sequence_parallel": sequence,
    }


def render(results):
    lines = [
        f"Measured {results['date']} on {results['machine']}; "
        f"{results['epochs']} epochs of {results['samples']} samples, global batch 32. "
        "Wall time includes starting the workers and their backends.",
        "",
        "| backend | engine | processes | loss before | loss after | wall time (s) "
        "| workers' weights |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["multiprocess"]:
        same = len(set(r["weight_checksums"])) == 1
        lines.append(
            f"| {r['backend']} | {r['engine']} | {r['processes']} | {r['loss_before']:.3f} "
            f"| {r['loss_after']:.3f} | {r['wall_time_s']:.1f} "
            f"| {'identical' if same else 'DIFFER'} (sha256 {r['weight_checksums'][0][:12]}…) |"
        )
    s = results["sequence_parallel"]
    lines += [
        "",
        f"Sequence parallel on jax, (B, T, D) = {tuple(s['shape'])}, time sharded over "
        f"{s['devices']} CPU devices: largest difference from one device "
        f"{s['max_abs_difference']:.2g} (|difference| <= 1e-6 * (1 + |value|): "
        f"{s['within_1e-6']}); peak memory per "
        f"device {s['peak_bytes_per_device_sharded'] / 2**20:.2f} MiB against "
        f"{s['peak_bytes_one_device'] / 2**20:.2f} MiB on one device (XLA's compiled memory "
        "analysis; `device.memory_stats()` is None on CPU).",
    ]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append", default=[], metavar="BACKEND=PATH")
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    if args.render_only:
        results = json.loads(RESULTS.read_text())
    else:
        pythons = {
            b: str(ROOT / ".nox" / f"tests-backend-{b}" / "bin" / "python") for b in BACKENDS
        }
        for item in args.python:
            backend, _, path = item.partition("=")
            if backend not in BACKENDS:
                raise SystemExit(f"Unknown backend {backend!r}; expected one of {BACKENDS}")
            pythons[backend] = path
        results = measure(pythons)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    table = render(results)
    TABLE.write_text(table)
    doc = DOC.read_text()
    if START not in doc or END not in doc:
        raise SystemExit(f"{DOC} lacks the markers {START} / {END}")
    head, rest = doc.split(START, 1)
    DOC.write_text(f"{head}{START}\n{table}{END}{rest.split(END, 1)[1]}")
    print(table)


if __name__ == "__main__":
    sys.exit(main())
