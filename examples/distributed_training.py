"""Data-parallel training of a model holding LuongAttention, on each backend's own engine.

The backend (KERAS_BACKEND) picks the engine; all three run on CPU here:

    KERAS_BACKEND=jax python examples/distributed_training.py
        keras.distribution.DataParallel over 2 virtual CPU devices
        (XLA_FLAGS=--xla_force_host_platform_device_count, set below before
        JAX starts); `--model-parallel` instead shards the batch over one mesh
        axis and the attention heads and weights over the other
        (keras.distribution.ModelParallel with a LayoutMap, 4 devices).
    KERAS_BACKEND=tensorflow python examples/distributed_training.py
        tf.distribute.MirroredStrategy over 2 logical CPU devices.
    KERAS_BACKEND=torch python examples/distributed_training.py
        torch DistributedDataParallel, gloo, 2 processes on 127.0.0.1.

The task: say which is the largest token of a padded sequence. The model
embeds the tokens, splits them into 2 heads of shape (batch, heads, T, dim),
runs masked self-attention with LuongAttention on the 4-D heads (the padding
mask, shape (batch, T), covers every head), pools and classifies. The script
prints the loss before and after training and the largest difference between
the replicas' copies of the weights (0 when they agree). `--json PATH` writes
the same as JSON; tests/test_distributed.py runs the script that way.
"""

import argparse
import datetime
import gc
import json
import os
import socket
import sys

PARSER = argparse.ArgumentParser(description=__doc__.splitlines()[0])
PARSER.add_argument("--replicas", type=int, default=2, help="devices or processes (default 2)")
PARSER.add_argument("--epochs", type=int, default=6)
PARSER.add_argument("--samples", type=int, default=256)
PARSER.add_argument("--model-parallel", action="store_true", help="JAX: ModelParallel, 4 devices")
PARSER.add_argument("--json", help="write the summary to this file")
ARGS = PARSER.parse_args() if __name__ == "__main__" else None

# Virtual CPU devices for JAX; read once, when JAX starts (on `import keras`).
if ARGS is not None:
    devices = 4 if ARGS.model_parallel else ARGS.replicas
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from luong_attention import LuongAttention  # noqa: E402

VOCAB, LENGTH, HEADS, DIM = 16, 8, 2, 16
BATCH_SIZE = 32


