"""Skipping padding: each batch element computed up to its last visible key and query.

Where the masks hide the end of a batch element's keys (the padding of a
batch of unequal lengths), those keys cannot change its output; where the
query mask hides the end of its query rows, those rows come out zero. `plan`
reads the masks' values, rounds each element's visible prefixes up to whole
blocks, and splits the batch into runs of neighbouring elements, each
computed on the longest prefixes among them: a padded batch then costs about
its real tokens. Runs are contiguous, so each is a slice of the inputs (no
copy): a new run pays one more kernel call, and the split weighs that cost
against the work it saves. A batch ordered by length (bucketed) splits best.

Reading values needs an eager call: a traced one has none (`jax.jit`,
`tf.function`, `torch.export`) or symbolic sizes (TorchScript's trace, which
Keras's ONNX export runs on PyTorch), gets None here and computes
everything, with the same result.
"""

import dataclasses
from typing import NamedTuple

import numpy as np
from keras import ops


@dataclasses.dataclass(frozen=True)
class SkipOptions:
    """Tuning knobs of skipping padding.

    Attributes:
        block: prefixes are rounded up to whole blocks of this many rows or
            keys (fewer distinct shapes, fewer runs).
        call_cost: what one more kernel call costs, in multiply-adds: a run
            is split in two only where that saves more work than this.
        min_work: a call of fewer multiply-adds (`batch * Tq * Tv * 2 *
            depth`) is computed in full without reading its masks: reading
            them and planning the split cost more than skipping saves there.
    """

    block: int = 64
    call_cost: int = 2**26
    min_work: int = 2**30

    def __post_init__(self):
        for name, least in (("block", 1), ("call_cost", 0), ("min_work", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(
                    f"Invalid type for argument {name}. Expected an int. Received: {name}={value!r}"
                )
            if value < least:
                raise ValueError(
                    f"Invalid value for argument {name}. Expected an int >= {least}. "
                    f"Received: {name}={value}"
                )


class Run(NamedTuple):
    """Batch elements `[start, stop)`, computed on query rows `[0, q_len)` and keys `[0, kv_len)`."""

    start: int
    stop: int
    q_len: int
    kv_len: int


def plan(key_mask, query_keep, *, shape, rank, trim_queries, options):
    """The runs of a call, or None when there is nothing to skip.

    Args:
        key_mask: the call's key-side mask, boolean, broadcastable to
            `(batch, ..., Tq, Tv)`, or None.
        query_keep: boolean `(batch, ..., Tq, 1)`, the rows whose output is
            kept, or None.
        shape: `(batch, Tq, Tv, depth)` of the call, static ints.
        rank: the rank of the call's query; a mask of lower rank is
            broadcast over the batch.
        trim_queries: whether rows that `query_keep` drops may be skipped.
        options: a `SkipOptions`.
    """
    if not all(isinstance(d, int) for d in shape):  # traced with symbolic sizes
        return None
    batch, q_len, kv_len, depth = shape
    if max(q_len, kv_len) <= options.block or batch * q_len * kv_len * 2 * depth < options.min_work:
        return None
    q_need = _needed(query_keep if trim_queries else None, (batch, q_len), rank, -2, options.block)
    kv_need = _needed(key_mask, (batch, kv_len), rank, -1, options.block)
    if q_need is None and kv_need is None:
        return None
    q_need = np.full(batch, q_len) if q_need is None else q_need
    kv_need = np.full(batch, kv_len) if kv_need is None else kv_need
    # Work in (query, key) pairs; a call costs `call_cost / (2 * depth)` of them
    # (two multiply-adds of `depth` per pair: the scores and the weighted sum).
    call = options.call_cost / max(1, 2 * depth)
    if batch * q_len * kv_len - np.sum(q_need * kv_need.astype(float)) <= call:
        # Not even one run per element would pay for a second call.
        runs = [Run(0, batch, int(q_need.max()), int(kv_need.max()))]
    else:
        runs = _split(q_need, kv_need, call)
    if len(runs) == 1 and (runs[0].q_len, runs[0].kv_len) == (q_len, kv_len):
        return None
    return runs


def _needed(mask, sizes, rank, axis, block):
    """Each element's visible prefix along `axis`, in whole blocks; None if all are full.

    `sizes` are the call's batch size and its length along `axis`. None too
    when the mask is absent, does not vary along the first batch dim or
    `axis`, or the call is traced (no values to read).
    """
    batch, length = sizes
    if not carries_batch(mask, rank, batch) or mask.shape[axis] != length:
        return None
    other = tuple(a for a in range(1, len(mask.shape)) if a != len(mask.shape) + axis)
    seen = ops.any(mask, axis=other)  # (batch, length)
    try:
        seen = np.asarray(ops.convert_to_numpy(seen), bool)
    except (TypeError, RuntimeError):  # traced: jit, tf.function, torch.export
        return None
    # One past the last visible position (0 if none).
    last = np.where(seen.any(axis=-1), length - np.argmax(seen[:, ::-1], axis=-1), 0)
    # An element with nothing visible keeps one block: its rows come out zero
    # as they would in full, and no path is handed an empty input.
    needed = np.clip(-(-last // block) * block, min(block, length), length)
    return None if needed.min() == length else needed


def carries_batch(x, rank, batch):
    """Whether `x` has the call's first batch dim (else it is None or broadcast over it).

    A tensor of lower rank than the call's query lacks leading batch dims.
    """
    return x is not None and len(x.shape) == rank and x.shape[0] == batch


def _split(q_need, kv_need, call):
    """Contiguous runs minimising `sum(call + size * max(q_need) * max(kv_need))`."""
    batch = len(q_need)
    first, last = np.indices((batch, batch))  # run [first, last + 1)
    inside = last >= first
    longest = [
        np.maximum.accumulate(np.where(inside, need[None, :], 0), axis=1)
        for need in (q_need, kv_need)
    ]
    # work[start, stop - 1]: the pairs of run [start, stop), on its longest prefixes.
    work = np.where(inside, (last - first + 1) * longest[0].astype(float) * longest[1], np.inf)
    best = np.zeros(batch + 1)  # best[stop]: the cheapest split of elements [0, stop)
    start_of = [0] * (batch + 1)
    for stop in range(1, batch + 1):
        costs = best[:stop] + work[:stop, stop - 1]
        start_of[stop] = int(np.argmin(costs))
        best[stop] = costs[start_of[stop]] + call
    runs, stop = [], batch
    while stop:
        start = start_of[stop]
        runs.append(
            Run(start, stop, int(longest[0][start, stop - 1]), int(longest[1][start, stop - 1]))
        )
        stop = start
    return runs[::-1]
