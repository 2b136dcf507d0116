"""One backend's share of the cross-backend check (backend from KERAS_BACKEND).

    python -m tests.crossbackend.worker compute DIR
        Calls LuongAttention on every case in `DIR/inputs.npz` (implementations
        "auto" and "reference", with and without the returned weights), saves
        one `.keras` model per case under `DIR/keras/<backend>/` and writes the
        results to `DIR/compute_<backend>.npz`.
    python -m tests.crossbackend.worker load DIR
        Loads the `.keras` files of every backend under `DIR/keras/`, runs
        them on the same inputs and writes `DIR/load_<backend>.npz`.

The driver, `tests/crossbackend/driver.py`, runs this once per backend and
compares the files.
"""

import sys
from pathlib import Path

import keras
import numpy as np

from luong_attention import LuongAttention
from tests.crossbackend.cases import CASES, case_arrays

INPUTS = ("query", "value", "key")
MASKS = ("query_mask", "value_mask", "key_mask")


def build_layer(case, arrays, **options):
    layer = LuongAttention(**{**case["layer"], **options})
    layer.build([arrays[n].shape for n in INPUTS if n in arrays])
    given = {k.split(":", 1)[1] for k in arrays if k.startswith("weight:")}
    if given != {w.name for w in layer.weights}:
        raise ValueError(f"Weights {sorted(given)} do not fit the layer's {layer.weights}")
    for w in layer.weights:
        w.assign(arrays[f"weight:{w.name}"])
    return layer


def call_layer(layer, case, tensors, return_attention_scores):
    inputs = [tensors[n] for n in INPUTS if n in tensors]
    mask = [tensors.get(n) for n in MASKS]
    while len(mask) > 2 and mask[-1] is None:
        mask.pop()
    if all(m is None for m in mask):
        mask = None
    return layer(
        inputs,
        mask=mask,
        attention_mask=tensors.get("attention_mask"),
        return_attention_scores=return_attention_scores,
        training=False,
        **case.get("call", {}),
    )


def build_model(case, arrays):
    """A functional model of the case: dict of inputs -> output, weights, fast output."""
    layer = build_layer(case, arrays)
    inputs = {
        k: keras.Input(shape=v.shape[1:], dtype="bool" if v.dtype == bool else "float32", name=k)
        for k, v in arrays.items()
        if not k.startswith("weight:")
    }
    output, weights = call_layer(layer, case, inputs, return_attention_scores=True)
    fast = call_layer(layer, case, inputs, return_attention_scores=False)
    return keras.Model(inputs, {"output": output, "weights": weights, "output_fast": fast})


def model_inputs(arrays):
    return {k: v for k, v in arrays.items() if not k.startswith("weight:")}


def run_model(model, arrays):
    results = model(model_inputs(arrays), training=False)
    return {k: keras.ops.convert_to_numpy(v) for k, v in results.items()}


def compute(directory, backend):
    all_arrays = dict(np.load(directory / "inputs.npz"))
    keras_dir = directory / "keras" / backend
    keras_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, case in CASES.items():
        arrays = case_arrays(all_arrays, name)
        tensors = {k: keras.ops.convert_to_tensor(v) for k, v in model_inputs(arrays).items()}
        for implementation in ("auto", "reference"):
            layer = build_layer(case, arrays, implementation=implementation)
            output, weights = call_layer(layer, case, tensors, return_attention_scores=True)
            fast = call_layer(layer, case, tensors, return_attention_scores=False)
            for key, value in (("output", output), ("weights", weights), ("output_fast", fast)):
                results[f"{name}/{implementation}/{key}"] = keras.ops.convert_to_numpy(value)
        model = build_model(case, arrays)
        for key, value in run_model(model, arrays).items():
            results[f"{name}/model/{key}"] = value
        model.save(keras_dir / f"{name}.keras")
    np.savez(directory / f"compute_{backend}.npz", **results)


def load(directory, backend):
    all_arrays = dict(np.load(directory / "inputs.npz"))
    results = {}
    for source_dir in sorted((directory / "keras").iterdir()):
        for name in CASES:
            model = keras.saving.load_model(source_dir / f"{name}.keras")
            for key, value in run_model(model, case_arrays(all_arrays, name)).items():
                results[f"{source_dir.name}/{name}/{key}"] = value
    np.savez(directory / f"load_{backend}.npz", **results)


def main(argv):
    if len(argv) != 2 or argv[0] not in ("compute", "load"):
        raise SystemExit(f"usage: python -m tests.crossbackend.worker compute|load DIR; got {argv}")
    backend = keras.backend.backend()
    {"compute": compute, "load": load}[argv[0]](Path(argv[1]), backend)
    print(f"{backend}: {argv[0]} done, keras {keras.__version__}")


if __name__ == "__main__":
    main(sys.argv[1:])
