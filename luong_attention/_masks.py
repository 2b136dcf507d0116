"""Mask algebra: every mask as a boolean tensor that broadcasts against the scores.

Scores have shape `(batch..., Tq, Tv)`. A sequence mask `(batch..., T)` of
the keys becomes `(batch..., 1, Tv)`, one of the queries `(batch..., Tq, 1)`;
the causal mask is `(Tq, Tv)` and is built by `causal_mask` alone, for every
implementation path.
"""

import functools

import numpy as np
from keras import ops

from luong_attention._validation import dtype_name

# Largest causal mask (in entries) built in NumPy and handed over as a
# constant: one conversion instead of the four ops that build it, which
# eager calls on short sequences pay per call; larger masks are built by
# ops on the device.
_CONSTANT_CAUSAL_ENTRIES = 1 << 16


def as_bool(mask):
    """`mask` as a boolean tensor; ints and floats count nonzero as True."""
    if not ops.is_tensor(mask):
        mask = ops.convert_to_tensor(mask)
    if dtype_name(mask.dtype) != "bool":
        mask = ops.not_equal(mask, 0)
    return mask


def sequence_mask(mask, input_rank, batch_rank):
    """A `(b..., T)` mask of an input of rank `input_rank`, as `batch_rank + 1` dims.

    A mask may leave out trailing batch dims of its input, such as
    `(batch_size, T)` for a `(batch_size, heads, T, dim)` input: size-1 axes
    go in before the time dim, so it broadcasts over heads. An input with
    fewer batch dims than the call's (NumPy broadcasting) gets leading
    size-1 axes.
    """
    mask = as_bool(mask)
    for _ in range(input_rank - 1 - len(mask.shape)):
        mask = ops.expand_dims(mask, axis=-2)
    for _ in range(batch_rank + 2 - input_rank):
        mask = ops.expand_dims(mask, axis=0)
    return mask


def causal_mask(q_len, kv_len, offset, rows=None, cols=None):
    """Boolean mask, True where query i may see key j: `j <= i + offset`.

    `offset` is 0 for top-left alignment and `Tv - Tq` for bottom-right.
    `rows` and `cols` are `(start, stop)` ranges of a tile (default: all),
    so the blocked path builds the same mask for each of its tiles.
    """
    r0, r1 = rows if rows is not None else (0, q_len)
    k0, k1 = cols if cols is not None else (0, kv_len)
    bounds = (r0, r1, k0, k1, offset)
    if _is_constant(*bounds):
        return ops.convert_to_tensor(_causal_array(*bounds))
    row_index = ops.arange(r0, r1, dtype="int32")[:, None] + offset
    col_index = ops.arange(k0, k1, dtype="int32")[None, :]
    return ops.less_equal(col_index, row_index)


def causal_fill(q_len, kv_len, offset, *, seen, hidden):
    """`(Tq, Tv)` scores: `seen` where `causal_mask` is True, else `hidden`."""
    bounds = (0, q_len, 0, kv_len, offset)
    if _is_constant(*bounds):
        return ops.convert_to_tensor(_causal_fill_array(*bounds, seen, hidden))
    return ops.where(causal_mask(q_len, kv_len, offset), seen, hidden)


def sees_first_key(offset):
    """Whether every query row sees key 0 under a causal mask with this offset.

    True for a static `offset >= 0` (top-left alignment, or bottom-right
    with `Tv >= Tq`); False when it may be negative or is only known at run
    time.
    """
    return isinstance(offset, int) and offset >= 0


def _is_constant(r0, r1, k0, k1, offset):
    """Whether the causal tile with these bounds is a NumPy constant (`_CONSTANT_CAUSAL_ENTRIES`)."""
    bounds = (r0, r1, k0, k1, offset)
    return all(type(n) is int for n in bounds) and (r1 - r0) * (k1 - k0) <= _CONSTANT_CAUSAL_ENTRIES


@functools.lru_cache(maxsize=64)
def _causal_fill_array(r0, r1, k0, k1, offset, seen, hidden):
    array = np.where(_causal_array(r0, r1, k0, k1, offset), seen, hidden).astype("float32")
    array.flags.writeable = False  # shared by every call with these bounds
    return array


@functools.lru_cache(maxsize=64)
def _causal_array(r0, r1, k0, k1, offset):
    array = np.arange(k0, k1)[None, :] <= np.arange(r0, r1)[:, None] + offset
    array.flags.writeable = False  # shared by every call with these bounds
    return array


def conjoin(*masks):
    """The logical AND of the masks that are not None (None if all are)."""
    result = None
    for mask in masks:
        if mask is not None:
            result = mask if result is None else ops.logical_and(result, mask)
    return result


def key_side_mask(key_mask, attention_mask):
    """One boolean `(batch..., Tq or 1, Tv)` mask of the keys each query may see.

    `key_mask` is the keys' `(batch..., Tv)` sequence mask (see
    `sequence_mask`; the value and key masks ANDed) or None; the causal
    part is left to each path (see `causal_mask`).
    """
    mask = None if key_mask is None else key_mask[..., None, :]
    if attention_mask is None:
        return mask
    return conjoin(mask, as_bool(attention_mask))


def rows_with_a_key(mask, causal=None, causal_offset=None):
    """Boolean `(..., Tq or 1, 1)`: which query rows see at least one key.

    `mask` is a key-side mask as `key_side_mask` returns and `causal` the
    `causal_mask` (either may be None); `causal_offset`, when given, is the
    causal mask's offset. Returns None when every row sees a key: under a
    causal mask alone with an offset >= 0, row i sees key 0.
    """
    if causal is None:
        return None if mask is None else ops.any(mask, axis=-1, keepdims=True)
    if mask is None:
        if sees_first_key(causal_offset):
            return None
        return ops.any(causal, axis=-1, keepdims=True)
    return ops.any(ops.logical_and(mask, causal), axis=-1, keepdims=True)
