"""The blocked path: exact softmax attention one block of query rows at a time.

The `(Tq, Tv)` score matrix is never materialised. Query rows are cut into
blocks; each block computes its scores against the keys it may see, takes an
exact float32 softmax over them, and multiplies by the values. Under a
causal mask a block of rows sees only a prefix of the keys, so the key tiles
the mask removes entirely are never computed: about half the work.

In training the backward pass (`keras.ops.custom_gradient`) recomputes each
block's scores from the log-sum-exp kept by the forward pass (one number per
query row), so memory is `O(block_size * Tv)` for the work in flight plus
`O(T)` for inputs, outputs and statistics. When the weights of all blocks fit
`BlockedOptions.save_weights_below_bytes`, the forward pass keeps them for
the backward pass instead, saving one matrix product and one `exp` per tile.
In inference the forward pass runs alone, without the custom gradient, so
that it traces with symbolic dims (export).

Block shapes are Python ints fixed at trace time, so the loops unroll into
static graphs on JAX and TensorFlow and run eagerly on PyTorch.
"""

import dataclasses
import math
from typing import Any, NamedTuple

from keras import ops

from luong_attention import _masks
from luong_attention.kernels.reference import MASKED_SCORE


@dataclasses.dataclass(frozen=True)
class BlockedOptions:
    """Tuning knobs of the blocked path.

    Attributes:
        block_size: query rows per block; None picks
            `max(min_block_size, ceil(Tq / max_blocks))`.
        min_block_size: smallest block when `block_size` is None.
        max_blocks: most blocks when `block_size` is None (keeps graphs small).
        chain_above_bytes: above this many bytes of float32 scores
            (batch x Tq x Tv), blocks are chained to run one at a time, so
            only one block's tiles are alive; below it graph executors may
            run blocks concurrently.
        save_weights_below_bytes: up to this many bytes of float32 weights,
            the forward pass keeps them for the backward pass; above it they
            are recomputed (memory `O(T)`).
    """

    block_size: int | None = None
    min_block_size: int = 256
    max_blocks: int = 32
    chain_above_bytes: int = 256 * 2**20
    save_weights_below_bytes: int = 128 * 2**20

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None and field.name == "block_size":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(
                    f"Invalid type for argument {field.name}. Expected an int. "
                    f"Received: {field.name}={value!r}"
                )
            least = 0 if field.name.endswith("bytes") else 1
            if value < least:
                raise ValueError(
                    f"Invalid value for argument {field.name}. Expected an int >= "
                    f"{least}. Received: {field.name}={value}"
                )

    def rows_per_block(self, q_len):
        if self.block_size is not None:
            return self.block_size
        return max(self.min_block_size, math.ceil(q_len / self.max_blocks))


class _Plan(NamedTuple):
    """Everything about a call that is fixed at trace time."""

    blocks: list  # (r0, r1, parts): query rows [r0, r1) and their key parts
    mask: Any  # boolean, broadcastable to (batch..., Tq, Tv), or None
    causal_offset: Any  # None, or the int offset of the causal mask
    batch_shape: tuple
    chain: bool  # run blocks one after another
    chain_slices: bool  # also order the key/value slices of each block
    save_weights: bool  # keep the forward weights for the backward pass


