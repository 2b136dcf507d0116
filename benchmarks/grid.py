"""Benchmark grid: LuongAttention against Keras's attention, per backend, on one machine.

Seven parts, each backend in its own subprocess (its own Python: `--python`):

- grid: T in {16, 64, 256, 1024, 4096}, B = 32 (B = 2 at T = 4096),
  D in {64, 128}, masks none / padding / causal / causal+padding, modes fwd
  (inference, `training=False`) and fwd+bwd (the gradients w.r.t. query,
  key and value of the output against a fixed dense cotangent: see
  `cotangent`), float32; plus bfloat16 at D = 64. Variants:
  `LuongAttention(use_scale=True, implementation=...)` for "auto",
  "reference", "fused" and "blocked", `keras.layers.Attention(use_scale=True)`
  and `keras.ops.dot_product_attention` (`scale=1.0`, the scale variables'
  initial value). Padding: a value mask from lengths drawn uniformly in
  [T/4, T] (seeded), passed as `mask=[None, value_mask]` to both layers and
  as a boolean `(B, 1, 1, T)` mask to `dot_product_attention`. Within a cell
  the variants run in turn in every round (interleaved, so load from other
  processes hits all alike, and the order rotates from round to round);
  each sample follows one untimed call of its variant (the first call
  after another variant's runs slower: a bias against whichever variant
  came next) and averages enough calls to
  last `--min-sample-ms`; the median over rounds is kept. A cheap cell gets
  more rounds than `--rounds`, enough for each variant's samples to add up to
  `--min-cell-ms` (at most `MAX_ROUNDS`): a short call's median of three
  samples moves by a tenth between runs on a shared machine, more than most
  of the differences it is there to show. JAX calls are jitted,
  TensorFlow ones a `tf.function` without XLA (as Keras runs a model by
  default), PyTorch runs eagerly (`torch.no_grad()` for fwd).
- matmul: the backend's float32 rate on one 2048^3 matrix product, the
  yardstick of the useful FLOP rate at T = 4096 (see report.py).
- e2e: training steps per second (`model.train_on_batch`, synthetic batches
  from the examples' own generators) of `examples/seq2seq_dates.py` and
  `examples/text_similarity.py` built with `keras.layers.Attention` and with
  `LuongAttention`, interleaved in rounds: each sample times enough steps
  to last `E2E_SAMPLE_MS`, and each variant gets rounds until its samples
  add up to `E2E_MIN_MS` (at most `MAX_ROUNDS`).
- overhead (PyTorch only): at T = 16, B = 32, D = 128, padding mask, eager,
  the kernel alone (`keras_math`: keras.layers.Attention's ops) against the
  public function `luong_attention(...)` and the layer call; the difference
  is what validation, preparation and dispatch (and Keras's `Layer.__call__`)
  cost per call. `kernel_same_ops` writes out the tensor ops the reference
  path runs by default (no zeroing of padded keys and values; rows without a
  key zeroed): the function against it is the cost of validation and
  dispatch alone.
- guard: what zeroing padded keys and values (the NaN safety of
  docs/numerics.md, which `keras.layers.Attention` does not give) costs where
  calls are short: at T in {16, 64}, B = 32, D in {64, 128}, padding mask,
  fwd and fwd+bwd, the math of `keras.layers.Attention` written with
  keras.ops (scores, the mask subtracted as 1e9, softmax, weighted sum)
  against the same math after the padded keys and values are zeroed;
  compiled as in the grid.
- skip (PyTorch only, eager): what `skip_padded_keys=True` saves on a padded
  batch. T in {256, 1024}, B = 32, D = 128, lengths drawn uniformly in
  [T/4, T] as in the grid, in random order or sorted (a batch bucketed by
  length); a value mask alone (keys skipped) or a query mask too (query
  rows skipped as well, as in self-attention over padded sequences); fwd
  and fwd+bwd. Variants: "auto" without and with `skip_padded_keys=True`,
  `keras.layers.Attention` and `keras.ops.dot_product_attention`, all given
  the same masks.
- blocks: the blocked path's block of query rows, per backend: at T in
  {1024, 4096} (B as in the grid), D in {64, 128}, no mask and causal, fwd
  and fwd+bwd, float32, the blocked path with
  `BlockedOptions(min_block_size=n)` for each n of `BLOCK_SIZES`, the sizes
  interleaved as the grid's variants are. report.py writes one size per
  backend, length regime, mode and causal mask or not into the auto table
  (the default block unless another is faster by more than its margin),
  which the blocked path reads when no `blocked_options` are given.

Every row keeps its samples in round order (`samples_ms`), so report.py can
pair a variant's sample with Keras's from the same round.

A variant that raises the library's "does not support" error is recorded as
`"unsupported"`; any other error stops the run with the worker's traceback.
Results: `benchmarks/results/grid.json`; `benchmarks/report.py` turns it into
tables, a plot and `luong_attention/auto_table.json`.

    python benchmarks/grid.py --quick --python torch=/path/to/python ...
    python benchmarks/grid.py --only torch --rounds 5
"""

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BACKENDS = ("jax", "torch", "tensorflow")
LENGTHS = (16, 64, 256, 1024, 4096)
DIMS = (64, 128)
LOW_DIMS = (64,)
MASKS = ("none", "padding", "causal", "causal+padding")
MODES = ("fwd", "fwd+bwd")
PATHS = ("reference", "fused", "blocked")
VARIANTS = ("auto", *PATHS, "keras_attention", "keras_dpa")
EXAMPLES = ("seq2seq_dates", "text_similarity")
E2E_VARIANTS = ("keras_attention", "luong_attention")
PARTS = ("grid", "matmul", "e2e", "overhead", "guard", "skip", "blocks")
GUARD_LENGTHS = (16, 64)
SKIP_LENGTHS = (256, 1024)
# The blocks part: the lengths where the blocked path runs more than one
# block of rows, and the smallest block sizes it tries there.
BLOCK_LENGTHS = (1024, 4096)
BLOCK_SIZES = (128, 256, 512, 1024)
BLOCK_MASKS = ("none", "causal")
# --quick: enough cells to run every part of the pipeline in a minute or two
# per backend; T=256 calibrates the full-run estimate.
QUICK = dict(
    lengths=(16, 256),
    dims=(64,),
    low_lengths=(16,),
    rounds=1,
    e2e_sample_ms=0.0,
    e2e_min_ms=0.0,
    skip_lengths=(256,),
    block_lengths=(1024,),
    block_sizes=(256, 512),
    overhead_rounds=5,
)
# --min-cell-ms of a full run, and the most rounds a cell gets to reach it.
MIN_CELL_MS = 600.0
MAX_ROUNDS = 15
# End to end, a full run: each sample of training steps lasts at least
# E2E_SAMPLE_MS, and a variant gets rounds (3 to MAX_ROUNDS) until its
# samples add up to E2E_MIN_MS.
E2E_SAMPLE_MS = 500.0
E2E_MIN_MS = 7500.0
# Rounds of the overhead part in a full run. What it measures is a few
# percent of a call whose time varies by more than that from round to round
# on a shared machine, so its paired median needs many more rounds than a
# grid cell's ratio (the result files keep each round's samples, from
# which report.py derives the spread). Its calls are short, so rounds are
# cheap.
OVERHEAD_ROUNDS = 150
MARK = "@@grid "  # prefixes the worker's result lines on stdout


