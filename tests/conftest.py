import os
import zlib

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Hypothesis profiles: "ci" (default) runs few, fixed examples (derandomized,
# so CI is reproducible); "dev" explores more. HYPOTHESIS_PROFILE=dev pytest ...
# JAX compiles each op once per new shape in eager mode (seconds per example
# on 2 cores), so CI draws fewer examples there.
settings.register_profile(
    "ci",
    max_examples=3 if keras.backend.backend() == "jax" else 12,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    parser.addoption(
        "--check-gpu",
        action="store_true",
        help="Fail at start-up unless the Keras backend sees a GPU; run gpu tests.",
    )


def _backend_sees_gpu():
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend: {keras.backend.backend()}"


def pytest_configure(config):
    if config.getoption("--check-gpu") and not _backend_sees_gpu():
        raise pytest.UsageError(
            f"--check-gpu given but the {keras.backend.backend()} backend sees no GPU"
        )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--check-gpu"):
        return
    skip_gpu = pytest.mark.skip(reason="GPU test; run with --check-gpu")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id: `-k` runs see the data of the full run."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
