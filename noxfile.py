"""Sessions for luong_attention: tests per backend, GPU tests, lint, demo, bench.

`nox` alone runs the CPU test suite on JAX, PyTorch and TensorFlow.
Reuse environments between runs with `nox -r`.
"""

import os

import nox

nox.needs_version = ">=2025.2.9"
nox.options.sessions = ["tests"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
BACKENDS = ("jax", "torch", "tensorflow")

# The one place the CPU builds are pinned. PyPI's Linux torch wheel bundles
# CUDA (several GB); torch==2.13.0 resolves to a CPU build on the project's
# machines. Elsewhere point TORCH_CPU_REQUIREMENT (and pip's index) at a CPU
# build, e.g. PIP_INDEX_URL=https://download.pytorch.org/whl/cpu.
CPU_REQUIREMENTS = {
    "jax": ["jax"],
    "torch": [os.environ.get("TORCH_CPU_REQUIREMENT", "torch==2.13.0")],
    "tensorflow": ["tensorflow-cpu"],
}
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


def _install(session, backend, requirements, *groups):
    _check_backend(backend)
    session.install(*requirements[backend])
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, *groups))
    session.env["KERAS_BACKEND"] = backend


def _gpu_count(session, backend):
    out = session.run("python", "-c", DEVICE_PROBE[backend], silent=True)
    return int(out.strip().splitlines()[-1])


def _install_cpu(session, backend, *groups):
    _install(session, backend, CPU_REQUIREMENTS, *groups)
    if backend == "torch":
        cuda = (
            session.run("python", "-c", "import torch; print(torch.version.cuda)", silent=True)
            .strip()
            .splitlines()[-1]
        )
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
def tests_gpu(session, backend):
    """Run the test suite on a GPU build of one backend; fails without a GPU."""
    _install(session, backend, GPU_REQUIREMENTS, "test")
    if _gpu_count(session, backend) == 0:
        session.error(f"{backend} sees no GPU")
    session.run("pytest", "--check-gpu", *session.posargs)


@nox.session(default=False)
def demo(session):
    """Run a small demo of the layer (backend: `nox -s demo -- torch`)."""
    backend = session.posargs[0] if session.posargs else "jax"
    _install_cpu(session, backend)
    session.run("python", "examples/demo.py")


@nox.session(default=False)
@nox.parametrize("backend", BACKENDS)
def examples(session, backend):
    """Run the examples in examples/ on one backend."""
    _install_cpu(session, backend, "examples")
    for script in sorted(os.listdir("examples")):
        if script.endswith(".py"):
            session.run("python", os.path.join("examples", script), *session.posargs)


@nox.session(venv_backend="none", default=False)
def crossbackend(session):
    """Check that jax, torch and tensorflow agree and read each other's .keras files."""
    # Reuses the venvs of the tests sessions (one install per backend); the
    # driver runs each backend's worker with that venv's Python.
    pythons = {}
    for backend in BACKENDS:
        env_var = f"CROSSBACKEND_PYTHON_{backend.upper()}"
        python = os.environ.get(env_var) or os.path.join(
            ".nox", f"tests-backend-{backend}", "bin", "python"
        )
        if not os.path.exists(python):
            session.error(
                f"No {backend} environment at {python}: run `nox -s tests` first "
                f"(or set {env_var} to a Python that has {backend}, keras and this package)"
            )
        pythons[backend] = python
    session.run(
        pythons["jax"],
        "tests/crossbackend/driver.py",
        *(f"--python={backend}={python}" for backend, python in pythons.items()),
        *session.posargs,
        external=True,
    )


@nox.session(default=False)
def bench(session):
    """Benchmark time and memory against Keras's attention on all three backends (CPU)."""
    # One environment holds the three backends (as in Keras's own CI); the
    # script measures each in its own subprocess.
    _install_cpu(session, "torch", "bench")
    session.install(*CPU_REQUIREMENTS["jax"], *CPU_REQUIREMENTS["tensorflow"])
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session(default=False)
def lint(session):
    """Lint and check formatting with ruff."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
