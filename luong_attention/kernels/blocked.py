"""The blocked path: exact softmax attention one block of query rows at a time.

The `(Tq, Tv)` score matrix is never materialised. Query rows are cut into
blocks; each block computes its scores against the keys it may see, takes an
exact float32 softmax over them, and multiplies by the values. Under a
causal mask a block of rows sees only a prefix of the keys, so the key tiles
the mask removes entirely are never computed: about half the work. The
prefix is one product per block, masked whole where the causal mask cuts
through it; splitting off the diagonal tile would make more, smaller
products, and a backward pass of twice as many.

In training the backward pass (`keras.ops.custom_gradient`) recomputes each
block's scores from the log-sum-exp kept by the forward pass (one number per
query row), so memory is `O(block_size * Tv)` for the work in flight plus
`O(T)` for inputs, outputs and statistics. The key and value gradients are
summed per range of keys between consecutive blocks' prefix ends, each block
adding into the ranges its prefix covers, rather than padded to every key
and added whole once per block. When the weights of all blocks fit
`BlockedOptions.save_weights_below_bytes`, the forward pass keeps them for
the backward pass instead, saving one matrix product and one `exp` per tile.
In inference the forward pass runs alone, without the custom gradient, so
that it traces with symbolic dims (export).

Block shapes are Python ints fixed at trace time, so the loops unroll into
static graphs on JAX and TensorFlow and run eagerly on PyTorch.
"""

import dataclasses
import itertools
import math
from typing import Any, NamedTuple

from keras import ops

from luong_attention import _masks, _prepare
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


class _Block(NamedTuple):
    """A block of query rows `[r0, r1)` and the keys `[0, kv_end)` it computes."""

    r0: int
    r1: int
    kv_end: int  # 0: no row of the block sees a key
    causal_cut: bool  # whether the causal mask hides some of the keys from some rows


class _Plan(NamedTuple):
    """Everything about a call that is fixed at trace time."""

    blocks: list  # of _Block
    key_ranges: list  # (k0, k1): the key ranges whose gradients are summed apart
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
    tiles = sum((b.r1 - b.r0) * b.kv_end for b in blocks)
    ends = sorted({0, *(b.kv_end for b in blocks)})
    return _Plan(
        blocks=blocks,
        key_ranges=list(itertools.pairwise(ends)),
        mask=mask,
        causal_offset=causal_offset,
        batch_shape=tuple(ops.shape(query)[:-2]),
        chain=chain,
        chain_slices=chain and chain_slices,
        save_weights=batch is not None and 4 * batch * tiles <= options.save_weights_below_bytes,
    )


def _row_blocks(q_len, kv_len, causal_offset, block_size):
    """The `_Block`s of query rows, `block_size` rows each (the last may be fewer).

    Under a causal mask a block computes the keys up to the last one its
    last row sees.
    """
    blocks = []
    for r0 in range(0, q_len, block_size):
        r1 = min(q_len, r0 + block_size)
        if causal_offset is None:
            blocks.append(_Block(r0, r1, kv_len, causal_cut=False))
            continue
        # Row i sees keys j <= i + offset: the block's first row sees the
        # fewest, its last row the most.
        kv_end = max(0, min(kv_len, r1 + causal_offset))
        blocks.append(_Block(r0, r1, kv_end, causal_cut=r0 + causal_offset + 1 < kv_end))
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


def _tile_mask(plan, block):
    r0, r1, kv_end, causal_cut = block
    mask = plan.mask
    if mask is not None:
        if mask.shape[-2] != 1:
            mask = mask[..., r0:r1, :]
        if mask.shape[-1] != 1:
            mask = mask[..., :kv_end]
    if causal_cut:
        causal = _masks.causal_mask(None, None, plan.causal_offset, rows=(r0, r1), cols=(0, kv_end))
        mask = _masks.conjoin(mask, causal)
    return mask


def _tile_scores(plan, q_block, key, block):
    """`(scores, mask)` of a row block over its keys; the mask may be None."""
    scores = ops.matmul(q_block, ops.swapaxes(key[..., : block.kv_end, :], -1, -2))
    tile_mask = _tile_mask(plan, block)
    if tile_mask is not None:
        scores = ops.where(tile_mask, scores, MASKED_SCORE)
    return scores, tile_mask


def _row_may_be_empty(plan, r0):
    return plan.mask is not None or (plan.causal_offset is not None and r0 + plan.causal_offset < 0)