def batch_for(length):
    return 2 if length >= 4096 else 32


def cells(lengths, dims, low_lengths):
    """Every (T, B, D, mask, mode, dtype) of the grid, float32 first."""
    out = []
    for dtype, lens, ds in (("float32", lengths, dims), ("bfloat16", low_lengths, LOW_DIMS)):
        for length in lens:
            for dim in ds:
                for mask in MASKS:
                    for mode in MODES:
                        out.append((length, batch_for(length), dim, mask, mode, dtype))
    return out


# --- worker side: imports keras; the backend comes from KERAS_BACKEND ----------


def _emit(kind, **row):
    print(MARK + json.dumps(dict(kind=kind, **row)), flush=True)


def _device():
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return "gpu" if jax.devices()[0].platform == "gpu" else "cpu"
    if backend == "torch":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def _versions():
    import keras
    import numpy

    import luong_attention

    backend = keras.backend.backend()
    return {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        backend: __import__(backend).__version__,
        "luong_attention": luong_attention.__version__,
        "luong_attention_path": os.path.relpath(luong_attention.__file__, ROOT),
    }


def cotangent(shape):
    """The cotangent a fwd+bwd call pulls back through the output: standard
    normal of the output's `shape` (float32, seeded), the same for every
    variant of a cell.

    A dense cotangent, as a loss gives a layer's output in training. The
    gradient of the output's sum (what the grid pulled back before) reaches
    eager PyTorch as a broadcast of one value, stride 0 on every axis, which
    its CPU batched matmul copies batch element by batch element. That
    slowed the backward pass of the matmul-based variants (Keras's layer,
    the reference path) far more than the fused kernel's, at a cost no
    model pays (docs/performance.md).
    """
    import numpy as np

    key = tuple(int(n) for n in shape)
    if key not in _COTANGENTS:
        _COTANGENTS[key] = np.random.default_rng(1).standard_normal(key, "float32")
    return _COTANGENTS[key]


_COTANGENTS = {}


