"""Collects GPU runs into one results folder: benchmark rows per backend, tests, environment.

A run folder is what `benchmarks/gpu_run.sh` wrote, or what direct
`benchmarks/gpu.py` calls wrote: `gpu_bench-<backend>.json`, the benchmark's
log (JSON lines: `gpu_bench-<backend>.log` from gpu_run.sh, or
`<backend>.log`), and where gpu_run.sh ran, `environment.txt`, `run.log`
and `junit-<backend>.xml`.

`benchmarks/gpu.py` rewrites its JSON after each case, so a run stopped
inside a case printed rows its JSON lacks. Those rows are taken from the
log (a row of the same case and path in the JSON wins). Every row is kept
with `"run"` (the run's name) and `"source"` (the file it came from); rows
of a case that a run left unmeasured (`"budget"`) are kept too. The
folder gets

- `gpu_bench-<backend>.json`: the header of each run under `"runs"` (with
  the `"caveats"` of a run by an older `gpu.py`), and
  the rows of all runs in the order given (a later run's row of the same
  case and path supersedes an earlier one where both are read);
- `<run>/environment.txt`, `<run>/run.log`, `<run>/junit-<backend>.xml`,
  copied as they are;
- `tests.json`: per run and backend, the JUnit totals and tests per module.

Runs collected into the folder before stay, unless a run of the same name
is collected again (it replaces them); a new run's rows come after theirs.

    python3 benchmarks/gpu_collect.py run1=/path/run1 run2=/path/run2
    python3 benchmarks/gpu_collect.py run3=gpu-results    # adds a run
"""

import argparse
import collections
import json
import os
import shutil
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
BACKENDS = ("jax", "torch", "tensorflow")
CASE = ("backend", "T", "D", "dtype", "mask", "mode", "impl")
COPIED = ("environment.txt", "run.log", *(f"junit-{b}.xml" for b in BACKENDS))
# Header keys of gpu.py's JSON that hold for the whole run.
HEADER = (
    *("device", "device_name", "keras", "python", "quick", "batch", "heads", "when"),
    "backward",  # what fwd+bwd pulled back; runs without it took the output's sum
)
# What a run of an older gpu.py did differently, by the header key that the
# fixed gpu.py writes.
CAVEATS = {
    "peak_mb": "peak_mb is not a peak: gpu.py read it after resetting the peak counter "
    "(it is the memory the case's inputs held then)",
    "training": "ours ran with training=False in fwd+bwd: 'auto' read the table's inference "
    "rows, and 'blocked' was differentiated through its forward pass, not its "
    "memory-saving backward",
    "backward": "fwd+bwd took the gradient of the output's sum (a cotangent of ones), not the "
    "dense cotangent a loss gives and the CPU grid pulls back",
}


def log_rows(path):
    """The JSON rows a gpu.py log printed (its other lines are warnings)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith('{"backend"'):
                rows.append(json.loads(line))
    return rows


def run_rows(folder, backend):
    """`(header, rows)` of one run's benchmark of `backend`; `(None, [])` if it has none.

    A run has none where it wrote neither the JSON nor a row in its log.
    """
    json_path = os.path.join(folder, f"gpu_bench-{backend}.json")
    logs = [
        p
        for p in (f"gpu_bench-{backend}.log", f"{backend}.log")
        if os.path.exists(os.path.join(folder, p))
    ]
    if not os.path.exists(json_path) and not logs:
        return None, []
    header, rows = {}, []
    if os.path.exists(json_path):
        with open(json_path, encoding="utf-8") as f:
            results = json.load(f)
        header = {k: results[k] for k in HEADER if k in results}
        header["elapsed_s"] = results.get("elapsed_s")
        header["caveats"] = [text for key, text in CAVEATS.items() if key not in results]
        rows = [{**r, "source": os.path.basename(json_path)} for r in results["rows"]]
    seen = {tuple(r[k] for k in CASE) for r in rows}
    recovered = 0
    for log in logs:
        for r in log_rows(os.path.join(folder, log)):
            key = tuple(r[k] for k in CASE)
            if r["backend"] == backend and key not in seen:
                seen.add(key)
                rows.append({**r, "source": log})
                recovered += 1
    if not os.path.exists(json_path) and not rows:
        return None, []  # a log without a row: the benchmark ran out of time before a case
    header["files"] = [os.path.basename(json_path), *logs]
    header["rows_from_log"] = recovered
    return header, rows


def junit_summary(path):
    """Totals and tests per module of one JUnit XML file."""
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root[0]
    totals = {k: int(suite.get(k)) for k in ("tests", "failures", "errors", "skipped")}
    modules = collections.Counter()
    for case in suite.iter("testcase"):
        modules[case.get("classname").split("::")[0].replace(".", "/") + ".py"] += 1
    return {
        **totals,
        "passed": totals["tests"] - totals["failures"] - totals["errors"] - totals["skipped"],
        "time_s": float(suite.get("time")),
        "timestamp": suite.get("timestamp"),
        "modules": dict(sorted(modules.items())),
    }


def _load(path, default):
    if not os.path.exists(path):
        return default
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def collect(runs, out):
    """Writes the results folder `out` from `runs`, a list of `(name, folder)`."""
    os.makedirs(out, exist_ok=True)
    names = {name for name, _ in runs}
    tests = {k: v for k, v in _load(os.path.join(out, "tests.json"), {}).items() if k not in names}
    for name, folder in runs:
        for file in COPIED:
            if os.path.exists(os.path.join(folder, file)):
                os.makedirs(os.path.join(out, name), exist_ok=True)
                shutil.copy(os.path.join(folder, file), os.path.join(out, name, file))
        for backend in BACKENDS:
            junit = os.path.join(folder, f"junit-{backend}.xml")
            if os.path.exists(junit):
                summary = junit_summary(junit)
                tests.setdefault(name, {})[backend] = {
                    "file": f"{name}/junit-{backend}.xml",
                    **summary,
                }
    with open(os.path.join(out, "tests.json"), "w", encoding="utf-8") as f:
        json.dump(tests, f, indent=1)
        f.write("\n")
    for backend in BACKENDS:
        path = os.path.join(out, f"gpu_bench-{backend}.json")
        merged = _load(path, None)
        if merged is not None:  # the runs collected before, less those collected again
            merged["runs"] = {k: v for k, v in merged["runs"].items() if k not in names}
            merged["rows"] = [r for r in merged["rows"] if r["run"] not in names]
        for name, folder in runs:
            header, rows = run_rows(folder, backend)
            if header is None:
                continue
            if merged is None:
                merged = dict(backend=backend, runs={}, rows=[])
            environment = os.path.join(name, "environment.txt")
            if os.path.exists(os.path.join(out, environment)):
                header["environment"] = environment
            merged["runs"][name] = header
            merged["rows"] += [{**r, "run": name} for r in rows]
        if merged is None:
            continue
        with open(path, "w", encoding="utf-8") as f:
            json.dump(merged, f, indent=1)
            f.write("\n")
        counts = collections.Counter(r["status"] for r in merged["rows"])
        print(f"wrote {path}: {dict(counts)}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="NAME=FOLDER", help="run folders, in order")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "gpu"))
    args = parser.parse_args(argv)
    runs = []
    for spec in args.runs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not os.path.isdir(folder):
            parser.error(f"Expected NAME=FOLDER with an existing folder. Received: {spec!r}")
        runs.append((name, folder))
    collect(runs, args.out)


if __name__ == "__main__":
    main()