def _forward(plan, query, key, value):
    """Returns the output, each block's log-sum-exp and, if kept, its weights."""
    outputs, stats, saved = [], [], []
    previous = None
    for block in plan.blocks:
        r0, r1, kv_end, _ = block
        if not kv_end:
            outputs.append(ops.zeros((*plan.batch_shape, r1 - r0, value.shape[-1]), value.dtype))
            stats.append(None)
            saved.append(None)
            continue
        key_b, value_b = (_after_slice(plan, t, previous) for t in (key, value))
        q_block = _after(plan, query[..., r0:r1, :], previous)
        scores, tile_mask = _tile_scores(plan, q_block, key_b, block)
        row_max = ops.max(scores, axis=-1, keepdims=True)
        weights = ops.exp(scores - row_max)
        # Masked scores are -1e30, so exp gives exact zeros, except in a row
        # with no visible key, where the shift is -1e30 as well.
        if tile_mask is not None and _row_may_be_empty(plan, r0):
            weights = ops.where(tile_mask, weights, 0.0)
        row_sum = ops.sum(weights, axis=-1, keepdims=True)
        output = ops.matmul(weights, value_b[..., :kv_end, :])
        # A row with a visible key has row_sum >= 1 (its largest score gives
        # exp(0)); a row without one has row_sum 0 and output 0.
        row_sum = ops.maximum(row_sum, 1e-30)
        outputs.append(output / row_sum)
        previous = outputs[-1]
        # The log-sum-exp: the weights are exp(scores - lse).
        stats.append(row_max + ops.log(row_sum))
        saved.append((weights, 1.0 / ops.maximum(row_sum, 1.0)) if plan.save_weights else None)
    return _concatenated(outputs), stats, saved


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
    d_query = []
    # The running sums of the key and value gradients, one per key range of
    # the plan that a block has reached so far, in key order.
    d_keys, d_values = [], []
    done = None  # depends on every result of the previous block
    for block, lse, kept in zip(plan.blocks, stats, saved, strict=True):
        r0, r1, kv_end, _ = block
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
        d_q, dk, dv = _block_backward(plan, block, rows, columns, kept)
        d_query.append(d_q)
        for index, (k0, k1) in enumerate(plan.key_ranges):
            if k1 > kv_end:
                break
            _accumulate(d_keys, index, dk[..., k0:k1, :])
            _accumulate(d_values, index, dv[..., k0:k1, :])
        # The first key range sums every block so far (each sees key 0).
        # d_keys alone would let the block's d_q products wait behind the
        # next block, holding its tiles: TensorFlow's executor did that with
        # one inter-op thread.
        done = d_keys[0][..., :1, :1] + d_values[0][..., :1, :1] + d_q[..., :1, :1]
    return _concatenated(d_query), _joined(d_keys, key), _joined(d_values, value)


def _accumulate(sums, index, x):
    """Adds `x` to the running sum `sums[index]`, or starts it (`index == len(sums)`)."""
    if index == len(sums):
        sums.append(x)
    else:
        sums[index] = sums[index] + x


def _joined(sums, like):
    """`_backward`'s sums per key range, joined and zero-padded to `like`'s keys."""
    if not sums:
        return ops.zeros_like(like)
    return _prepare.zero_pad(_concatenated(sums), -2, like.shape[-2])


def _concatenated(parts):
    """`parts` joined along axis -2 (rows or keys); one part is returned as is."""
    return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-2)


def _block_backward(plan, block, rows, columns, kept):
    """`(d_query rows, d_key rows, d_value rows)` of one block of query rows."""
    kv_end = block.kv_end
    q_block, d_out, delta, lse = rows
    key, key_1, value_1 = columns
    d_out_delta = ops.concatenate([d_out, -delta], axis=-1)
    if kept is None:
        # Masked entries get -1e30 after the shift, so exp gives 0 even in a
        # row with no visible key.
        q_lse = ops.concatenate([q_block, -lse], axis=-1)
        weights = ops.exp(_tile_scores(plan, q_lse, key_1, block)[0])
    else:
        # Saved weights are unnormalised; 1 / row_sum goes on the small
        # (rows, dim) factors instead of the (rows, keys) tile.
        weights, inv_sum = kept
        d_out = d_out * inv_sum
        d_out_delta = d_out_delta * inv_sum
    d_weights = ops.matmul(d_out_delta, ops.swapaxes(value_1[..., :kv_end, :], -1, -2))
    d_scores = weights * d_weights
    d_q = ops.matmul(d_scores, key[..., :kv_end, :])
    return (
        d_q,
        _transposed_product(plan, d_scores, q_block),
        _transposed_product(plan, weights, d_out),
    )


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