def compiled(fn, grad):
    """`fn(q, k, v, *extra)`, or when `grad` the gradients w.r.t. q, k and v
    of its output against the fixed `cotangent` (a vector-Jacobian product):
    jitted on JAX, a `tf.function` on TensorFlow, eager on PyTorch. The
    returned function blocks until the result is computed."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        if grad:

            def vjp(q, k, v, *extra):
                out, pull_back = jax.vjp(lambda q, k, v: fn(q, k, v, *extra), q, k, v)
                return pull_back(jax.numpy.asarray(cotangent(out.shape), out.dtype))

            f = jax.jit(vjp)
        else:
            f = jax.jit(fn)
        return lambda *a: jax.block_until_ready(f(*a))
    if backend == "torch":
        import torch

        if grad:
            # The cotangent as a tensor, made by the first (untimed) call: a
            # runner's output keeps its shape and dtype (autograd rejects a
            # cotangent of another shape).
            held = []

            def run(q, k, v, *extra):
                q, k, v = (t.detach().requires_grad_(True) for t in (q, k, v))
                out = fn(q, k, v, *extra)
                if not held:
                    held.append(torch.from_numpy(cotangent(out.shape)).to(out.dtype))
                return torch.autograd.grad(out, (q, k, v), grad_outputs=held[0])

            return run

        def run_nograd(*a):
            with torch.no_grad():
                return fn(*a)

        return run_nograd
    import tensorflow as tf

    if grad:

        @tf.function(jit_compile=False)
        def run_tf(q, k, v, *extra):
            with tf.GradientTape() as tape:
                tape.watch([q, k, v])
                out = fn(q, k, v, *extra)
            # A constant of the traced graph, as the cotangent is a fixed
            # tensor on the other backends.
            dense = tf.cast(tf.constant(cotangent(out.shape)), out.dtype)
            return tape.gradient(out, [q, k, v], output_gradients=dense)

        return run_tf
    # Eager calls of a tf.function return computed tensors.
    return tf.function(fn, jit_compile=False)


def make_inputs(batch, length, dim, dtype, seed=0):
    """q, k, v `(B, T, D)`, the value mask `(B, T)` and its `(B, 1, 1, T)` form."""
    import numpy as np
    from keras import ops

    rng = np.random.default_rng(seed)
    qkv = [
        ops.cast(ops.convert_to_tensor(rng.standard_normal((batch, length, dim), "float32")), dtype)
        for _ in range(3)
    ]
    lengths = rng.integers(max(1, length // 4), length + 1, size=batch)
    value_mask = np.arange(length)[None, :] < lengths[:, None]
    return (
        *qkv,
        ops.convert_to_tensor(value_mask),
        ops.convert_to_tensor(value_mask[:, None, None]),
    )


def make_variant(variant, *, mask, train, dtype, dim):
    """A function `(q, k, v, value_mask, dpa_mask) -> output` of one variant."""
    import keras
    from keras import ops

    from luong_attention import LuongAttention

    padded = "padding" in mask
    causal = "causal" in mask
    layer_dtype = None if dtype == "float32" else dtype
    if variant == "keras_dpa":

        def dpa(q, k, v, value_mask, dpa_mask):
            four = [ops.expand_dims(t, 2) for t in (q, k, v)]
            out = ops.dot_product_attention(
                *four, mask=dpa_mask if padded else None, scale=1.0, is_causal=causal
            )
            return ops.squeeze(out, axis=2)

        return dpa
    if variant == "keras_attention":
        layer = keras.layers.Attention(use_scale=True, dtype=layer_dtype)
    else:
        layer = LuongAttention(use_scale=True, implementation=variant, dtype=layer_dtype)
    # Build outside any trace, on a small input.
    small = ops.zeros((1, 4, dim), dtype)
    layer([small, small, small])

    def call(q, k, v, value_mask, dpa_mask):
        return layer(
            [q, v, k],
            mask=[None, value_mask] if padded else None,
            use_causal_mask=causal,
            training=train,
        )

    return call


def _is_unsupported(error):
    # A path that cannot run these options raises the house-style error
    # naming the argument (e.g. "fused" with return_attention_scores).
    return "Invalid value for argument implementation" in str(error)


def _sample(run, args, calls):
    start = time.perf_counter()
    for _ in range(calls):
        run(*args)
    return (time.perf_counter() - start) / calls


def warm_up(runners, args):
    """Calls each runner once (tracing, compiling); returns the seconds each took."""
    return {name: _sample(run, args, 1) for name, run in runners.items()}


def measure(runners, args, rounds, min_sample_s, min_total_s=0.0):
    """Interleaved samples of each (warmed-up) runner, each sample averaging
    enough calls to last `min_sample_s` (sized by one more call): `rounds` of
    them, or more (up to `MAX_ROUNDS`) where the slowest runner's samples
    would add up to less than `min_total_s`. Round r starts at the r-th
    runner (the order rotates), so no runner always follows the same one.
    Returns {name: (median_s, calls_per_sample, rounds, samples_s)}, the
    samples in round order (what report.py pairs round by round)."""
    if not runners:
        return {}
    calls, sample_s = {}, {}
    for name, run in runners.items():
        once = max(_sample(run, args, 1), 1e-6)
        calls[name] = sample_calls(once, min_sample_s)
        sample_s[name] = calls[name] * once
    rounds = cell_rounds(rounds, max(sample_s.values()), min_total_s)
    names = list(runners)
    samples = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            run = runners[name]
            run(*args)  # untimed: the first call after another runner's pays for the switch
            samples[name].append(_sample(run, args, calls[name]))
    return {name: (statistics.median(s), calls[name], rounds, s) for name, s in samples.items()}


def sample_calls(call_s, min_sample_s):
    """Calls in one sample of a call lasting `call_s`: enough to last
    `min_sample_s`, at least 1 and at most 100."""
    return max(1, min(100, math.ceil(min_sample_s / call_s)))


def cell_rounds(rounds, sample_s, min_total_s):
    """Rounds of samples lasting `sample_s` each: `rounds`, or more (up to
    `MAX_ROUNDS`) where they would add up to less than `min_total_s`."""
    return max(rounds, min(MAX_ROUNDS, math.ceil(min_total_s / sample_s)))


def worker_grid(spec, base):
    for length, batch, dim, mask, mode, dtype in cells(
        spec["lengths"], spec["dims"], spec["low_lengths"]
    ):
        args = make_inputs(batch, length, dim, dtype)
        train = mode == "fwd+bwd"
        runners, unsupported, first = {}, {}, {}
        for variant in spec["variants"]:
            fn = make_variant(variant, mask=mask, train=train, dtype=dtype, dim=dim)
            run = compiled(fn, grad=train)
            start = time.perf_counter()
            try:
                run(*args)  # traces, compiles; an unsupported path raises here
            except ValueError as error:
                if not _is_unsupported(error):
                    raise
                unsupported[variant] = str(error)
                continue
            first[variant] = time.perf_counter() - start
            runners[variant] = run
        timings = measure(
            runners,
            args,
            spec["rounds"],
            spec["min_sample_ms"] / 1000,
            spec["min_cell_ms"] / 1000,
        )
        cell = dict(base, T=length, B=batch, D=dim, mask=mask, mode=mode, dtype=dtype)
        for variant in spec["variants"]:
            if variant in unsupported:
                _emit(
                    "grid",
                    **cell,
                    variant=variant,
                    status="unsupported",
                    reason=unsupported[variant],
                    median_ms=None,
                    rounds=0,
                )
                continue
            median, calls, rounds, samples = timings[variant]
            _emit(
                "grid",
                **cell,
                variant=variant,
                status="ok",
                median_ms=1000 * median,
                samples_ms=[1000 * x for x in samples],
                rounds=rounds,
                calls_per_round=calls,
                first_call_ms=1000 * first[variant],
            )


def worker_matmul(spec, base):
    import numpy as np
    from keras import ops

    size = 2048
    rng = np.random.default_rng(0)
    a, b = (ops.convert_to_tensor(rng.standard_normal((size, size), "float32")) for _ in range(2))
    run = compiled(lambda x, y: ops.matmul(x, y), grad=False)
    warm_up({"matmul": run}, (a, b))
    median, calls, _, _ = measure({"matmul": run}, (a, b), max(3, spec["rounds"]), 0.05)["matmul"]
    _emit(
        "matmul",
        **base,
        size=size,
        median_ms=1000 * median,
        gflops=2 * size**3 / median / 1e9,
        calls_per_round=calls,
    )


def _e2e_models(example, attention, rng):
    """(model, inputs, targets) of one example with one attention layer."""
    import keras

    from luong_attention import LuongAttention

    sys.path.insert(0, os.path.join(ROOT, "examples"))
    batch_size = 64  # both examples' default
    if example == "seq2seq_dates":
        import seq2seq_dates as ex

        layer = keras.layers.Attention() if attention == "keras_attention" else LuongAttention()
        model, _ = ex.build_models(attention=layer)
        enc, dec, target = ex.encode(ex.make_dates(batch_size, rng))
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        data = ([enc, dec], target)
    else:
        import text_similarity as ex

        cls = keras.layers.Attention if attention == "keras_attention" else LuongAttention
        vocabulary = ex.build_vocabulary()
        model = ex.build_model(len(vocabulary) + 1, attention=cls(use_scale=True))
        first, second, labels = ex.make_pairs(batch_size, rng, vocabulary, 12)
        loss = "binary_crossentropy"
        data = ([first, second], labels)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss)
    return model, data


def worker_e2e(spec, base):
    import keras
    import numpy as np

    for example in EXAMPLES:
        runners = {}
        for attention in E2E_VARIANTS:
            keras.utils.set_random_seed(0)
            model, (x, y) = _e2e_models(example, attention, np.random.default_rng(0))

            def step(model=model, x=x, y=y):
                model.train_on_batch(x, y)

            runners[attention] = step
        first = warm_up(runners, ())
        timings = measure(
            runners,
            (),
            spec["rounds"],
            spec["e2e_sample_ms"] / 1000,
            spec["e2e_min_ms"] / 1000,
        )
        for attention, (median, calls, rounds, samples) in timings.items():
            _emit(
                "e2e",
                **base,
                example=example,
                variant=attention,
                batch_size=64,
                steps_per_s=1 / median,
                samples_ms=[1000 * x for x in samples],
                steps_per_sample=calls,
                rounds=rounds,
                first_call_ms=1000 * first[attention],
            )


def keras_math(q, k, v, value_mask, scale=1.0):
    """keras.layers.Attention's ops for a value mask (use_scale=True), written out."""
    from keras import ops

    scores = ops.matmul(q, ops.swapaxes(k, -1, -2)) * scale
    hidden = ops.cast(ops.logical_not(value_mask[:, None, :]), scores.dtype)
    scores = scores - 1e9 * hidden
    return ops.matmul(ops.softmax(scores, axis=-1), v)