def blocked_attention(
    *,
    query,
    key,
    value,
    mask=None,
    causal_offset=None,
    options=None,
    chain_slices=False,
    with_gradient=True,
):
    """Softmax attention of float32 `query` over `key`/`value`, in row blocks.

    Args:
        query: `(batch..., Tq, dim)`, scale already folded in; static Tq.
        key: `(batch..., Tv, dim)`, batch dims equal to the query's; static Tv.
        value: `(batch..., Tv, dim_v)`.
        mask: boolean, broadcastable to `(batch..., Tq, Tv)`, same rank as
            `query`, or None.
        causal_offset: None, or the int offset: row i sees keys `j <= i + offset`.
        options: `BlockedOptions` (default: `BlockedOptions()`).
        chain_slices: whether the key/value slices of each block wait for the
            previous block too (a graph executor that copies slices eagerly
            would otherwise make them all at once).
        with_gradient: use the memory-saving backward pass; False runs the
            forward pass alone (inference, export).

    Returns:
        `(batch..., Tq, dim_v)`; rows with no visible key are zero.
    """
    options = options or BlockedOptions()
    plan = _make_plan(query, key, mask, causal_offset, options, chain_slices)
    if not with_gradient:
        return _forward(plan, query, key, value)[0]

    @ops.custom_gradient
    def attend(query, key, value):
        output, stats, saved = _forward(plan, query, key, value)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return _backward(plan, (query, key, value), output, stats, saved, upstream)

        return output, grad

    return attend(query, key, value)


def _make_plan(query, key, mask, causal_offset, options, chain_slices):
    q_len, kv_len = int(query.shape[-2]), int(key.shape[-2])
    batch_dims = query.shape[:-2]
    batch = math.prod(batch_dims) if all(isinstance(d, int) for d in batch_dims) else None
    chain = batch is None or 4 * batch * q_len * kv_len > options.chain_above_bytes
    blocks = _row_blocks(q_len, kv_len, causal_offset, options.rows_per_block(q_len))
    tiles = sum((r1 - r0) * (k1 - k0) for r0, r1, parts in blocks for k0, k1, _ in parts)
    return _Plan(
        blocks=blocks,
        mask=mask,
        causal_offset=causal_offset,
        batch_shape=tuple(ops.shape(query)[:-2]),
        chain=chain,
        chain_slices=chain and chain_slices,
        save_weights=batch is not None and 4 * batch * tiles <= options.save_weights_below_bytes,
    )


def _row_blocks(q_len, kv_len, causal_offset, block_size):
    """`(r0, r1, parts)` for each block of query rows `[r0, r1)`.

    `parts` are `(k0, k1, needs_causal_mask)` key ranges, contiguous from 0:
    under a causal mask, the keys every row of the block sees, then the
    diagonal tile where the mask cuts through. Keys no row sees are left out.
    """
    blocks = []
    for r0 in range(0, q_len, block_size):
        r1 = min(q_len, r0 + block_size)
        if causal_offset is None:
            blocks.append((r0, r1, [(0, kv_len, False)]))
            continue
        # Row i sees keys j <= i + offset: the block's first row sees the
        # fewest, its last row the most.
        kv_end = max(0, min(kv_len, r1 + causal_offset))
        shared = max(0, min(kv_end, r0 + causal_offset + 1))
        parts = [(0, shared, False)] if shared else []
        if shared < kv_end:
            parts.append((shared, kv_end, True))
        blocks.append((r0, r1, parts))
    return blocks


def _after(plan, x, previous):
    """`x`, made to depend on `previous` (when chaining) without changing its value.

    Blocks are independent computations, and graph executors (XLA, TF) may
    run them in any order or all at once, holding every block's tiles
    together. Adding `min(|p|, 0) = 0`, taken from a `(batch..., 1, 1)`
    corner of the previous block's result, orders them so only one block's
    tiles live at a time. (XLA and TF do not fold it.)
    """
    if previous is None or not plan.chain:
        return x
    # nan_to_num: a NaN in that corner must not spread to the next block.
    return x + ops.minimum(ops.abs(ops.nan_to_num(previous[..., :1, :1])), 0.0)


def _after_slice(plan, x, previous):
    return _after(plan, x, previous) if plan.chain_slices else x


def _tile_mask(plan, r0, r1, k0, k1, needs_causal):
    mask = plan.mask
    if mask is not None:
        if mask.shape[-2] != 1:
            mask = mask[..., r0:r1, :]
        if mask.shape[-1] != 1:
            mask = mask[..., k0:k1]
    if needs_causal:
        causal = _masks.causal_mask(None, None, plan.causal_offset, rows=(r0, r1), cols=(k0, k1))
        mask = _masks.conjoin(mask, causal)
    return mask


