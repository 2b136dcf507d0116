"""Blocked attention: exact softmax one block of query rows at a time.

The `(Tq, Tv)` score matrix is never materialised. Query rows are cut into
blocks of `block_size`; each block computes its scores against the keys it
may see, takes an exact float32 softmax over them, and multiplies by the
values. Under a causal mask a block of rows sees only a prefix of the keys,
so the key blocks the mask removes entirely are never computed: about half
the work of the full product.

The backward pass (`keras.ops.custom_gradient`) recomputes each block's
scores from the row statistics kept by the forward pass (the log-sum-exp,
one number per query row), so memory is `O(block_size * Tv)` for the work
in flight plus `O(T)` for inputs, outputs and statistics; no `(Tq, Tv)`
tensor lives across blocks in either direction. Only when all the weights
the blocks compute fit in `SAVE_WEIGHTS_BELOW_BYTES` does the forward pass
keep them for the backward pass instead, saving one matrix product and one
`exp` per tile where memory is not the constraint.

Block shapes are Python ints fixed at trace time, so the loops unroll into
static graphs on JAX and TensorFlow and run eagerly on PyTorch.
"""

import math

import keras
from keras import ops

# Finite stand-in for -inf on masked scores, as in `functional.py`.
_MASKED_SCORE = -1e30

# Rows per block: at least `MIN_BLOCK_SIZE`, and at most `MAX_BLOCKS`
# blocks, so that graphs stay small for long sequences. Tests lower
# `BLOCK_SIZE_OVERRIDE` to cross several block boundaries with tiny inputs.
MIN_BLOCK_SIZE = 256
MAX_BLOCKS = 32
BLOCK_SIZE_OVERRIDE = None
# Above this many bytes of float32 scores (batch x Tq x Tv) the blocks are
# chained to run one at a time (see `_after`). Below it, TensorFlow runs
# independent blocks concurrently, which measured 1.5x faster (B=2, T=4096).
CHAIN_ABOVE_BYTES = 256 * 2**20
# Up to this many bytes of float32 weights (batch x the (rows, keys) tiles
# computed, causal skips excluded) the forward pass keeps the unnormalised
# weights for the backward pass; above it they are recomputed, keeping
# memory O(T). Measured with benchmarks/bench.py on 2 CPU cores, fwd+bwd,
# causal, B=2, T=4096 (71 MB of weights kept), blocked path, ms:
# TensorFlow 69 -> 56, PyTorch 209 -> 155, JAX 126 -> 111.
SAVE_WEIGHTS_BELOW_BYTES = 128 * 2**20


def block_size_for(q_len):
    if BLOCK_SIZE_OVERRIDE is not None:
        return BLOCK_SIZE_OVERRIDE
    return max(MIN_BLOCK_SIZE, math.ceil(q_len / MAX_BLOCKS))


def _row_blocks(q_len, kv_len, causal, offset, block_size):
    """`(r0, r1, parts)` for each block of query rows `[r0, r1)`.

    `parts` are `(k0, k1, needs_causal_mask)` key ranges, contiguous from 0:
    under a causal mask, the keys every row of the block sees, then the
    diagonal tile where the mask cuts through. Keys no row sees are left out.
    """
    blocks = []
    for r0 in range(0, q_len, block_size):
        r1 = min(q_len, r0 + block_size)
        if not causal:
            blocks.append((r0, r1, [(0, kv_len, False)]))
            continue
        # Row i sees keys j <= i + offset: the block's first row sees the
        # fewest, its last row the most.
        kv_end = max(0, min(kv_len, r1 + offset))
        shared = max(0, min(kv_end, r0 + offset + 1))
        parts = [(0, shared, False)] if shared else []
        if shared < kv_end:
            parts.append((shared, kv_end, True))
        blocks.append((r0, r1, parts))
    return blocks


def _part_mask(mask, r0, r1, k0, k1, needs_causal, offset):
    if mask is not None:
        if mask.shape[-2] != 1:
            mask = mask[..., r0:r1, :]
        if mask.shape[-1] != 1:
            mask = mask[..., k0:k1]
    if needs_causal:
        rows = ops.expand_dims(ops.arange(r0, r1, dtype="int32"), -1) + offset
        cols = ops.expand_dims(ops.arange(k0, k1, dtype="int32"), 0)
        causal = ops.less_equal(cols, rows)
        mask = causal if mask is None else ops.logical_and(mask, causal)
    return mask


def _after(x, previous):
    """`x`, made to depend on `previous` without changing its value.

    Blocks are independent computations, and graph executors (XLA, TF) may
    run them in any order or all at once, holding every block's
    `(rows, keys)` tiles together. Adding `min(|p|, 0) = 0`, taken from a
    `(batch..., 1, 1)` corner of the previous block's result, orders them
    so only one block's tiles live at a time. (XLA and TF do not fold it.)
    """
    if previous is None:
        return x
    # nan_to_num: a NaN in that corner must not spread to the next block.
    return x + ops.minimum(ops.abs(ops.nan_to_num(previous[..., :1, :1])), 0.0)