def reference_ops(q, k, v, value_mask, scale):
    """The tensor ops the reference path runs by default (without
    nan_safe_padding) for a value mask, when Tv is at most the values'
    depth, written out: the key mask cast to float once, added to the scores
    as a bias, softmax, the weights multiplied by it (which zeroes rows
    without a key), the weighted sum."""
    from keras import ops

    key_weights = ops.cast(value_mask[:, None, :], "float32")
    scores = (q @ ops.swapaxes(k, -1, -2)) * scale
    scores = scores + (key_weights - 1.0) * 1e30
    weights = ops.softmax(scores, axis=-1)
    return (weights * key_weights) @ v


def _in_ms(timings):
    """A row's `median_ms` and `samples_ms` (in round order) from `measure`'s timings."""
    return dict(
        median_ms={name: 1000 * t[0] for name, t in timings.items()},
        samples_ms={name: [1000 * x for x in t[3]] for name, t in timings.items()},
    )


def measure_modes(variants, inputs, rounds, min_sample_s, min_total_s=0.0):
    """{mode: `measure`'s timings} of `variants` (name -> function of
    `inputs`), compiled as the grid's cells are, in each of `MODES`."""
    timings = {}
    for mode in MODES:
        runners = {name: compiled(fn, grad=mode == "fwd+bwd") for name, fn in variants.items()}
        warm_up(runners, inputs)
        timings[mode] = measure(runners, inputs, rounds, min_sample_s, min_total_s)
    return timings


