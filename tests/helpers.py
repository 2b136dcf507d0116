"""Helpers shared by the suite, one per job.

- `to_numpy`, `value_and_grad`: results and autodiff on any backend
  (`value_and_grad` and `traced_forms` are the places the tests touch a
  backend directly: Keras has no backend-independent gradient function or
  tracer).
- `traced_forms`: a function traced by each of the backend's tracers.
- `supported_paths`: the implementation paths a call can take, for parametrize.
- `small_blocks`: blocked-path options that make tiny inputs cross blocks.
- `finite_differences`: central differences of a float64 loss.
- `run_subprocess`: a child process with a timeout that kills its whole group.
- `run_layer_test`: a layer's config, symbolic, eager, training, saving round trip.
- `benchmark_module`: a script of `benchmarks/` imported as a module.

Keras is imported inside the helpers that use it: the cross-backend driver
imports `run_subprocess` from a Python that has no Keras.
"""

import functools
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

# --- results, gradients and traces ---------------------------------------------


def to_numpy(x):
    from keras import ops

    return ops.convert_to_numpy(x)


def value_and_grad(fn, *args):
    """Returns `fn(*args)` (a scalar) and its gradients w.r.t. each argument.

    Arguments are NumPy arrays; results are NumPy arrays.
    """
    import keras
    from keras import ops

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        value, grads = jax.value_and_grad(fn, argnums=tuple(range(len(args))))(
            *[ops.convert_to_tensor(a) for a in args]
        )
    elif backend == "torch":
        import torch

        tensors = [ops.convert_to_tensor(a).detach().requires_grad_(True) for a in args]
        value = fn(*tensors)
        grads = torch.autograd.grad(value, tensors, allow_unused=True)
        grads = [
            torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads, strict=True)
        ]
    elif backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = fn(*tensors)
        grads = tape.gradient(value, tensors)
        grads = [tf.zeros_like(t) if g is None else g for t, g in zip(tensors, grads, strict=True)]
    else:
        raise ValueError(f"Unsupported backend: {backend}")
    return to_numpy(value), [to_numpy(g) for g in grads]


def traced_forms(fn, example, *, warns=True):
    """`fn` traced by each of the backend's tracers that take it: (name, traced fn).

    `example` holds NumPy arrays for the tracers that need inputs
    (PyTorch's). `warns`: TorchScript's trace warns about the Python checks
    of a luong_attention call; a function without one warns of nothing.
    """
    import contextlib

    import keras
    import pytest

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return [("jax.jit", jax.jit(fn))]
    if backend == "tensorflow":
        import tensorflow as tf

        return [("tf.function", tf.function(fn))]
    import torch

    class Module(torch.nn.Module):
        def forward(self, *args):
            return fn(*args)

    tensors = tuple(torch.from_numpy(x) for x in example)
    exported = torch.export.export(Module(), tensors).module()
    # TorchScript's trace is what Keras's ONNX export runs on PyTorch.
    expect = pytest.warns(torch.jit.TracerWarning) if warns else contextlib.nullcontext()
    with expect:
        scripted = torch.jit.trace(Module(), tensors, check_trace=False)
    return [("torch.export", exported), ("torch.jit.trace", scripted)]


def finite_differences(loss, arrays, names, eps=1e-6):
    """Central differences of `loss(**arrays)` w.r.t. each of `names`, in float64.

    `arrays` maps every argument of `loss` to its value; the ones in `names`
    are perturbed one element at a time. Returns one gradient per name.
    """
    arrays = {name: np.asarray(value, np.float64) for name, value in arrays.items()}
    grads = []
    for name in names:
        grad = np.zeros_like(arrays[name])
        for index in np.ndindex(*grad.shape):
            plus, minus = arrays[name].copy(), arrays[name].copy()
            plus[index] += eps
            minus[index] -= eps
            grad[index] = (loss(**{**arrays, name: plus}) - loss(**{**arrays, name: minus})) / (
                2 * eps
            )
        grads.append(grad)
    return grads


# --- implementation paths -------------------------------------------------------

# "auto" and "reference" run every call: they are never left out.
ALWAYS_SUPPORTED = ("auto", "reference")
# The options that decide whether a path can run a call at all.
SUPPORT_OPTIONS = ("score_mode", "dropout", "training", "return_attention_scores")


def supported_paths(**options):
    """The implementation paths that can run a call with these options, for parametrize.

    `options` are keyword arguments of `luong_attention`; those that do not
    decide support (masks, causal, ...) are ignored. Each other path is asked
    once, on a tiny call: a path whose `ValueError` names `implementation` is
    left out. "auto" and "reference" are always in.
    """
    relevant = {k: v for k, v in options.items() if k in SUPPORT_OPTIONS}
    return _supported_paths(tuple(sorted(relevant.items())))


@functools.cache
def _supported_paths(options):
    from luong_attention import _validation, luong_attention

    options = dict(options)
    query = np.ones((1, 2, 2), "float32")
    weight = {}
    if options.get("score_mode") == "general":
        weight["general_score_weight"] = np.eye(2, dtype="float32")
    paths = list(ALWAYS_SUPPORTED)
    for path in _validation.IMPLEMENTATIONS:
        if path in ALWAYS_SUPPORTED:
            continue
        try:
            luong_attention(query, query, implementation=path, **weight, **options)
        except ValueError as error:
            if "argument implementation" in str(error):
                continue
            raise
        paths.append(path)
    return tuple(paths)