def _tile_scores(plan, q_block, key, r0, r1, parts):
    """`(scores, mask)` of each key part of a row block; the mask may be None."""
    out = []
    for k0, k1, needs_causal in parts:
        scores = ops.matmul(q_block, ops.swapaxes(key[..., k0:k1, :], -1, -2))
        tile_mask = _tile_mask(plan, r0, r1, k0, k1, needs_causal)
        if tile_mask is not None:
            scores = ops.where(tile_mask, scores, MASKED_SCORE)
        out.append((scores, tile_mask))
    return out


def _row_may_be_empty(plan, r0):
    return plan.mask is not None or (plan.causal_offset is not None and r0 + plan.causal_offset < 0)


def _forward(plan, query, key, value):
    """Returns the output, each block's log-sum-exp and, if kept, its weights."""
    outputs, stats, saved = [], [], []
    previous = None
    for r0, r1, parts in plan.blocks:
        if not parts:
            outputs.append(ops.zeros((*plan.batch_shape, r1 - r0, value.shape[-1]), value.dtype))
            stats.append(None)
            saved.append(None)
            continue
        key_b, value_b = (_after_slice(plan, t, previous) for t in (key, value))
        q_block = _after(plan, query[..., r0:r1, :], previous)
        scored = _tile_scores(plan, q_block, key_b, r0, r1, parts)
        row_max = None
        for scores, _ in scored:
            part_max = ops.max(scores, axis=-1, keepdims=True)
            row_max = part_max if row_max is None else ops.maximum(row_max, part_max)
        row_sum, output, weights = 0.0, 0.0, []
        for (scores, tile_mask), (k0, k1, _) in zip(scored, parts, strict=True):
            p = ops.exp(scores - row_max)
            # Masked scores are -1e30, so exp gives exact zeros, except in a
            # row with no visible key, where the shift is -1e30 as well.
            if tile_mask is not None and _row_may_be_empty(plan, r0):
                p = ops.where(tile_mask, p, 0.0)
            row_sum = row_sum + ops.sum(p, axis=-1, keepdims=True)
            output = output + ops.matmul(p, value_b[..., k0:k1, :])
            weights.append(p)
        # A row with a visible key has row_sum >= 1 (its largest score gives
        # exp(0)); a row without one has row_sum 0 and output 0.
        row_sum = ops.maximum(row_sum, 1e-30)
        outputs.append(output / row_sum)
        previous = outputs[-1]
        # The log-sum-exp: the weights are exp(scores - lse).
        stats.append(row_max + ops.log(row_sum))
        saved.append((weights, 1.0 / ops.maximum(row_sum, 1.0)) if plan.save_weights else None)
    output = outputs[0] if len(outputs) == 1 else ops.concatenate(outputs, axis=-2)
    return output, stats, saved