def worker_overhead(spec, base):
    """Eager PyTorch, T=16: kernel alone vs the public function vs the layer."""
    import keras
    from keras import ops

    from luong_attention import LuongAttention, luong_attention

    batch, length, dim = 32, 16, 128
    q, k, v, value_mask, _ = make_inputs(batch, length, dim, "float32")
    scale = ops.convert_to_tensor(1.0)

    def kernel(q, k, v, value_mask):
        return keras_math(q, k, v, value_mask, scale)

    def function(implementation):
        return lambda q, k, v, m: luong_attention(
            q, v, k, value_mask=m, scale=scale, implementation=implementation
        )

    def layer_call(layer):
        layer([q, v, k])  # builds
        return lambda q, k, v, m: layer([q, v, k], mask=[None, m])

    def kernel_same_ops(q, k, v, value_mask):
        return reference_ops(q, k, v, value_mask, scale)

    variants = {
        "kernel": kernel,
        "kernel_same_ops": kernel_same_ops,
        "function_reference": function("reference"),
        "function_auto": function("auto"),
        "layer_reference": layer_call(LuongAttention(use_scale=True, implementation="reference")),
        "layer_auto": layer_call(LuongAttention(use_scale=True)),
        "keras_attention": layer_call(keras.layers.Attention(use_scale=True)),
    }
    # OVERHEAD_ROUNDS rounds (more than a grid cell gets): report.py pairs
    # the variants round by round, as it does every ratio.
    rounds = max(spec["overhead_rounds"], spec["rounds"])
    by_mode = measure_modes(variants, (q, k, v, value_mask), rounds, 0.05)
    for mode, timings in by_mode.items():
        # What validation and dispatch cost is derived by report.py from
        # the samples (function against kernel, kernel_same_ops, layer).
        _emit(
            "overhead",
            **base,
            T=length,
            B=batch,
            D=dim,
            mask="padding",
            mode=mode,
            rounds=timings["kernel"][2],
            # What kernel_same_ops writes out: the default path's ops (older
            # rows, without this key, zeroed padded keys and values too).
            same_ops="default",
            **_in_ms(timings),
        )


def worker_guard(spec, base):
    """Keras's attention math with and without padded keys and values zeroed."""
    from keras import ops

    def zeroed(q, k, v, value_mask):
        keep = value_mask[:, :, None]
        return keras_math(q, ops.where(keep, k, 0.0), ops.where(keep, v, 0.0), value_mask)

    variants = {"keras_math": keras_math, "zeroed": zeroed}
    rounds = max(5, spec["rounds"])
    for length in GUARD_LENGTHS:
        for dim in spec["dims"]:
            batch = batch_for(length)
            q, k, v, value_mask, _ = make_inputs(batch, length, dim, "float32")
            by_mode = measure_modes(
                variants,
                (q, k, v, value_mask),
                rounds,
                spec["min_sample_ms"] / 1000,
                spec["min_cell_ms"] / 1000,
            )
            for mode, timings in by_mode.items():
                _emit(
                    "guard",
                    **base,
                    T=length,
                    B=batch,
                    D=dim,
                    mask="padding",
                    mode=mode,
                    **_in_ms(timings),
                    rounds=timings["keras_math"][2],
                )


def _masked_call(layer, query_mask, sample):
    """`(q, k, v, value_mask) -> layer([q, v, k], mask=[query_mask, value_mask])`."""
    layer(sample)  # builds
    return lambda q, k, v, m: layer([q, v, k], mask=[query_mask, m])


def _masked_dpa(dpa_mask, query_mask):
    """`keras.ops.dot_product_attention` with `dpa_mask`, rows `query_mask` drops zeroed."""
    from keras import ops

    def dpa(q, k, v, value_mask):
        four = [ops.expand_dims(t, 2) for t in (q, k, v)]
        out = ops.squeeze(ops.dot_product_attention(*four, mask=dpa_mask, scale=1.0), axis=2)
        # Keras's layer and ours zero the rows the query mask drops.
        return out if query_mask is None else out * ops.cast(query_mask[..., None], out.dtype)

    return dpa