def small_blocks(block_size=2, *, recompute_weights=False, monkeypatch=None):
    """`BlockedOptions` under which tiny inputs cross several blocks, chained one by one.

    Pass them as `luong_attention(..., blocked_options=small_blocks())`.
    `recompute_weights=True` makes the backward pass recompute the weights
    block by block (what long inputs get) instead of keeping them. Given
    `monkeypatch`, they are also the blocked path's default for the test, for
    calls that cannot pass them (the layer has no `blocked_options`): what
    `_dispatch.blocked_options` gives a call, and `BlockedOptions()` for the
    kernel called alone. The test starts with no checked signatures, whose
    kernels keep the options they were checked with, and its own are
    dropped after it.
    """
    from luong_attention import _dispatch, functional
    from luong_attention.kernels import blocked

    keep = blocked.BlockedOptions().save_weights_below_bytes
    options = blocked.BlockedOptions(
        block_size=block_size,
        chain_above_bytes=0,
        save_weights_below_bytes=0 if recompute_weights else keep,
    )
    if monkeypatch is not None:
        monkeypatch.setattr(blocked, "BlockedOptions", lambda: options)
        monkeypatch.setattr(_dispatch, "blocked_options", lambda call, backend: options)
        monkeypatch.setattr(functional, "_CHECKED", {})
    return options


# --- processes ---------------------------------------------------------------


# --- layers --------------------------------------------------------------------


def _num_seed_generators(layer):
    import keras

    return sum(isinstance(v, keras.random.SeedGenerator) for v in vars(layer).values())


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_shape,
    expected_output_shape,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=None,
    expected_num_seed_generators=None,
    expected_num_losses=None,
    supports_masking=None,
    run_training_check=True,
    run_mixed_precision_check=True,
    saving_dir=None,
):
    """Round-trips a layer: config, serialization, symbolic and eager calls, training, saving.

    Config round trip, serialization, a symbolic call with `None` dims, an
    eager call, weight and seed-generator counts, one `fit` step, mixed
    precision, and a `.keras` save/load when `saving_dir` is given.
    """
    import keras

    rng = np.random.default_rng(0)
    layer = layer_cls(**init_kwargs)

    config = layer.get_config()
    revived = layer_cls.from_config(config)
    assert revived.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is layer_cls
    assert restored.get_config() == config
    if supports_masking is not None:
        assert layer.supports_masking == supports_masking

    # Symbolic call with unknown batch and time dims.
    symbolic = [keras.Input(batch_shape=(None, None, s[-1])) for s in input_shape]
    out = layer_cls(**init_kwargs)(symbolic)
    assert tuple(out.shape) == (None, None, expected_output_shape[-1])

    # Eager call.
    inputs = [rng.standard_normal(s).astype("float32") for s in input_shape]
    output = layer(inputs)
    assert tuple(output.shape) == tuple(expected_output_shape)
    assert np.all(np.isfinite(to_numpy(output)))
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights
    if expected_num_non_trainable_weights is not None:
        assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights
    if expected_num_seed_generators is not None:
        assert _num_seed_generators(layer) == expected_num_seed_generators
    if expected_num_losses is not None:
        assert len(layer.losses) == expected_num_losses

    def model_of(**kwargs):
        model_inputs = [keras.Input(shape=s[1:]) for s in input_shape]
        outputs = layer_cls(**{**init_kwargs, **kwargs})(model_inputs)
        return keras.Model(model_inputs, outputs)

    if run_training_check:
        model = model_of()
        model.compile(optimizer="sgd", loss="mse")
        target = rng.standard_normal(expected_output_shape).astype("float32")
        history = model.fit(inputs, target, epochs=1, batch_size=len(target), verbose=0)
        assert np.isfinite(history.history["loss"][0])

    if run_mixed_precision_check:
        mixed = layer_cls(**{**init_kwargs, "dtype": "mixed_float16"})
        output = mixed(inputs)
        assert keras.backend.standardize_dtype(output.dtype) == "float16"
        assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in mixed.weights)

    if saving_dir is not None:
        model = model_of()
        expected = to_numpy(model(inputs))
        path = f"{saving_dir}/model.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        np.testing.assert_allclose(to_numpy(loaded(inputs)), expected, rtol=0, atol=0)


def run_subprocess(args, timeout, env=None, cwd=None, check=True):
    """Runs `args` in a new session; returns the `subprocess.CompletedProcess`.

    The child leads its own process group, so on timeout the whole group (the
    child and every process it started: workers, compilers) is killed with
    SIGKILL, and `subprocess.TimeoutExpired` is raised with the output so far.
    With `check`, a non-zero exit raises `AssertionError` showing the command,
    the exit status and the captured stdout and stderr. `env` defaults to this
    process's environment, so KERAS_BACKEND carries over.
    """
    process = subprocess.Popen(
        [str(a) for a in args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy() if env is None else env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as timed_out:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise subprocess.TimeoutExpired(
            process.args, timeout, output=stdout, stderr=stderr
        ) from timed_out
    finally:
        # A child that exited may leave workers behind in its group.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(result.args)} exited with {result.returncode}\n"
            f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        )
    return result


# --- benchmark scripts -------------------------------------------------------


def benchmark_module(name, monkeypatch):
    """`benchmarks/<name>.py` as module `name`, in `sys.modules` for this test only."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module