def _unchained(x, previous):
    """`_after` for blocks that may run in any order: `x` as it is."""
    return x


def _pad_rows(x, total):
    """Zero-pads axis -2 of `x` up to `total` rows."""
    rows = x.shape[-2]
    if rows == total:
        return x
    pad = [(0, 0)] * (len(x.shape) - 2) + [(0, total - rows), (0, 0)]
    return ops.pad(x, pad)


def blocked_attention(query, key, value, mask=None, causal=False, causal_offset=0):
    """Softmax attention of float32 `query` over `key`/`value`, in row blocks.

    Args:
        query: `(batch..., Tq, dim)`, already scaled (and multiplied by
            `W_a` for the general score).
        key: `(batch..., Tv, dim)`.
        value: `(batch..., Tv, dim_v)`.
        mask: optional boolean mask broadcastable to `(batch..., Tq, Tv)`,
            same rank as `query`, without the causal part.
        causal: whether row i sees only keys `j <= i + causal_offset`.
        causal_offset: `0` (top-left) or `Tv - Tq` (bottom-right).

    Returns:
        `(batch..., Tq, dim_v)`; rows with no visible key are zero.
        Gradients flow to `query`, `key` and `value`.
    """
    q_len, kv_len = int(query.shape[-2]), int(key.shape[-2])
    batch = math.prod(d if isinstance(d, int) else -1 for d in query.shape[:-2])
    chain = batch < 0 or 4 * batch * q_len * kv_len > CHAIN_ABOVE_BYTES
    after = _after if chain else _unchained
    # TensorFlow copies slices, and runs the copy as soon as its input is
    # ready: slices of the key and value for every block at once. Slicing
    # chained copies makes each when its block runs (B=1, T=32768, fwd+bwd
    # peak: 1953 -> 1780 MiB). XLA slices without copies; chained copies
    # there cost memory instead (1902 -> 2128 MiB).
    after_slice = after if keras.backend.backend() == "tensorflow" else _unchained

    def transposed_product(tile, rows):
        """`tile^T @ rows`, `(batch..., keys, dim)` from a `(rows, keys)` tile."""
        if chain:
            # TensorFlow and XLA copy a swapped tile for matmul; einsum
            # does not (B=1, T=32768, fwd+bwd peak: TensorFlow 1780 vs
            # 1450 MiB, JAX 2000 vs 1860 MiB).
            return ops.einsum("...qk,...qd->...kd", tile, rows)
        # Faster on TensorFlow for short inputs (B=2, T=4096: 54 vs 58 ms).
        return ops.matmul(ops.swapaxes(tile, -1, -2), rows)

    blocks = _row_blocks(q_len, kv_len, causal, causal_offset, block_size_for(q_len))
    batch_shape = tuple(ops.shape(query)[:-2])
    tile_elements = sum((r1 - r0) * (k1 - k0) for r0, r1, parts in blocks for k0, k1, _ in parts)
    save_weights = batch > 0 and 4 * batch * tile_elements <= SAVE_WEIGHTS_BELOW_BYTES

    def part_scores(q_block, key, r0, r1, parts):
        """`(scores, mask)` of each key part of a row block; mask may be None."""
        out = []
        for k0, k1, needs_causal in parts:
            scores = ops.matmul(q_block, ops.swapaxes(key[..., k0:k1, :], -1, -2))
            part_mask = _part_mask(mask, r0, r1, k0, k1, needs_causal, causal_offset)
            if part_mask is not None:
                scores = ops.where(part_mask, scores, _MASKED_SCORE)
            out.append((scores, part_mask))
        return out

    def exp_scores(scores, part_mask, shift, r0):
        p = ops.exp(scores - shift)
        # Masked scores are -1e30, so exp gives exact zeros, except in a row
        # with no visible key, where the shift is -1e30 as well.
        row_may_be_empty = mask is not None or (causal and r0 + causal_offset < 0)
        if part_mask is not None and row_may_be_empty:
            p = ops.where(part_mask, p, 0.0)
        return p

    @ops.custom_gradient
    def attend(query, key, value):
        outputs, stats, saved = [], [], []
        previous = None
        for r0, r1, parts in blocks:
            if not parts:
                outputs.append(ops.zeros((*batch_shape, r1 - r0, value.shape[-1]), value.dtype))
                stats.append(None)
                saved.append(None)
                continue
            key_b, value_b = after_slice(key, previous), after_slice(value, previous)
            scored = part_scores(after(query[..., r0:r1, :], previous), key_b, r0, r1, parts)
            row_max = None
            for scores, _ in scored:
                part_max = ops.max(scores, axis=-1, keepdims=True)
                row_max = part_max if row_max is None else ops.maximum(row_max, part_max)
            row_sum, output, ps = 0.0, 0.0, []
            for (scores, part_mask), (k0, k1, _) in zip(scored, parts, strict=True):
                p = exp_scores(scores, part_mask, row_max, r0)
                row_sum = row_sum + ops.sum(p, axis=-1, keepdims=True)
                output = output + ops.matmul(p, value_b[..., k0:k1, :])
                ps.append(p)
            # A row with a visible key has row_sum >= 1 (its largest score
            # gives exp(0)); a row without one has row_sum 0 and output 0.
            row_sum = ops.maximum(row_sum, 1e-30)
            outputs.append(output / row_sum)
            previous = outputs[-1]
            # The log-sum-exp: the weights are exp(scores - lse).
            stats.append(row_max + ops.log(row_sum))
            saved.append((ps, 1.0 / ops.maximum(row_sum, 1.0)) if save_weights else None)
        output = outputs[0] if len(outputs) == 1 else ops.concatenate(outputs, axis=-2)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            upstream = ops.cast(upstream, output.dtype)
            # delta_i = sum_j w_ij dw_ij = dO_i . O_i, the softmax correction.
            delta = ops.sum(upstream * output, axis=-1, keepdims=True)
            # Both row shifts ride along in the matrix products as one extra
            # column: [q, -lse] . [k, 1] = q . k - lse and
            # [dO, -delta] . [v, 1] = dO . v - delta, saving two passes over
            # each (rows, keys) tile.
            key_1 = ops.pad(key, [(0, 0)] * (len(key.shape) - 1) + [(0, 1)], constant_values=1)
            value_1 = ops.pad(
                value, [(0, 0)] * (len(value.shape) - 1) + [(0, 1)], constant_values=1
            )
            d_query, d_key, d_value = [], None, None
            done = None  # depends on every result of the previous block
            for (r0, r1, parts), lse, kept in zip(blocks, stats, saved, strict=True):
                if lse is None:
                    d_query.append(ops.zeros((*batch_shape, r1 - r0, query.shape[-1]), query.dtype))
                    continue
                q_block = after(query[..., r0:r1, :], done)
                d_out = after(upstream[..., r0:r1, :], done)
                key_b, key_1b, value_1b = (after_slice(t, done) for t in (key, key_1, value_1))
                d_q, d_ks, d_vs = 0.0, [], []
                d_out_delta = ops.concatenate([d_out, -delta[..., r0:r1, :]], axis=-1)
                if kept is None:
                    # Masked entries get -1e30 after the shift, so exp gives 0
                    # even in a row with no visible key.
                    q_lse = ops.concatenate([q_block, -lse], axis=-1)
                    scored = part_scores(q_lse, key_1b, r0, r1, parts)
                    all_weights = [ops.exp(scores) for scores, _ in scored]
                else:
                    # Saved weights are unnormalised; 1 / row_sum goes on the
                    # small (rows, dim) factors instead of the (rows, keys) tile.
                    all_weights, inv_sum = kept
                    d_out = d_out * inv_sum
                    d_out_delta = d_out_delta * inv_sum
                for weights, (k0, k1, _) in zip(all_weights, parts, strict=True):
                    d_weights = ops.matmul(
                        d_out_delta, ops.swapaxes(value_1b[..., k0:k1, :], -1, -2)
                    )
                    d_scores = weights * d_weights
                    d_q = d_q + ops.matmul(d_scores, key_b[..., k0:k1, :])
                    d_ks.append(transposed_product(d_scores, q_block))
                    d_vs.append(transposed_product(weights, d_out))
                d_query.append(d_q)
                dk = _pad_rows(d_ks[0] if len(d_ks) == 1 else ops.concatenate(d_ks, -2), kv_len)
                dv = _pad_rows(d_vs[0] if len(d_vs) == 1 else ops.concatenate(d_vs, -2), kv_len)
                d_key = dk if d_key is None else d_key + dk
                d_value = dv if d_value is None else d_value + dv
                # d_key alone would let the block's d_q products wait behind
                # the next block, holding its tiles: TensorFlow's executor
                # did that with one inter-op thread (3.6 GB at T=32768).
                done = d_key[..., :1, :1] + d_value[..., :1, :1] + d_q[..., :1, :1]
            if d_key is None:
                d_key, d_value = ops.zeros_like(key), ops.zeros_like(value)
            d_query = d_query[0] if len(d_query) == 1 else ops.concatenate(d_query, axis=-2)
            return d_query, d_key, d_value

        return output, grad

    return attend(query, key, value)