def worker_skip(spec, base):
    """`skip_padded_keys` on and off, and Keras's attention, on padded batches (eager PyTorch)."""
    import keras
    import numpy as np
    from keras import ops

    from luong_attention import LuongAttention

    batch, dim = 32, 128
    for length in spec["skip_lengths"]:
        q, k, v, value_mask, _ = make_inputs(batch, length, dim, "float32")
        lengths = np.sum(ops.convert_to_numpy(value_mask), axis=-1)
        for order in ("random", "sorted"):
            if order == "sorted":
                by_length = ops.convert_to_tensor(np.argsort(lengths, kind="stable"))
                q, k, v, value_mask = (
                    ops.take(t, by_length, axis=0) for t in (q, k, v, value_mask)
                )
            for masks in ("value", "query+value"):
                query_mask = value_mask if masks == "query+value" else None
                dpa_mask = value_mask[:, None, None, :]
                layers = {
                    "auto": LuongAttention(use_scale=True),
                    "auto_skip": LuongAttention(use_scale=True, skip_padded_keys=True),
                    "keras_attention": keras.layers.Attention(use_scale=True),
                }
                variants = {
                    name: _masked_call(layer, query_mask, [q, v, k])
                    for name, layer in layers.items()
                }
                variants["keras_dpa"] = _masked_dpa(dpa_mask, query_mask)
                by_mode = measure_modes(
                    variants,
                    (q, k, v, value_mask),
                    spec["rounds"],
                    spec["min_sample_ms"] / 1000,
                    spec["min_cell_ms"] / 1000,
                )
                real = lengths / length
                for mode, timings in by_mode.items():
                    _emit(
                        "skip",
                        **base,
                        T=length,
                        B=batch,
                        D=dim,
                        masks=masks,
                        order=order,
                        mode=mode,
                        # The (query, key) pairs that are not padding, of all.
                        real_pairs=float(np.mean(real * real if query_mask is not None else real)),
                        **_in_ms(timings),
                        rounds=timings["auto"][2],
                    )


def worker_blocks(spec, base):
    from luong_attention.functional import luong_attention
    from luong_attention.kernels import BlockedOptions

    for length in spec["block_lengths"]:
        batch = batch_for(length)
        for dim in spec["dims"]:
            q, k, v, _, _ = make_inputs(batch, length, dim, "float32")
            for mask in BLOCK_MASKS:
                for mode in MODES:
                    train = mode == "fwd+bwd"
                    runners = {}
                    for size in spec["block_sizes"]:
                        options = BlockedOptions(min_block_size=size)

                        def call(q, k, v, options=options, causal=mask == "causal", train=train):
                            return luong_attention(
                                q,
                                v,
                                key=k,
                                causal=causal,
                                training=train,
                                implementation="blocked",
                                blocked_options=options,
                            )

                        runners[size] = compiled(call, grad=train)
                    first = warm_up(runners, (q, k, v))
                    timings = measure(
                        runners,
                        (q, k, v),
                        spec["rounds"],
                        spec["min_sample_ms"] / 1000,
                        spec["min_cell_ms"] / 1000,
                    )
                    for size, (median, calls, rounds, samples) in timings.items():
                        _emit(
                            "blocks",
                            **base,
                            T=length,
                            B=batch,
                            D=dim,
                            mask=mask,
                            mode=mode,
                            dtype="float32",
                            min_block_size=size,
                            median_ms=1000 * median,
                            samples_ms=[1000 * x for x in samples],
                            rounds=rounds,
                            calls_per_round=calls,
                            first_call_ms=1000 * first[size],
                        )


def worker(spec):
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        # Each cell traces new functions on purpose; TensorFlow warns about it.
        tf.get_logger().setLevel("ERROR")
    base = dict(backend=backend, device=_device())
    _emit("info", **base, versions=_versions())
    for part in spec["parts"]:
        if part in ("overhead", "skip") and backend != "torch":
            continue
        start = time.perf_counter()
        {
            "grid": worker_grid,
            "matmul": worker_matmul,
            "e2e": worker_e2e,
            "overhead": worker_overhead,
            "guard": worker_guard,
            "skip": worker_skip,
            "blocks": worker_blocks,
        }[part](spec, base)
        _emit("timing", **base, part=part, seconds=time.perf_counter() - start)


# --- driver side ---------------------------------------------------------------


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit():
    proc = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return proc.stdout.strip() or None


