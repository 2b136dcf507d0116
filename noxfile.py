"""Sessions for luong_attention: tests per backend, GPU tests, lint, demo, bench, docs, build.

`nox` alone runs the CPU test suite on JAX, PyTorch and TensorFlow.
Reuse environments between runs with `nox -r`.
"""

import logging
import os
import shutil
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.sessions = ["tests"]
# Sessions use virtualenv and pip; nox's probe for uv would log "uv binary not
# found." at every session.
nox.options.default_venv_backend = "virtualenv"
logging.getLogger("nox").addFilter(lambda record: record.getMessage() != "uv binary not found.")

PYPROJECT = nox.project.load_toml("pyproject.toml")
BACKENDS = ("jax", "torch", "tensorflow")

# Versions the suite is tested with, torch's included (the one place they
# are pinned); every session that installs a backend uses it, except
# tests_latest.
CONSTRAINTS = "constraints.txt"
# The CPU builds. PyPI's Linux torch wheel bundles CUDA (several GB): set
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu to add PyTorch's CPU
# index to the pip call that installs torch (and only that one);
# TORCH_CPU_REQUIREMENT replaces the requirement itself.
CPU_REQUIREMENTS = {
    "jax": ["jax"],
    "torch": [os.environ.get("TORCH_CPU_REQUIREMENT", "torch")],
    "tensorflow": ["tensorflow-cpu"],
}
TORCH_INDEX_URL = os.environ.get("TORCH_INDEX_URL")
GPU_REQUIREMENTS = {
    "jax": [os.environ.get("JAX_GPU_REQUIREMENT", "jax[cuda12]")],
    "torch": [os.environ.get("TORCH_GPU_REQUIREMENT", "torch")],
    "tensorflow": [os.environ.get("TENSORFLOW_GPU_REQUIREMENT", "tensorflow[and-cuda]")],
}
# Packages of tests/test_export.py, per backend: TensorFlow for JAX's
# SavedModel route (jax2tf), ONNX and ONNX Runtime for the others.
EXPORT_GROUPS = {
    "jax": ("export-jax",),
    "torch": ("onnx-torch",),
    "tensorflow": ("onnx-tensorflow",),
}
# Prints the number of accelerators the backend sees, and whether a CPU
# build of torch carries CUDA.
DEVICE_PROBE = {
    "jax": "import jax; print(sum(d.platform == 'gpu' for d in jax.devices()))",
    "torch": "import torch; print(torch.cuda.device_count() if torch.version.cuda else 0)",
    "tensorflow": "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))",
}


def _check_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}; expected one of {BACKENDS}")


def _install(session, backend, requirements, *groups, constrain=True):
    _check_backend(backend)
    pins = ("-c", CONSTRAINTS) if constrain else ()
    index = ("--extra-index-url", TORCH_INDEX_URL) if backend == "torch" and TORCH_INDEX_URL else ()
    session.install(*requirements[backend], *pins, *index)
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, *groups), *pins)
    session.env["KERAS_BACKEND"] = backend
    # TensorFlow's C++ INFO and WARNING lines.
    session.env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _gpu_count(session, backend):
    """The number of GPUs the backend sees; None under `nox --install-only` (nothing runs)."""
    out = session.run("python", "-c", DEVICE_PROBE[backend], silent=True)
    return None if out is None else int(out.strip().splitlines()[-1])


def _install_cpu(session, backend, *groups, constrain=True):
    _install(session, backend, CPU_REQUIREMENTS, *groups, constrain=constrain)
    if backend == "torch":
        out = session.run("python", "-c", "import torch; print(torch.version.cuda)", silent=True)
        if out is None:  # `nox --install-only` runs no commands
            return
        cuda = out.strip().splitlines()[-1]
        if cuda != "None":
            session.error(
                f"CPU session got a CUDA build of torch (torch.version.cuda={cuda}); "
                "set TORCH_CPU_REQUIREMENT to a CPU build."
            )


@nox.session
@nox.parametrize("backend", BACKENDS)
def tests(session, backend):
    """Run the test suite on the CPU build of one backend."""
    _install_cpu(session, backend, "test", *EXPORT_GROUPS[backend])
    session.run("pytest", *session.posargs)


