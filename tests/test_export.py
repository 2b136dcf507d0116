"""`model.export(...)`: TF SavedModel and ONNX, loaded back and compared.

What Keras supports depends on the backend and on optional packages:

- tensorflow: SavedModel; ONNX with `tf2onnx` and `onnx`.
- jax: SavedModel through `jax2tf`, which needs `tensorflow` installed beside
  jax; ONNX through `jax2onnx`.
- torch: ONNX through `torch.onnx` (needs `onnx` and `onnxscript`), with a
  static input signature, as Keras documents for torch; SavedModel needs
  `torch_xla` and `tensorflow`.

A test whose packages are missing is skipped and says which. The exports are
read back with `tensorflow` (SavedModel) and `onnxruntime` (ONNX).
"""

import importlib.util

import keras
import numpy as np
import pytest

from luong_attention import LuongAttention

BACKEND = keras.backend.backend()


def needs(*modules, why):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(
        bool(missing), reason=f"{why} needs {', '.join(missing)} (not installed)"
    )


def build_model():
    """Masked, causal, general-score attention; one input row sees no key."""
    query = keras.Input((4, 8), name="query")
    value = keras.Input((5, 8), name="value")
    value_mask = keras.Input((5,), dtype="bool", name="value_mask")
    layer = LuongAttention(score_mode="general", use_scale=True, causal=True)
    output = layer([query, value], mask=[None, value_mask])
    model = keras.Model([query, value, value_mask], output)
    rng = np.random.default_rng(0)
    layer.scale.assign(0.8)
    layer.general_score_weight.assign(rng.standard_normal((8, 8)).astype("float32") / 3)
    inputs = [
        rng.standard_normal((3, 4, 8)).astype("float32"),
        rng.standard_normal((3, 5, 8)).astype("float32"),
        rng.random((3, 5)) > 0.3,
    ]
    inputs[2][1] = False  # batch element 1 has no valid key: zero output
    return model, inputs, keras.ops.convert_to_numpy(model(inputs))


def check(got, expected):
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.all(got[expected == 0] == 0)  # fully-masked rows stay exactly zero


def run_onnx(path, inputs):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {spec.name: x for spec, x in zip(session.get_inputs(), inputs, strict=True)}
    return session.run(None, feeds)[0]


@needs("tensorflow", why="SavedModel export and loading")
@pytest.mark.skipif(BACKEND == "torch", reason="Keras's torch SavedModel export needs torch_xla")
def test_tf_saved_model(tmp_path):
    import tensorflow as tf

    model, inputs, expected = build_model()
    model.export(tmp_path / "saved", format="tf_saved_model", verbose=False)
    restored = tf.saved_model.load(str(tmp_path / "saved"))
    check(restored.serve(inputs).numpy(), expected)
    # The batch dim stays dynamic: a different batch size runs too.
    check(restored.serve([x[1:] for x in inputs]).numpy(), expected[1:])


ONNX_MODULES = {
    "tensorflow": ("onnx", "tf2onnx", "onnxruntime"),
    "jax": ("jax2onnx", "onnxruntime"),
    "torch": ("onnx", "onnxscript", "onnxruntime"),
}


@needs(*ONNX_MODULES[BACKEND], why=f"ONNX export on {BACKEND}")
def test_onnx(tmp_path):
    model, inputs, expected = build_model()
    signature = None
    if BACKEND == "torch":
        # Keras exports torch models with static shapes only.
        signature = [[keras.InputSpec(shape=x.shape, dtype=str(x.dtype)) for x in inputs]]
    path = tmp_path / "model.onnx"
    model.export(path, format="onnx", verbose=False, input_signature=signature)
    check(run_onnx(path, inputs), expected)
    if signature is None:  # a dynamic batch dim: another batch size runs too
        check(run_onnx(path, [x[1:] for x in inputs]), expected[1:])
