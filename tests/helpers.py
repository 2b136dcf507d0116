"""Test helpers shared by the suite: a layer-test runner and autodiff.

`value_and_grad` is the one place the tests touch a backend directly: Keras
has no backend-independent gradient function.
"""

import keras
import numpy as np
from keras import ops


def to_numpy(x):
    return ops.convert_to_numpy(x)


def value_and_grad(fn, *args):
    """Returns `fn(*args)` (a scalar) and its gradients w.r.t. each argument.

    Arguments are NumPy arrays; results are NumPy arrays.
    """
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


def _num_seed_generators(layer):
    return sum(isinstance(v, keras.random.SeedGenerator) for v in vars(layer).values())


def _random_inputs(shapes, rng):
    return [rng.standard_normal(s).astype("float32") for s in shapes]


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
    """Exercises a layer the way Keras's private `run_layer_test` does
    (`keras/src/testing/test_case.py`).

    Config round trip, serialization, a symbolic call with `None` dims, an
    eager call, weight and seed-generator counts, one `fit` step, mixed
    precision, and a `.keras` save/load when `saving_dir` is given.
    """
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
    inputs = _random_inputs(input_shape, rng)
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


def set_blocked_defaults(monkeypatch, **fields):
    """Makes the blocked path's default `BlockedOptions` use `fields` for one test."""
    import functools

    from luong_attention.kernels import blocked

    monkeypatch.setattr(
        blocked, "BlockedOptions", functools.partial(blocked.BlockedOptions, **fields)
    )


# --- Subprocesses -----------------------------------------------------------


def run_subprocess(args, timeout, env=None, cwd=None, check=True):
    """Runs `args` in a new session; returns the `subprocess.CompletedProcess`.

    The child leads its own process group, so on timeout the whole group (the
    child and every process it started: workers, compilers) is killed with
    SIGKILL, and `subprocess.TimeoutExpired` is raised with the output so far.
    With `check`, a non-zero exit raises `AssertionError` showing the command,
    the exit status and the captured stdout and stderr. `env` defaults to this
    process's environment, so KERAS_BACKEND carries over.
    """
    import os
    import signal
    import subprocess

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
