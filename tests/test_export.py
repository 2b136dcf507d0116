"""`model.export(...)` with the layer's defaults and a dynamic batch, per route.

The routes Keras 3.15 offers, per backend, that this suite runs (each export
is read back in its own runtime and compared with `model.predict` at two
batch sizes, neither of them the batch size traced at export):

- tensorflow: `"tf_saved_model"` (read with `tf.saved_model.load`),
  `"onnx"` through tf2onnx (read with ONNX Runtime).
- jax: `"tf_saved_model"` through jax2tf, which needs TensorFlow beside JAX;
  the nox jax session installs it, and a missing TensorFlow fails the test.
- torch: `"onnx"` (Keras uses the TorchScript exporter with `dynamic_axes`
  when the signature has a `None` dim), and `"torch"`, a
  `torch.export.ExportedProgram` (`.pt2`, read with `torch.export.load`;
  a dynamic batch needs `dynamic_shapes`).

Routes Keras offers that are not run here: ONNX on jax (needs `jax2onnx`,
which pulls in flax and orbax), `"tf_saved_model"` on torch (needs
`torch_xla` and TensorFlow), `"litert"` (tensorflow, torch) and
`"openvino"` (needs openvino). Keras refuses `"torch"` on jax and
tensorflow, and `"litert"` on jax; `test_keras_refuses_routes_it_does_not_offer` pins that.
Every package a route needs is a test dependency of its nox session: an
import error fails the test rather than skipping it.
"""

import keras
import numpy as np
import pytest

from luong_attention import LuongAttention

BACKEND = keras.backend.backend()
ROUTES = {
    "jax": ["tf_saved_model"],
    "tensorflow": ["tf_saved_model", "onnx"],
    "torch": ["onnx", "torch"],
}[BACKEND]
SUFFIX = {"tf_saved_model": "", "onnx": ".onnx", "torch": ".pt2"}
CASES = ("padding", "causal")
Q_LEN, V_LEN, DIM = 4, 5, 8


def build_model(case):
    """Default LuongAttention (implementation="auto"); padding mask or causal."""
    query = keras.Input((Q_LEN, DIM), name="query")
    value = keras.Input((V_LEN, DIM), name="value")
    if case == "padding":
        value_mask = keras.Input((V_LEN,), dtype="bool", name="value_mask")
        output = LuongAttention()([query, value], mask=[None, value_mask])
        return keras.Model([query, value, value_mask], output)
    return keras.Model([query, value], LuongAttention(causal=True)([query, value]))


def make_inputs(case, batch, seed):
    rng = np.random.default_rng(seed)
    inputs = [
        rng.standard_normal((batch, Q_LEN, DIM)).astype("float32"),
        rng.standard_normal((batch, V_LEN, DIM)).astype("float32"),
    ]
    if case == "padding":
        value_mask = rng.random((batch, V_LEN)) > 0.3
        value_mask[:, 0] = True
        value_mask[1] = False  # batch element 1 has no valid key: zero output
        inputs.append(value_mask)
    return inputs


def export(model, path, route):
    kwargs = {}
    if route == "torch":
        import torch

        batch = torch.export.Dim("batch", min=1, max=4096)
        kwargs["dynamic_shapes"] = [([{0: batch}] * len(model.inputs),)]
    model.export(path, format=route, verbose=False, **kwargs)


def run_exported(path, route, inputs):
    if route == "tf_saved_model":
        import tensorflow as tf

        return tf.saved_model.load(str(path)).serve(inputs).numpy()
    if route == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {spec.name: x for spec, x in zip(session.get_inputs(), inputs, strict=True)}
        return session.run(None, feeds)[0]
    import torch

    module = torch.export.load(str(path)).module()
    with torch.no_grad():
        return module([torch.from_numpy(x) for x in inputs]).numpy()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("route", ROUTES)
def test_export_with_defaults_and_dynamic_batch(tmp_path, route, case):
    model = build_model(case)
    model.predict(make_inputs(case, 2, seed=0), verbose=0)  # ONNX export wants a called model
    # An eager call too, as in a notebook: what it leaves behind (a kept
    # causal bias) must not become part of the exported model.
    model(make_inputs(case, 2, seed=0))
    path = tmp_path / f"model{SUFFIX[route]}"
    export(model, path, route)
    for batch in (3, 5):
        inputs = make_inputs(case, batch, seed=batch)
        expected = model.predict(inputs, verbose=0)
        got = run_exported(path, route, inputs)
        assert got.shape == expected.shape == (batch, Q_LEN, DIM)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        if case == "padding":  # the row with no valid key stays exactly zero
            assert np.all(got[1] == 0)


# Formats Keras refuses on this backend, with its message (none on torch).
NOT_OFFERED = {
    "jax": {
        "torch": "Torch export requires PyTorch backend",
        "litert": "LiteRT export requires TensorFlow or PyTorch backend",
    },
    "tensorflow": {"torch": "Torch export requires PyTorch backend"},
    "torch": {},
}[BACKEND]


if NOT_OFFERED:  # left out at collection on torch, which has none

    @pytest.mark.parametrize("route", sorted(NOT_OFFERED))
    def test_keras_refuses_routes_it_does_not_offer(tmp_path, route):
        model = build_model("causal")
        model.predict(make_inputs("causal", 2, seed=0), verbose=0)
        with pytest.raises(ValueError, match=NOT_OFFERED[route]):
            model.export(tmp_path / f"model{SUFFIX.get(route, '.tflite')}", format=route)