def run_worker(python, backend, spec):
    """Runs one backend's worker; returns its rows. Exits on any failure."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    # The workers run in the environment as given: PyTorch's OpenMP threads
    # keep the wait policy users get unless OMP_WAIT_POLICY is set (PASSIVE
    # makes each backward pass wait for sleeping threads; see the results'
    # "omp_wait_policy").
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    cmd = [python, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    rows = []
    for line in proc.stdout:
        if not line.startswith(MARK):
            sys.stderr.write(line)
            continue
        row = json.loads(line[len(MARK) :])
        rows.append(row)
        print(_progress(row), file=sys.stderr, flush=True)
    if proc.wait() != 0:
        raise SystemExit(
            f"{backend} worker failed (exit status {proc.returncode}); its traceback is above. "
            "No results were written."
        )
    return rows


def _progress(row):
    kind = row["kind"]
    head = f"[{row['backend']}] {kind}"
    if kind == "grid":
        ms = "unsupported" if row["median_ms"] is None else f"{row['median_ms']:.3f} ms"
        return (
            f"{head} T={row['T']} D={row['D']} {row['mask']} {row['mode']} {row['dtype']} "
            f"{row['variant']}: {ms}"
        )
    if kind == "e2e":
        return f"{head} {row['example']} {row['variant']}: {row['steps_per_s']:.1f} steps/s"
    if kind == "timing":
        return f"{head} {row['part']} took {row['seconds']:.0f} s"
    return f"{head} {json.dumps({k: v for k, v in row.items() if k not in ('kind', 'backend')})}"


def estimate_full_seconds(rows, rounds, min_sample_s, extra_seconds=None, min_cell_s=0.0):
    """Rough duration of the full grid from measured rows: per variant the
    median first call (tracing, compiling), the sizing call and the rounds of
    every cell, each call's time interpolated in log-log over T and scaled by
    B*T^2*D beyond the longest measured T. A dtype measured at shorter
    lengths only (bfloat16 in a quick run) follows the float32 curve times
    the ratio of the two where both were measured."""
    by_key = {}
    for r in rows:
        if r["kind"] == "grid" and r["status"] == "ok":
            key = (r["backend"], r["variant"], r["mode"], r["dtype"])
            by_key.setdefault(key, []).append(r)
    total = {}
    for length, batch, dim, _mask, mode, dtype in cells(LENGTHS, DIMS, LENGTHS):
        for key, measured in by_key.items():
            backend, variant, k_mode, k_dtype = key
            if (k_mode, k_dtype) != (mode, dtype):
                continue
            call = _interpolate(measured, length, batch, dim)
            f32 = by_key.get((backend, variant, mode, "float32"))
            if f32 and max(r["T"] for r in measured) < max(r["T"] for r in f32):
                common = {(r["T"], r["D"]) for r in measured} & {(r["T"], r["D"]) for r in f32}
                ratio = statistics.median(
                    _interpolate(measured, t, batch_for(t), d)
                    / _interpolate(f32, t, batch_for(t), d)
                    for t, d in common
                )
                call = ratio * _interpolate(f32, length, batch, dim)
            first = statistics.median(r["first_call_ms"] for r in measured) / 1000
            per_sample = sample_calls(call, min_sample_s) * call
            samples = cell_rounds(rounds, per_sample, min_cell_s) * per_sample
            # The first call includes one call; the sizing call is one more.
            total[backend] = total.get(backend, 0.0) + first + 2 * call + samples
    for backend, seconds in (extra_seconds or {}).items():
        total[backend] = total.get(backend, 0.0) + seconds
    return total


def _interpolate(measured, length, batch, dim):
    def work(r_len, r_batch, r_dim):
        return r_batch * r_len * r_len * r_dim

    points = sorted((r["T"], r["median_ms"] / 1000, work(r["T"], r["B"], r["D"])) for r in measured)
    points = [(t, statistics.median(p[1] for p in points if p[0] == t), w) for t, _, w in points]
    target = work(length, batch, dim)
    below = [p for p in points if p[0] <= length]
    above = [p for p in points if p[0] > length]
    if not below:
        return above[0][1]
    lo = below[-1]
    if not above:
        return lo[1] * max(1.0, target / lo[2])
    hi = above[0]
    if hi[2] == lo[2]:
        # Equal work at two lengths (B=32, T=1024 and B=2, T=4096): no slope.
        return lo[1]
    frac = (math.log(target) - math.log(lo[2])) / (math.log(hi[2]) - math.log(lo[2]))
    return math.exp(math.log(lo[1]) + frac * (math.log(hi[1]) - math.log(lo[1])))


def _earlier_results(path):
    """The results file at `path`, or None where there is none. Read once
    before a run (`check_merge`) and again after it (`merge_into`): the merge
    takes the file as it is when the run ends."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def check_merge(path, *, quick, parts, backends):
    """With --only, before anything is measured: refuse a merge into the
    results at `path` that would mislabel rows. A quick run and a full one do
    not mix, and rows that `backends` have there in a part this run skips
    would stay under this run's machine, time and commit (a backend's header
    is its latest run's)."""
    earlier = _earlier_results(path)
    if earlier is None:
        return
    if earlier.get("quick") != quick:
        raise SystemExit(
            f"{path} holds a {'quick' if earlier.get('quick') else 'full'} run; "
            "refusing to merge a run of the other kind into it (use --out)."
        )
    stale = sorted(
        {
            f"{row['backend']}'s {part}"
            for part in PARTS
            if part not in parts
            for row in earlier.get(part, [])
            if row["backend"] in backends
        }
    )
    if stale:
        raise SystemExit(
            f"{path} holds {', '.join(stale)} rows of an earlier run, which this run "
            "would label with its own machine, time and commit; run those parts too, "
            "or write to another --out."
        )


def merge_into(path, results):
    """With --only: keep the other backends' rows of an earlier run at `path`
    (`check_merge` allowed the merge before the run)."""
    earlier = _earlier_results(path)
    if earlier is None:
        return results
    ran = set(results["backends"])
    for key in PARTS:  # a part this run skipped keeps its earlier rows
        if key in results["spec"]["parts"]:
            # (an earlier file may predate a part: no rows of it)
            kept = [r for r in earlier.get(key, []) if r["backend"] not in ran]
            results[key] = kept + results[key]
        else:
            results[key] = earlier.get(key, [])
    for key in ("backends", "part_seconds"):
        results[key] = {
            **{b: v for b, v in earlier[key].items() if b not in ran},
            **results[key],
        }
    # The backends kept from the earlier run keep its machine, date and commit.
    for backend in set(results["backends"]) - ran:
        results["backends"][backend].setdefault("machine", earlier["machine"])
    return results