@nox.session(default=False)
@nox.parametrize("backend", BACKENDS)
def tests_latest(session, backend):
    """Run the test suite with the newest releases (no constraints file) on one backend."""
    _install_cpu(session, backend, "test", *EXPORT_GROUPS[backend], constrain=False)
    session.run("pytest", *session.posargs)


# The environment of GPU runs, as benchmarks/gpu_run.sh sets it: JAX takes
# memory as it needs it (tests) and full float32 matmuls (no TF32; the tests'
# conftest sets it too under --check-gpu).
GPU_ENV = {
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
    "JAX_DEFAULT_MATMUL_PRECISION": "highest",
}


def _install_gpu(session, backend, *groups):
    _install(session, backend, GPU_REQUIREMENTS, *groups)
    if _gpu_count(session, backend) == 0:
        session.error(f"{backend} sees no GPU")
    session.env.update(GPU_ENV)


@nox.session(default=False)
@nox.parametrize("backend", BACKENDS)
def tests_gpu(session, backend):
    """Run the test suite on a GPU build of one backend; fails without a GPU."""
    _install_gpu(session, backend, "test")
    junit = Path("gpu-results", f"junit-{backend}.xml")
    session.run("pytest", "--check-gpu", f"--junitxml={junit}", *session.posargs)


@nox.session(default=False)
@nox.parametrize("backend", BACKENDS)
def bench_gpu(session, backend):
    """Run the GPU benchmark (benchmarks/gpu.py) on one backend; results in gpu-results/."""
    _install_gpu(session, backend, "bench")
    session.env.pop("XLA_PYTHON_CLIENT_PREALLOCATE")
    session.env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = "0.9"
    session.run(
        "python", "benchmarks/gpu.py", "--out=gpu-results", "--require-gpu", *session.posargs
    )


@nox.session(default=False)
def demo(session):
    """Run a small demo of the layer (backend: `nox -s demo -- torch`)."""
    backend = session.posargs[0] if session.posargs else "jax"
    _install_cpu(session, backend)
    session.run("python", "examples/demo.py")


# Where `nox -s examples` writes the examples' figures and results (tracked:
# the docs are built from them).
EXAMPLE_RESULTS = Path("benchmarks", "results", "examples")


@nox.session(default=False)
@nox.parametrize("backend", BACKENDS)
def examples(session, backend):
    """Run every example on one backend; results go to benchmarks/results/examples/<backend>/."""
    _install_cpu(session, backend, "examples")
    out = EXAMPLE_RESULTS / backend
    for script in ("seq2seq_dates.py", "text_similarity.py"):
        session.run("python", f"examples/{script}", f"--output-dir={out}", *session.posargs)
    session.run("python", "examples/demo.py")
    session.run("python", "examples/distributed_training.py")


def _test_env_pythons(session, env_prefix):
    """Each backend's Python: `$<env_prefix>_<BACKEND>`, else the tests session's venv."""
    pythons = {}
    for backend in BACKENDS:
        env_var = f"{env_prefix}_{backend.upper()}"
        python = os.environ.get(env_var) or os.path.join(
            ".nox", f"tests-backend-{backend}", "bin", "python"
        )
        if not os.path.exists(python):
            session.error(
                f"No {backend} environment at {python}: run `nox -s tests` first "
                f"(or set {env_var} to a Python that has {backend}, keras and this package)"
            )
        pythons[backend] = python
    return pythons


@nox.session(venv_backend="none", default=False)
def crossbackend(session):
    """Check that jax, torch and tensorflow agree and read each other's .keras files."""
    # Reuses the venvs of the tests sessions (one install per backend); the
    # driver runs each backend's worker with that venv's Python.
    pythons = _test_env_pythons(session, "CROSSBACKEND_PYTHON")
    session.run(
        pythons["jax"],
        "tests/crossbackend/driver.py",
        *(f"--python={backend}={python}" for backend, python in pythons.items()),
        *session.posargs,
        external=True,
    )


