"""Sequence parallelism on JAX: the time dim of query, key and value sharded over devices.

    KERAS_BACKEND=jax python examples/sequence_parallel.py [--devices 4] [--json PATH]

Runs on CPU with virtual devices (XLA_FLAGS=--xla_force_host_platform_device_count,
set below before JAX starts), also on a machine with a GPU (JAX_PLATFORMS=cpu,
unless set: a GPU cannot join the virtual devices in one mesh). A
`keras.distribution.LayoutMap` lays the outputs of the layers that produce
query, key and value, and of the attention itself, out as
`(None, "seq", None)`: batch whole, time split over the mesh's "seq" axis.
The script compares the outputs with a run on one device and reports each
device's peak memory from XLA's compiled memory analysis
(`jax.jit(...).lower(...).compile().memory_analysis()`; on CPU
`device.memory_stats()` is None), for the sharded program and for the same
program on one device.
"""

import argparse
import json
import os

PARSER = argparse.ArgumentParser(description=__doc__.splitlines()[0])
PARSER.add_argument("--devices", type=int, default=4)
PARSER.add_argument("--length", type=int, default=512, help="T of query, key and value")
PARSER.add_argument("--json", help="write the summary to this file")
ARGS = PARSER.parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={ARGS.devices}"
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402

from luong_attention import LuongAttention  # noqa: E402

BATCH, DIM = 2, 32


def build_model(length):
    query = keras.Input((length, DIM), name="query_in")
    value = keras.Input((length, DIM), name="value_in")
    value_mask = keras.Input((length,), dtype="bool", name="value_mask")
    q = keras.layers.Dense(DIM, name="query")(query)
    k = keras.layers.Dense(DIM, name="key")(value)
    v = keras.layers.Dense(DIM, name="value")(value)
    out = LuongAttention(name="attention")([q, v, k], mask=[None, value_mask])
    return keras.Model([query, value, value_mask], out)


def make_inputs(length):
    rng = np.random.default_rng(0)
    value_mask = np.arange(length)[None, :] < np.array([[length], [length * 3 // 4]])
    return [
        rng.standard_normal((BATCH, length, DIM)).astype("float32"),
        rng.standard_normal((BATCH, length, DIM)).astype("float32"),
        value_mask,
    ]


def peak_bytes(model, inputs, in_shardings=None):
    """Per-device peak memory of the compiled forward pass (bytes), from XLA."""
    import jax

    weights = [v.value for v in model.weights]

    def forward(weights, inputs):
        outputs, _ = model.stateless_call(weights, [], inputs)
        return outputs

    jitted = jax.jit(forward, in_shardings=in_shardings)
    analysis = jitted.lower(weights, inputs).compile().memory_analysis()
    return int(
        analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        + analysis.temp_size_in_bytes
        - analysis.alias_size_in_bytes
    )


def main(args):
    import jax

    inputs = make_inputs(args.length)
    keras.utils.set_random_seed(0)
    single = build_model(args.length)
    expected = keras.ops.convert_to_numpy(single(inputs))
    one_device = peak_bytes(single, inputs)
    weights = [keras.ops.convert_to_numpy(w) for w in single.weights]

    devices = keras.distribution.list_devices("cpu")[: args.devices]
    mesh = keras.distribution.DeviceMesh((1, args.devices), ("batch", "seq"), devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    for name in ("query", "key", "value", "attention"):
        layout_map[f"{name}/output"] = (None, "seq", None)
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
    )
    sharded = build_model(args.length)
    sharded.set_weights(weights)
    got = sharded(inputs)
    spec = list(got.sharding.spec)
    while spec and spec[-1] is None:  # (None, "seq") and (None, "seq", None) are one layout
        spec.pop()
    layouts = {"attention/output": spec}
    # The same program with the inputs' time dims split over the devices.
    jax_mesh = jax.sharding.Mesh(np.array(jax.devices()[: args.devices]), ("seq",))
    seq = jax.sharding.NamedSharding(jax_mesh, jax.sharding.PartitionSpec(None, "seq"))
    whole = jax.sharding.NamedSharding(jax_mesh, jax.sharding.PartitionSpec())
    in_shardings = ([whole] * len(sharded.weights), [seq, seq, seq])
    per_device = peak_bytes(sharded, inputs, in_shardings)
    got = keras.ops.convert_to_numpy(got)
    summary = {
        "devices": len(devices),
        "platform": jax.devices()[0].platform,
        "shape": [BATCH, args.length, DIM],
        "layouts": layouts,
        "max_abs_difference": float(np.max(np.abs(got - expected))),
        # |got - expected| <= 1e-6 * (1 + |expected|) everywhere
        "within_1e-6": bool(np.allclose(got, expected, rtol=1e-6, atol=1e-6)),
        "peak_bytes_one_device": one_device,
        "peak_bytes_per_device_sharded": per_device,
        "memory_source": "jax compiled memory_analysis (argument + output + temp - alias)",
        "memory_stats_available": jax.devices()[0].memory_stats() is not None,
    }
    print(
        f"sequence parallel over {summary['devices']} devices, (B, T, D)={tuple(summary['shape'])}: "
        f"largest difference from one device {summary['max_abs_difference']:.3g}; "
        f"peak memory per device {per_device / 2**20:.2f} MiB vs {one_device / 2**20:.2f} MiB "
        f"on one device"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"backend": keras.backend.backend(), **summary}, f, indent=1)


if __name__ == "__main__":
    if keras.backend.backend() == "jax":
        main(ARGS)
    else:  # `nox -s examples` runs every example on every backend
        print(f"sequence_parallel.py runs on jax only; the backend is {keras.backend.backend()}")
