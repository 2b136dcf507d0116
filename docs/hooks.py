"""MkDocs hooks: the figures and tables of the site, generated from result files.

The benchmark (`nox -s bench`) and the examples (`nox -s examples`) write their
results under `benchmarks/results/`. At build time this hook

- publishes every figure found there under `generated/` (so pages link
  `generated/grid.png`, `generated/examples/jax/dates_attention.png`);
- replaces `<!-- generated: benchmark-tables -->` with the tables the
  benchmark wrote (`benchmarks/results/grid.md`),
  `<!-- generated: skip-tables -->` with the tables of skipping padding
  (`benchmarks/results/skip/grid.md`, from `grid.py --parts skip`),
  `<!-- generated: gpu-tables -->` with the GPU page that
  `benchmarks/gpu_report.py` wrote (`benchmarks/results/gpu/gpu.md`), and
  `<!-- generated: examples-table -->` with a table built from the examples'
  JSON summaries (`benchmarks/results/examples/<backend>/*.json`).

A marker whose data is missing is an error, so the site never shows a table
that was typed by hand or silently left out.
"""

import json
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BACKENDS = {"jax": "JAX", "torch": "PyTorch", "tensorflow": "TensorFlow"}


def on_files(files, config):
    for path in sorted(RESULTS.rglob("*.png")):
        uri = "generated/" + path.relative_to(RESULTS).as_posix()
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    replacements = {
        "<!-- generated: benchmark-tables -->": _benchmark_tables,
        "<!-- generated: skip-tables -->": _skip_tables,
        "<!-- generated: gpu-tables -->": _gpu_tables,
        "<!-- generated: examples-table -->": _examples_table,
    }
    for marker, make in replacements.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown


def _benchmark_tables():
    return _generated_page(RESULTS / "grid.md", "No benchmark tables", "nox -s bench")


def _skip_tables():
    return _generated_page(
        RESULTS / "skip" / "grid.md",
        "No tables of skipping padding",
        "python benchmarks/grid.py --only torch --parts skip --out benchmarks/results/skip",
    )


def _gpu_tables():
    return _generated_page(
        RESULTS / "gpu" / "gpu.md", "No GPU tables", "python3 benchmarks/gpu_report.py"
    )


def _generated_page(path, missing, command):
    """The markdown file a benchmark wrote, headed by where it comes from."""
    if not path.exists():
        raise PluginError(f"{missing} at {path}: run `{command}`")
    rel = path.relative_to(ROOT).as_posix()
    return f"From `{rel}`:\n\n{path.read_text(encoding='utf-8').strip()}\n"


def _examples_table():
    runs = {}
    for path in sorted((RESULTS / "examples").glob("*/*.json")):
        summary = json.loads(path.read_text(encoding="utf-8"))
        runs[(summary["script"], summary["backend"])] = summary
    if not runs:
        raise PluginError(
            "No example results in benchmarks/results/examples: run `nox -s examples`"
        )
    backends = [b for b in BACKENDS if any(backend == b for _, backend in runs)]
    header = "| script | measure | " + " | ".join(BACKENDS[b] for b in backends) + " |"
    lines = [header, "|---|---|" + "---|" * len(backends)]
    for script in sorted({script for script, _ in runs}):
        cells = [runs.get((script, b)) for b in backends]
        first = next(c for c in cells if c)
        lines.append(
            f"| `{script}` | {first['metric']}, {first['test_samples']:,} held-out | "
            + " | ".join(f"{c['accuracy']:.1%}" if c else "—" for c in cells)
            + " |"
        )
        lines.append(
            "| | wall time | "
            + " | ".join(f"{c['wall_time_s']:.0f} s" if c else "—" for c in cells)
            + " |"
        )
    keras_versions = sorted({s["keras"] for s in runs.values()})
    lines.append("")
    lines.append(
        f"Keras {', '.join(keras_versions)}; default arguments of each script "
        "(`nox -s examples`), one run per backend."
    )
    return "\n".join(lines)