def drive(args):
    pythons = {}
    for pair in args.python:
        backend, sep, path = pair.partition("=")
        if not sep or backend not in BACKENDS:
            raise SystemExit(f"--python expects BACKEND=PATH with BACKEND in {BACKENDS}: {pair!r}")
        pythons[backend] = path
    backends = [args.only] if args.only else list(BACKENDS)
    spec = dict(
        lengths=list(QUICK["lengths"] if args.quick else LENGTHS),
        dims=list(QUICK["dims"] if args.quick else DIMS),
        low_lengths=list(QUICK["low_lengths"] if args.quick else LENGTHS),
        variants=list(VARIANTS),
        rounds=args.rounds or (QUICK["rounds"] if args.quick else 3),
        min_sample_ms=args.min_sample_ms,
        min_cell_ms=_min_cell_ms(args, quick=args.quick),
        max_rounds=MAX_ROUNDS,
        e2e_sample_ms=QUICK["e2e_sample_ms"] if args.quick else E2E_SAMPLE_MS,
        e2e_min_ms=QUICK["e2e_min_ms"] if args.quick else E2E_MIN_MS,
        parts=args.parts,
        skip_lengths=list(QUICK["skip_lengths"] if args.quick else SKIP_LENGTHS),
        block_lengths=list(QUICK["block_lengths"] if args.quick else BLOCK_LENGTHS),
        block_sizes=list(QUICK["block_sizes"] if args.quick else BLOCK_SIZES),
        overhead_rounds=QUICK["overhead_rounds"] if args.quick else OVERHEAD_ROUNDS,
    )
    out = os.path.join(args.out, "grid.json")
    if args.only:
        check_merge(out, quick=args.quick, parts=args.parts, backends=backends)
    results = dict(
        quick=args.quick,
        command=" ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
        spec=spec,
        machine=dict(
            cpu=_cpu_model(),
            cores=os.cpu_count(),
            platform=platform.platform(),
            when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            commit=_git_commit(),
            load_average=os.getloadavg(),
            omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
            # What a fwd+bwd call pulls back (older runs: the output's sum).
            backward="dense cotangent",
        ),
        backends={},
        grid=[],
        matmul=[],
        e2e=[],
        overhead=[],
        guard=[],
        skip=[],
        blocks=[],
    )
    part_seconds = {}
    for backend in backends:
        start = time.perf_counter()
        rows = run_worker(pythons.get(backend, sys.executable), backend, spec)
        info = next(r for r in rows if r["kind"] == "info")
        results["backends"][backend] = dict(
            device=info["device"],
            versions=info["versions"],
            python=pythons.get(backend, sys.executable),
            seconds=time.perf_counter() - start,
        )
        for r in rows:
            if r["kind"] in PARTS:
                results[r["kind"]].append(r)
            if r["kind"] == "timing":
                part_seconds.setdefault(backend, {})[r["part"]] = r["seconds"]
    results["part_seconds"] = part_seconds
    if args.only:
        results = merge_into(out, results)
    os.makedirs(args.out, exist_ok=True)
    # Written before the estimate below, so that nothing measured is lost.
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    full_rounds = 3
    estimate = estimate_full_seconds(
        results["grid"],
        full_rounds,
        args.min_sample_ms / 1000,
        _extra_seconds(results, full_rounds),
        _min_cell_ms(args, quick=False) / 1000,
    )
    results["estimate_full_run_s"] = estimate
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {os.path.relpath(out, ROOT)}")
    for backend, seconds in estimate.items():
        print(f"estimated full run ({full_rounds} rounds), {backend}: {seconds / 60:.1f} min")
    print(f"estimated full run, all backends in {out}: {sum(estimate.values()) / 60:.1f} min")


def _min_cell_ms(args, *, quick):
    if args.min_cell_ms is not None:
        return args.min_cell_ms
    return 0.0 if quick else MIN_CELL_MS


def _extra_seconds(results, full_rounds):
    """What a full run spends outside the grid cells, from this run's parts:
    end to end with a full run's samples, every other part as measured."""
    as_measured = [part for part in PARTS if part not in ("grid", "e2e")]
    seconds = {}
    for backend, parts in results["part_seconds"].items():
        seconds[backend] = sum(parts.get(part, 0.0) for part in as_measured)
        for r in results["e2e"]:
            if r["backend"] != backend:
                continue
            step = 1 / r["steps_per_s"]
            sample = sample_calls(step, E2E_SAMPLE_MS / 1000) * step
            rounds = cell_rounds(full_rounds, sample, E2E_MIN_MS / 1000)
            seconds[backend] += r["first_call_ms"] / 1000 + step + rounds * (sample + step)
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", metavar="SPEC_JSON", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a few cells, 1 round: smoke test")
    parser.add_argument(
        "--only",
        choices=BACKENDS,
        help="run one backend, merged into --out (refused where that backend has rows there "
        "in a part this run skips: they would take this run's header)",
    )
    parser.add_argument("--rounds", type=int, help="timed rounds per cell (default 3; quick 1)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument(
        "--min-sample-ms",
        type=float,
        default=20.0,
        help="each timed sample repeats the call to last at least this long",
    )
    parser.add_argument(
        "--min-cell-ms",
        type=float,
        help="a cell gets more rounds (at most MAX_ROUNDS) until each variant's samples "
        f"add up to this long (default {MIN_CELL_MS:g}; quick 0)",
    )
    parser.add_argument(
        "--python",
        action="append",
        default=[],
        metavar="BACKEND=PYTHON",
        help="the Python to run a backend's worker with (default: this one)",
    )
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
    else:
        drive(args)


if __name__ == "__main__":
    main()