def make_data(samples, seed=0):
    """Token sequences padded with 0 (lengths 3 to 8); the label is the largest token."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, VOCAB, size=(samples, LENGTH))
    lengths = rng.integers(3, LENGTH + 1, size=samples)
    tokens[np.arange(LENGTH)[None, :] >= lengths[:, None]] = 0
    return tokens.astype("int32"), tokens.max(axis=1).astype("int32")


def build_model():
    tokens = keras.Input((LENGTH,), dtype="int32", name="tokens")
    mask = ops.not_equal(tokens, 0)
    x = keras.layers.Embedding(VOCAB, DIM, name="embedding")(tokens)
    x = keras.layers.Dense(DIM, name="projection")(x)
    x = keras.layers.Reshape((LENGTH, HEADS, DIM // HEADS))(x)
    heads = keras.layers.Permute((2, 1, 3), name="split_heads")(x)  # (batch, heads, T, dim)
    attended = LuongAttention(score_mode="general", use_scale=True, name="attention")(
        [heads, heads], mask=[mask, mask]
    )
    x = ops.reshape(ops.transpose(attended, (0, 2, 1, 3)), (-1, LENGTH, DIM))
    x = keras.layers.GlobalAveragePooling1D()(x, mask=mask)
    logits = keras.layers.Dense(VOCAB, name="classifier")(x)
    return keras.Model(tokens, logits)


def compile_model(model):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def max_difference(replicas):
    """Largest |difference| between replica 0 and the others, over all weights."""
    worst = 0.0
    for copies in replicas:
        for copy in copies[1:]:
            worst = max(worst, float(np.max(np.abs(np.asarray(copy) - np.asarray(copies[0])))))
    return worst


def train_jax(args, x, y):
    import jax

    devices = keras.distribution.list_devices("cpu")
    if args.model_parallel:
        # Batch over the "batch" axis; heads, the attention's W_a and the
        # dense kernels over the "model" axis.
        mesh = keras.distribution.DeviceMesh((2, 2), ("batch", "model"), devices[:4])
        layout_map = keras.distribution.LayoutMap(mesh)
        layout_map["projection/kernel"] = (None, "model")
        layout_map["attention/general_score_weight"] = ("model", None)
        layout_map["classifier/kernel"] = ("model", None)
        layout_map["split_heads/output"] = ("batch", "model", None, None)
        distribution = keras.distribution.ModelParallel(
            layout_map=layout_map, batch_dim_name="batch"
        )
    else:
        distribution = keras.distribution.DataParallel(devices=devices[: args.replicas])
    keras.distribution.set_distribution(distribution)
    model = build_model()
    compile_model(model)
    before = model.evaluate(x, y, batch_size=BATCH_SIZE, verbose=0)
    history = model.fit(x, y, batch_size=BATCH_SIZE, epochs=args.epochs, verbose=0)
    after = model.evaluate(x, y, batch_size=BATCH_SIZE, verbose=0)
    layouts = {
        v.path: list(v.value.sharding.spec)
        for v in model.weights
        if v.path.split("/")[0] in ("projection", "attention", "classifier")
    }
    if args.model_parallel:
        # The heads as the model sees them, and the attention's output on them.
        heads = model.get_layer("split_heads")(ops.ones((8, LENGTH, HEADS, DIM // HEADS)))
        attended = model.get_layer("attention")([heads, heads])
        layouts["split_heads/output"] = list(heads.sharding.spec)
        layouts["attention/output"] = list(attended.sharding.spec)
    # A replicated variable holds one copy per device; a sharded one holds
    # slices, so compare the copies that sit on the same slice.
    replicas = []
    for variable in model.weights:
        by_slice = {}
        for shard in variable.value.addressable_shards:
            by_slice.setdefault(str(shard.index), []).append(np.asarray(shard.data))
        replicas.extend(by_slice.values())
    return {
        "engine": type(distribution).__name__,
        "devices": len(jax.devices()),
        "replicas": max(len(copies) for copies in replicas),
        "layouts": layouts,
        "history": history.history["loss"],
        "loss_before": before,
        "loss_after": after,
        "replica_max_difference": max_difference(replicas),
    }


def train_tensorflow(args, x, y):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * args.replicas
    )
    strategy = tf.distribute.MirroredStrategy(
        [d.name for d in tf.config.list_logical_devices("CPU")]
    )
    with strategy.scope():
        model = build_model()
        compile_model(model)
    before = model.evaluate(x, y, batch_size=BATCH_SIZE, verbose=0)
    history = model.fit(x, y, batch_size=BATCH_SIZE, epochs=args.epochs, verbose=0)
    after = model.evaluate(x, y, batch_size=BATCH_SIZE, verbose=0)
    replicas = [
        [t.numpy() for t in strategy.experimental_local_results(v.value)] for v in model.weights
    ]
    return {
        "engine": type(strategy).__name__,
        "devices": strategy.num_replicas_in_sync,
        "replicas": min(len(copies) for copies in replicas),
        "history": history.history["loss"],
        "loss_before": before,
        "loss_after": after,
        "replica_max_difference": max_difference(replicas),
    }


def _torch_worker(rank, args, port, x, y, results):
    import torch
    import torch.distributed as dist

    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=args.replicas,
        timeout=datetime.timedelta(seconds=120),  # fail rather than hang
    )
    ddp = None
    try:
        keras.utils.set_random_seed(rank)  # DDP broadcasts rank 0's weights
        model = build_model()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        def full_loss():
            with torch.no_grad():
                return float(loss_fn(y, model(x)))

        before = full_loss()
        history = []
        rng = np.random.default_rng(0)  # the same shuffle on every rank
        per_rank = BATCH_SIZE // args.replicas
        for _ in range(args.epochs):
            order = rng.permutation(len(x))
            losses = []
            for start in range(0, len(x) - BATCH_SIZE + 1, BATCH_SIZE):
                mine = order[start + rank * per_rank : start + (rank + 1) * per_rank]
                loss = loss_fn(y[mine], ddp(x[mine]))
                optimizer.zero_grad()
                loss.backward()  # DDP averages the gradients across ranks
                optimizer.step()
                losses.append(float(loss.detach()))
            history.append(float(np.mean(losses)))
        after = full_loss()
        weights = [w.detach().cpu().numpy() for w in model.parameters()]
        gathered = [None] * args.replicas
        dist.all_gather_object(gathered, weights)
        if rank == 0:
            results.put(
                {
                    "engine": "DistributedDataParallel",
                    "devices": dist.get_world_size(),
                    "replicas": len(gathered),
                    "history": history,
                    "loss_before": before,
                    "loss_after": after,
                    "replica_max_difference": max_difference(list(zip(*gathered, strict=True))),
                }
            )
    finally:
        # Free DDP's reducer first, so that the process group's last
        # reference goes with destroy_process_group(), which releases the
        # GIL. Freed by the reducer when this function returned, the group
        # was destroyed holding the GIL while gloo's worker thread waited
        # for it to drop the all_gather's tensors: a hang in about one run
        # in three (pytorch/pytorch#56297).
        del ddp
        gc.collect()
        dist.destroy_process_group()


def train_torch(args, x, y):
    import torch.multiprocessing as mp

    with socket.socket() as s:  # a free port on the loopback interface
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    mp.start_processes(
        _torch_worker,
        args=(args, port, x, y, results),
        nprocs=args.replicas,
        start_method="spawn",
    )
    return results.get()


def main(args):
    backend = keras.backend.backend()
    engines = {"jax": train_jax, "tensorflow": train_tensorflow, "torch": train_torch}
    if backend not in engines:
        raise SystemExit(
            f"No distributed engine for backend {backend!r}; use one of {list(engines)}"
        )
    if args.model_parallel and backend != "jax":
        raise SystemExit(f"--model-parallel needs the jax backend; got {backend!r}")
    if args.replicas < 2 or BATCH_SIZE % args.replicas:
        raise SystemExit(f"--replicas must be >= 2 and divide {BATCH_SIZE}; got {args.replicas}")
    keras.utils.set_random_seed(0)
    x, y = make_data(args.samples)
    summary = engines[backend](args, x, y)
    unit = "processes" if backend == "torch" else "devices"
    print(
        f"{backend}: {summary['engine']} on {summary['devices']} {unit}; "
        f"loss {summary['loss_before']:.3f} -> {summary['loss_after']:.3f}; "
        f"largest weight difference between replicas: {summary['replica_max_difference']:.3g}"
    )
    for path, spec in summary.get("layouts", {}).items():
        print(f"  {path} sharded as {tuple(spec)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"backend": backend, **summary}, f, indent=1)


if __name__ == "__main__":
    main(ARGS)
    sys.exit(0)
