"""Each implementation path with a padding mask, on the current backend.

`"auto"` sends masked inputs to `"blocked"` on every backend; this measures
that choice against `"fused"` (where PyTorch's SDPA gets the mask as a dense
`(T, T)` tensor) for causal self-attention with a `(B, T)` value mask,
float32, D=64, fwd+bwd (the gradient of the output's sum), medians in ms.

    KERAS_BACKEND=torch python benchmarks/masked.py --length 4096
"""

import argparse
import os
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--masked", type=float, default=0.1, help="fraction of keys masked")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in bench.py

    import keras

    from luong_attention import LuongAttention

    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    shape = (args.batch, args.length, 64)
    q, k, v = (rng.standard_normal(shape).astype("float32") for _ in range(3))
    mask = rng.random((args.batch, args.length)) >= args.masked
    runs = {}
    for impl in ("auto", "blocked", "fused"):
        layer = LuongAttention(causal=True, implementation=impl)
        loss = lambda q, k, v, layer=layer: keras.ops.sum(layer([q, v, k], mask=[None, mask]))  # noqa: E731
        if backend == "jax":
            import jax

            grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
            runs[impl] = lambda grad=grad: jax.block_until_ready(grad(q, k, v))
        elif backend == "tensorflow":
            import tensorflow as tf

            @tf.function
            def grad(q, k, v, loss=loss):
                with tf.GradientTape() as tape:
                    tape.watch([q, k, v])
                    out = loss(q, k, v)
                return tape.gradient(out, [q, k, v])

            tensors = [tf.constant(t) for t in (q, k, v)]
            runs[impl] = lambda grad=grad, tensors=tensors: [t.numpy() for t in grad(*tensors)]
        else:
            import torch

            def grad(loss=loss):
                tensors = [torch.tensor(t, requires_grad=True) for t in (q, k, v)]
                return torch.autograd.grad(loss(*tensors), tensors)

            runs[impl] = grad
    times = {impl: [] for impl in runs}
    for run in runs.values():
        run()  # compile / warm up
    for _ in range(args.repeats):
        for impl, run in runs.items():
            start = time.perf_counter()
            run()
            times[impl].append(time.perf_counter() - start)
    cells = ", ".join(f"{impl} {np.median(t) * 1e3:.0f}" for impl, t in times.items())
    print(
        f"{backend}, B={args.batch}, T={args.length}, {args.masked:.0%} of keys masked: {cells} ms"
    )


if __name__ == "__main__":
    main()
