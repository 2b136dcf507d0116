"""Data-parallel training of a model holding LuongAttention, on each backend's own engine.

The backend (KERAS_BACKEND) picks the engine; all three run on CPU here (JAX
also on a machine with a GPU: the script sets JAX_PLATFORMS=cpu unless it is
set):

    KERAS_BACKEND=jax python examples/distributed_training.py
        keras.distribution.DataParallel over 2 virtual CPU devices
        (XLA_FLAGS=--xla_force_host_platform_device_count, set below before
        JAX starts); `--model-parallel` instead shards the batch over one mesh
        axis and the attention heads and weights over the other
        (keras.distribution.ModelParallel with a LayoutMap, 4 devices).
    KERAS_BACKEND=tensorflow python examples/distributed_training.py
        tf.distribute.MirroredStrategy over 2 logical CPU devices.
    KERAS_BACKEND=torch python examples/distributed_training.py
        torch DistributedDataParallel, gloo, 2 processes on 127.0.0.1
        (the same as `--processes 2`).

`--processes N` stands N processes on 127.0.0.1 in for N machines, each with
its backend's multi-process engine; the script launches its own workers:

    jax         jax.distributed.initialize (coordinator on 127.0.0.1) and
                keras.distribution.DataParallel over every process's device.
    tensorflow  tf.distribute.MultiWorkerMirroredStrategy through TF_CONFIG,
                with a custom training step: Keras 3.15's `fit` fails under
                this strategy (see docs/scaling.md for why).
    torch       DistributedDataParallel over gloo; rank 0 opens the
                rendezvous store on a port the OS picks and tells the others.

Each worker trains on its part of every global batch and writes its weights;
the launcher checks that they agree and reports SHA-256 checksums of them.

The task: say which is the largest token of a padded sequence. The model
embeds the tokens, splits them into 2 heads of shape (batch, heads, T, dim),
runs masked self-attention with LuongAttention on the 4-D heads (the padding
mask, shape (batch, T), covers every head), pools and classifies. The script
prints the loss before and after training and the largest difference between
the replicas' copies of the weights (0 when they agree). `--json PATH` writes
the same as JSON; tests/test_distributed.py and tests/test_multiprocess.py run
the script that way.
"""

import argparse
import datetime
import gc
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

PARSER = argparse.ArgumentParser(description=__doc__.splitlines()[0])
PARSER.add_argument("--replicas", type=int, default=2, help="devices or processes (default 2)")
PARSER.add_argument("--epochs", type=int, default=6)
PARSER.add_argument("--samples", type=int, default=256)
PARSER.add_argument("--model-parallel", action="store_true", help="JAX: ModelParallel, 4 devices")
PARSER.add_argument(
    "--processes", type=int, help="launch this many worker processes on 127.0.0.1 (>= 2)"
)
PARSER.add_argument("--timeout", type=float, default=600, help="seconds before workers are killed")
PARSER.add_argument("--json", help="write the summary to this file")
# Set by the launcher for its workers.
PARSER.add_argument("--worker-rank", type=int, help=argparse.SUPPRESS)
PARSER.add_argument("--rendezvous", help=argparse.SUPPRESS)
PARSER.add_argument("--ports", help=argparse.SUPPRESS)
ARGS = PARSER.parse_args() if __name__ == "__main__" else None

# JAX computes on the CPU, even where the machine has a GPU: its virtual
# devices stand in for accelerators, and a GPU cannot join them in one mesh.
# A JAX_PLATFORMS set by the caller wins.
if ARGS is not None:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Virtual CPU devices for JAX; read once, when JAX starts (on `import keras`).
# Multi-process workers keep one device each, as a machine with one CPU would.
if ARGS is not None and ARGS.worker_rank is not None and ARGS.ports:
    # A TensorFlow worker's place in the cluster, which
    # MultiWorkerMirroredStrategy reads (the other engines ignore it).
    os.environ["TF_CONFIG"] = json.dumps(
        {
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in ARGS.ports.split(",")]},
            "task": {"type": "worker", "index": ARGS.worker_rank},
        }
    )
elif ARGS is not None and ARGS.processes is None:
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
        "platform": jax.devices()[0].platform,
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


# --- One process per machine: launcher and workers ---------------------------


def _reserve_port():
    """A loopback port, held open by the returned socket.

    Bound with SO_REUSEPORT and kept (not listening) until the workers have
    bound the port themselves: no other program can take it meanwhile, while
    jax's coordinator, a gRPC server that sets SO_REUSEPORT too, still can.
    TensorFlow's gRPC server does not set it, so its ports are released just
    before the workers start, and a clash is retried with fresh ports.
    """
    reserved = socket.socket()
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserved.bind(("127.0.0.1", 0))
    return reserved


# What a TensorFlow worker says when another program took its port first.
_PORT_TAKEN = "Could not start gRPC server"