@nox.session(venv_backend="none", default=False)
def bench(session):
    """Benchmark grid, end to end and overhead on all three backends; writes the auto table."""
    # Reuses the tests sessions' venvs (one per backend, as crossbackend does):
    # each already holds its backend, this package (editable) and matplotlib,
    # and one venv with all three backends would install them a second time
    # and pin numpy/protobuf for TensorFlow and PyTorch together. grid.py runs
    # each backend in its own process with that venv's Python.
    # Options after `--`: --quick, --only BACKEND, --rounds N, --min-cell-ms MS (grid.py -h).
    pythons = _test_env_pythons(session, "BENCH_PYTHON")
    session.run(
        pythons["jax"],
        "benchmarks/grid.py",
        *(f"--python={backend}={python}" for backend, python in pythons.items()),
        *session.posargs,
        external=True,
    )
    session.run(pythons["jax"], "benchmarks/report.py", external=True)


@nox.session(default=False)
def lint(session):
    """Lint and check formatting with ruff."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(default=False)
def docs(session):
    """Build the documentation site into site/ with warnings as errors."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "docs"))
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session(default=False)
def docs_browser(session):
    """Build the site and check it in headless Chromium; screenshot to site-check/home.png."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "docs", "docs-browser"))
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")
    session.run("python", "docs/check_site.py", "site", "--screenshot-dir", "site-check")


def _check_dist(session, dist):
    """The wheel and the sdist carry the license; the sdist leaves the tests out."""
    import tarfile
    import zipfile

    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    wheel_names = zipfile.ZipFile(wheel).namelist()
    with tarfile.open(sdist) as tar:
        sdist_names = [name.split("/", 1)[-1] for name in tar.getnames()]
    problems = []
    if not any(name.endswith(".dist-info/licenses/LICENSE") for name in wheel_names):
        problems.append(f"{wheel.name} has no LICENSE")
    if "LICENSE" not in sdist_names:
        problems.append(f"{sdist.name} has no LICENSE")
    if any(name.startswith("tests/") for name in sdist_names):
        problems.append(f"{sdist.name} ships tests/")
    if not any(name.startswith("luong_attention/") for name in wheel_names):
        problems.append(f"{wheel.name} has no luong_attention package")
    if problems:
        session.error("; ".join(problems))


@nox.session(default=False)
def build(session):
    """Build sdist and wheel, check them, and run the test suite against the installed wheel."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "build"))
    tmp = Path(session.create_tmp()).resolve()
    dist = tmp / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    # The wheel is built from the sdist, so a file the sdist leaves out fails here.
    session.run("python", "-m", "build", "--outdir", str(dist))
    session.run("twine", "check", "--strict", *sorted(str(f) for f in dist.iterdir()))
    _check_dist(session, dist)

    # A fresh venv holding the wheel (not the source tree) and one backend.
    session.install(*CPU_REQUIREMENTS["jax"], "-c", CONSTRAINTS)
    (wheel,) = dist.glob("*.whl")
    test_groups = nox.project.dependency_groups(PYPROJECT, "test", *EXPORT_GROUPS["jax"])
    session.install("--force-reinstall", "--no-deps", str(wheel))
    session.install(str(wheel), *test_groups, "-c", CONSTRAINTS)
    session.env["KERAS_BACKEND"] = "jax"
    session.env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    # The suite and what it reads, copied where the package source is not.
    suite = tmp / "suite"
    shutil.rmtree(suite, ignore_errors=True)
    suite.mkdir()
    # benchmarks/: tests/test_auto_table.py recomputes the GPU rows from its results.
    for name in ("tests", "examples", "docs", "benchmarks"):
        shutil.copytree(name, suite / name, ignore=shutil.ignore_patterns("__pycache__", "output"))
    for name in ("README.md", "pyproject.toml"):
        shutil.copy(name, suite / name)
    session.chdir(suite)
    where = session.run(
        "python", "-c", "import luong_attention; print(luong_attention.__file__)", silent=True
    )
    if where is not None and "site-packages" not in where:
        session.error(f"The tests would import luong_attention from {where.strip()}, not the wheel")
    session.run("pytest", "-p", "no:cacheprovider", *session.posargs)
