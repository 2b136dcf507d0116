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


def _full_float32_matmuls():
    """Turns TF32 off, so float32 matrix products on the GPU keep float32 precision.

    Ampere and later GPUs round float32 matmul inputs to TF32 (10-bit
    mantissa) by default on PyTorch and JAX (about 1e-3 relative error); the
    suite's float32 tolerances are written for float32.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
    elif backend == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    else:
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)


def pytest_configure(config):
    if not config.getoption("--check-gpu"):
        return
    if not _backend_sees_gpu():
        raise pytest.UsageError(
            f"--check-gpu given but the {keras.backend.backend()} backend sees no GPU"
        )
    _full_float32_matmuls()


def pytest_collection_modifyitems(config, items):
    if config.getoption("--check-gpu"):
        return
    skip_gpu = pytest.mark.skip(reason="GPU test; run with --check-gpu")
    for item in items:
        # The marker, not `item.keywords`: keywords hold the names of the
        # parent directories too (a checkout in a folder named "gpu").
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip_gpu)


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id: `-k` runs see the data of the full run."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