def _backward(plan, inputs, output, stats, saved, upstream):
    """Gradients of `(query, key, value)` one row block at a time."""
    query, key, value = inputs
    upstream = ops.cast(upstream, output.dtype)
    # delta_i = sum_j w_ij dw_ij = dO_i . O_i, the softmax correction.
    delta = ops.sum(upstream * output, axis=-1, keepdims=True)
    # Both row shifts ride along in the matrix products as one extra column:
    # [q, -lse] . [k, 1] = q . k - lse and [dO, -delta] . [v, 1] = dO . v -
    # delta, saving two passes over each (rows, keys) tile.
    key_1, value_1 = (_append_ones(t) for t in (key, value))
    d_query, d_key, d_value = [], None, None
    done = None  # depends on every result of the previous block
    for (r0, r1, parts), lse, kept in zip(plan.blocks, stats, saved, strict=True):
        if lse is None:
            d_query.append(ops.zeros((*plan.batch_shape, r1 - r0, query.shape[-1]), query.dtype))
            continue
        rows = (
            _after(plan, query[..., r0:r1, :], done),
            _after(plan, upstream[..., r0:r1, :], done),
            delta[..., r0:r1, :],
            lse,
        )
        columns = tuple(_after_slice(plan, t, done) for t in (key, key_1, value_1))
        d_q, dk, dv = _block_backward(plan, (r0, r1, parts), rows, columns, kept)
        d_query.append(d_q)
        kv_len = key.shape[-2]
        dk, dv = _pad_rows(dk, kv_len), _pad_rows(dv, kv_len)
        d_key = dk if d_key is None else d_key + dk
        d_value = dv if d_value is None else d_value + dv
        # d_key alone would let the block's d_q products wait behind the next
        # block, holding its tiles: TensorFlow's executor did that with one
        # inter-op thread.
        done = d_key[..., :1, :1] + d_value[..., :1, :1] + d_q[..., :1, :1]
    if d_key is None:
        d_key, d_value = ops.zeros_like(key), ops.zeros_like(value)
    d_query = d_query[0] if len(d_query) == 1 else ops.concatenate(d_query, axis=-2)
    return d_query, d_key, d_value


def _block_backward(plan, block, rows, columns, kept):
    """`(d_query rows, d_key rows, d_value rows)` of one block of query rows."""
    r0, r1, parts = block
    q_block, d_out, delta, lse = rows
    key, key_1, value_1 = columns
    d_out_delta = ops.concatenate([d_out, -delta], axis=-1)
    if kept is None:
        # Masked entries get -1e30 after the shift, so exp gives 0 even in a
        # row with no visible key.
        q_lse = ops.concatenate([q_block, -lse], axis=-1)
        all_weights = [ops.exp(s) for s, _ in _tile_scores(plan, q_lse, key_1, r0, r1, parts)]
    else:
        # Saved weights are unnormalised; 1 / row_sum goes on the small
        # (rows, dim) factors instead of the (rows, keys) tile.
        all_weights, inv_sum = kept
        d_out = d_out * inv_sum
        d_out_delta = d_out_delta * inv_sum
    d_q, d_ks, d_vs = 0.0, [], []
    for weights, (k0, k1, _) in zip(all_weights, parts, strict=True):
        d_weights = ops.matmul(d_out_delta, ops.swapaxes(value_1[..., k0:k1, :], -1, -2))
        d_scores = weights * d_weights
        d_q = d_q + ops.matmul(d_scores, key[..., k0:k1, :])
        d_ks.append(_transposed_product(plan, d_scores, q_block))
        d_vs.append(_transposed_product(plan, weights, d_out))
    concat = lambda xs: xs[0] if len(xs) == 1 else ops.concatenate(xs, -2)  # noqa: E731
    return d_q, concat(d_ks), concat(d_vs)


def _transposed_product(plan, tile, rows):
    """`tile^T @ rows`, `(batch..., keys, dim)` from a `(rows, keys)` tile."""
    if plan.chain:
        # For long inputs: TensorFlow and XLA copy a swapped tile for
        # matmul; einsum does not (less peak memory).
        return ops.einsum("...qk,...qd->...kd", tile, rows)
    # For short inputs the swapped matmul ran faster on TensorFlow.
    return ops.matmul(ops.swapaxes(tile, -1, -2), rows)


def _append_ones(x):
    return ops.pad(x, [(0, 0)] * (len(x.shape) - 1) + [(0, 1)], constant_values=1)


def _pad_rows(x, total):
    """Zero-pads axis -2 of `x` up to `total` rows."""
    rows = x.shape[-2]
    if rows == total:
        return x
    return ops.pad(x, [(0, 0)] * (len(x.shape) - 2) + [(0, total - rows), (0, 0)])