def launch(args, attempts=3):
    """Starts `args.processes` workers of this script; returns the summary.

    The workers share this process group, so a caller that kills the group
    on a timeout kills them too; this function kills them itself after
    `args.timeout` seconds. Torch needs no port from here: its rank 0 opens
    the rendezvous store on a port the OS picks (see `_torch_store`).
    """
    backend = keras.backend.backend()
    started = time.perf_counter()
    for _ in range(attempts):
        reserved = []
        if backend == "jax":
            reserved = [_reserve_port()]  # the coordinator's
        elif backend == "tensorflow":
            reserved = [_reserve_port() for _ in range(args.processes)]  # one per worker
        ports = ",".join(str(s.getsockname()[1]) for s in reserved)
        if backend == "tensorflow":
            for s in reserved:
                s.close()
        with tempfile.TemporaryDirectory() as rendezvous:
            try:
                outputs = _run_workers(args, rendezvous, ports)
            finally:
                for s in reserved:
                    s.close()
            if outputs is None:
                continue  # a port was taken: again, with fresh ports
            reports, weights = [], []
            for rank in range(args.processes):
                with open(os.path.join(rendezvous, f"worker{rank}.json")) as f:
                    reports.append(json.load(f))
                with np.load(os.path.join(rendezvous, f"worker{rank}.npz")) as saved:
                    weights.append([saved[f"arr_{i}"] for i in range(len(saved.files))])
            break
    else:
        raise SystemExit(f"ports taken by other programs on {attempts} attempts")
    checksums = [
        hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in ws)).hexdigest()
        for ws in weights
    ]
    return {
        **reports[0],
        "processes": args.processes,
        "replicas": len(weights),
        "wall_time_s": time.perf_counter() - started,
        "weight_checksums": checksums,
        "replica_max_difference": max_difference(list(zip(*weights, strict=True))),
    }


def _run_workers(args, rendezvous, ports):
    """Runs the workers to the end; their outputs, or None if a port was taken."""
    common = [f"--epochs={args.epochs}", f"--samples={args.samples}"]
    common += [f"--processes={args.processes}", f"--rendezvous={rendezvous}"]
    common += [f"--ports={ports}"] if ports else []
    workers = [
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), f"--worker-rank={rank}", *common],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(args.processes)
    ]
    outputs = [None] * len(workers)
    try:
        deadline = time.monotonic() + args.timeout
        for rank, worker in enumerate(workers):
            outputs[rank] = worker.communicate(timeout=max(deadline - time.monotonic(), 1))[0]
    except subprocess.TimeoutExpired:
        raise SystemExit(f"workers did not finish in {args.timeout:.0f} s") from None
    finally:
        for worker in workers:  # one failed or hung: the others may wait for it forever
            if worker.poll() is None:
                worker.send_signal(signal.SIGKILL)
                worker.wait()
    failed = [rank for rank, worker in enumerate(workers) if worker.returncode != 0]
    if failed and any(_PORT_TAKEN in (outputs[r] or "") for r in failed):
        return None
    if failed:
        logs = "\n".join(f"--- worker {r} ---\n{outputs[r]}" for r in failed)
        raise SystemExit(f"workers {failed} failed:\n{logs}")
    return outputs


def _shard_batches(x, rank, processes):
    """This worker's part of every global batch, in order."""
    per = BATCH_SIZE // processes
    steps = len(x) // BATCH_SIZE
    return np.concatenate(
        [x[s * BATCH_SIZE + rank * per : s * BATCH_SIZE + (rank + 1) * per] for s in range(steps)]
    )


def worker_jax(args):
    import jax

    port = args.ports.split(",")[0]
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=args.processes,
        process_id=args.worker_rank,
        initialization_timeout=120,
    )
    keras.utils.set_random_seed(0)  # the same weights on every process
    x, y = make_data(args.samples)
    # Every process's devices; each process feeds its own part of a batch,
    # which Keras assembles into the global batch.
    distribution = keras.distribution.DataParallel(
        devices=keras.distribution.list_devices(), auto_shard_dataset=False
    )
    keras.distribution.set_distribution(distribution)
    model = build_model()
    compile_model(model)
    x_mine, y_mine = (_shard_batches(a, args.worker_rank, args.processes) for a in (x, y))
    per = BATCH_SIZE // args.processes
    before = model.evaluate(x_mine, y_mine, batch_size=per, verbose=0)
    history = model.fit(
        x_mine, y_mine, batch_size=per, epochs=args.epochs, shuffle=False, verbose=0
    )
    after = model.evaluate(x_mine, y_mine, batch_size=per, verbose=0)
    weights = [np.asarray(v.value.addressable_shards[0].data) for v in model.weights]
    summary = {
        "engine": "jax.distributed + DataParallel",
        "devices": len(jax.devices()),
        "platform": jax.devices()[0].platform,
        "history": history.history["loss"],
        "loss_before": before,
        "loss_after": after,
    }
    jax.distributed.shutdown()
    return summary, weights


