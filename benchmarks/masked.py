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
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as bench.py's torch workers

    import keras
    from bench import compiled, inputs

    from luong_attention import LuongAttention

    qkv = inputs(args.batch, args.length)
    rng = np.random.default_rng(1)
    mask = rng.random((args.batch, args.length)) >= args.masked
    runs = {}
    for impl in ("auto", "blocked", "fused"):
        layer = LuongAttention(causal=True, implementation=impl)
        runs[impl] = compiled(
            lambda q, k, v, layer=layer: layer([q, v, k], mask=[None, mask]), grad=True
        )
        runs[impl](*qkv)  # compile / warm up
    times = {impl: [] for impl in runs}
    for _ in range(args.repeats):
        for impl, run in runs.items():
            start = time.perf_counter()
            run(*qkv)
            times[impl].append(time.perf_counter() - start)
    cells = ", ".join(f"{impl} {np.median(t) * 1e3:.0f}" for impl, t in times.items())
    print(
        f"{keras.backend.backend()}, B={args.batch}, T={args.length}, "
        f"{args.masked:.0%} of keys masked: {cells} ms"
    )


if __name__ == "__main__":
    main()