def worker_tensorflow(args):
    import tensorflow as tf

    # Before any other TensorFlow call: the strategy sets up the runtime.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    keras.utils.set_random_seed(0)
    x, y = make_data(args.samples)
    with strategy.scope():
        model = build_model()
        optimizer = keras.optimizers.Adam(1e-2)
        optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="sum_over_batch_size"
    )
    # Global batches; the strategy gives each worker its part of each.
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH_SIZE, drop_remainder=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    batches = strategy.experimental_distribute_dataset(dataset.with_options(options))

    @tf.function
    def train_step(x_batch, y_batch):
        def replica_step(x_part, y_part):
            with tf.GradientTape() as tape:
                loss = loss_fn(y_part, model(x_part, training=True))
                # The optimizer sums the replicas' gradients: scale for a mean.
                scaled = loss / strategy.num_replicas_in_sync
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        losses = strategy.run(replica_step, args=(x_batch, y_batch))
        return strategy.reduce("MEAN", losses, axis=None)

    def full_loss():
        return float(loss_fn(y, model(x, training=False)))

    before = full_loss()
    history = []
    for _ in range(args.epochs):
        history.append(float(np.mean([float(train_step(*batch)) for batch in batches])))
    after = full_loss()
    summary = {
        "engine": "MultiWorkerMirroredStrategy",
        "devices": strategy.num_replicas_in_sync,
        "history": history,
        "loss_before": before,
        "loss_after": after,
    }
    return summary, [keras.ops.convert_to_numpy(w) for w in model.weights]


def _torch_store(args):
    """The rendezvous store: rank 0 opens it on a port the OS picks and
    publishes the port in a file (written whole, then renamed); the others
    wait for that file."""
    from torch.distributed import TCPStore

    port_file = os.path.join(args.rendezvous, "torch_port")
    timeout = datetime.timedelta(seconds=120)
    if args.worker_rank == 0:
        store = TCPStore("127.0.0.1", 0, args.processes, True, timeout, wait_for_workers=False)
        with open(port_file + ".tmp", "w") as f:
            f.write(str(store.port))
        os.replace(port_file + ".tmp", port_file)
        return store
    deadline = time.monotonic() + timeout.total_seconds()
    while not os.path.exists(port_file):
        if time.monotonic() > deadline:
            raise SystemExit("rank 0 did not publish the store's port")
        time.sleep(0.05)
    with open(port_file) as f:
        port = int(f.read())
    return TCPStore("127.0.0.1", port, args.processes, False, timeout)


def worker_torch(args):
    import torch
    import torch.distributed as dist

    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only
    rank, world = args.worker_rank, args.processes
    dist.init_process_group(
        "gloo",
        store=_torch_store(args),
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=120),  # fail rather than hang
    )
    ddp = None
    try:
        x, y = make_data(args.samples)
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
        per_rank = BATCH_SIZE // world
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
    summary = {
        "engine": "DistributedDataParallel",
        "devices": world,
        "history": history,
        "loss_before": before,
        "loss_after": after,
    }
    return summary, weights


def run_worker(args):
    workers = {"jax": worker_jax, "tensorflow": worker_tensorflow, "torch": worker_torch}
    summary, weights = workers[keras.backend.backend()](args)
    np.savez(os.path.join(args.rendezvous, f"worker{args.worker_rank}.npz"), *weights)
    with open(os.path.join(args.rendezvous, f"worker{args.worker_rank}.json"), "w") as f:
        json.dump(summary, f)


def main(args):
    backend = keras.backend.backend()
    engines = {"jax": train_jax, "tensorflow": train_tensorflow, "torch": launch}
    if backend not in engines:
        raise SystemExit(
            f"No distributed engine for backend {backend!r}; use one of {list(engines)}"
        )
    if args.model_parallel and (backend != "jax" or args.processes):
        raise SystemExit("--model-parallel needs the jax backend and one process")
    if backend == "torch" and args.processes is None:
        args.processes = args.replicas
    count = args.processes or args.replicas
    if count < 2 or BATCH_SIZE % count:
        raise SystemExit(
            f"--replicas and --processes must be >= 2 and divide {BATCH_SIZE}; got {count}"
        )
    if args.worker_rank is not None:
        run_worker(args)  # starts its engine, then seeds
        return
    keras.utils.set_random_seed(0)
    x, y = make_data(args.samples)
    summary = launch(args) if args.processes else engines[backend](args, x, y)
    unit = "processes" if args.processes else "devices"
    print(
        f"{backend}: {summary['engine']} on {summary['devices']} {unit}; "
        f"loss {summary['loss_before']:.3f} -> {summary['loss_after']:.3f}; "
        f"largest weight difference between replicas: {summary['replica_max_difference']:.3g}"
    )
    if "wall_time_s" in summary:
        print(f"  wall time {summary['wall_time_s']:.1f} s (start-up included)")
    for checksum in summary.get("weight_checksums", []):
        print(f"  weights sha256 {checksum}")
    for path, spec in summary.get("layouts", {}).items():
        print(f"  {path} sharded as {tuple(spec)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"backend": backend, **summary}, f, indent=1)


if __name__ == "__main__":
    main(ARGS)
    sys.exit(0)
