"""Mask algebra: every mask as a boolean tensor that broadcasts against the scores.

Scores have shape `(batch..., Tq, Tv)`. A sequence mask `(batch..., T)` of
the keys becomes `(batch..., 1, Tv)`, one of the queries `(batch..., Tq, 1)`;
the causal mask is `(Tq, Tv)` and is built by `causal_mask` alone, for every
implementation path.
"""

import functools

import keras
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


def causal_fill(q_len, kv_len, offset, *, seen, hidden, keep=False):
    """`(Tq, Tv)` scores: `seen` where `causal_mask` is True, else `hidden`.

    `keep`: a NumPy constant (short sequences) is converted once and the
    tensor kept for later calls (see `_constant`), where the backend's
    traces take such a tensor as a constant.
    """
    bounds = (0, q_len, 0, kv_len, offset)
    if _is_constant(*bounds):
        if keep:
            return _constant(_causal_fill_array, *bounds, seen, hidden)
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


def _constant(make, *args):
    """The NumPy array `make(*args)` as a tensor of the backend.

    Converting an array costs an eager call several times what handing over
    a tensor does, so the first conversion that gives a concrete tensor
    (one made eagerly, not a symbol of a trace) is kept, and later calls
    hand that over, moved to the current device if it differs.
    """
    key = (keras.backend.backend(), make, args)
    tensor = _CONSTANTS.get(key)
    if tensor is not None:
        return ops.convert_to_tensor(tensor)
    tensor = ops.convert_to_tensor(make(*args))
    try:
        ops.convert_to_numpy(tensor)
    except Exception:  # a symbolic tensor of a trace: used by that trace alone
        return tensor
    if len(_CONSTANTS) >= _MAX_CONSTANTS:
        _CONSTANTS.clear()
    _CONSTANTS[key] = tensor
    return tensor


_CONSTANTS = {}
_MAX_CONSTANTS = 64


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


def rows_with_a_key(mask, causal_offset=None, *, q_len=None, kv_len=None):
    """Which query rows see at least one key, `(..., Tq or 1, 1)`.

    `mask` is a key-side mask as `key_side_mask` returns (or None), either
    boolean or, for a key mask `(batch..., 1, Tv)`, its floating-point
    weights (1.0 where a key is seen, 0.0 where hidden), in which case the
    rows come back as 1.0 and 0.0 in that dtype, ready to multiply.
    `causal_offset` is that of the causal mask (`causal_mask`), None without
    one; `q_len` and `kv_len` are the scores' last two dims, which a causal
    mask needs. Returns None when every row sees a key: under a causal mask
    alone with an offset >= 0, row i sees key 0.
    """
    weights = mask is not None and dtype_name(mask.dtype) != "bool"
    if causal_offset is None:
        if mask is None:
            return None
        if weights:
            return ops.max(mask, axis=-1, keepdims=True)
        return ops.any(mask, axis=-1, keepdims=True)
    if mask is None:
        if sees_first_key(causal_offset):
            return None
        return ops.any(causal_mask(q_len, kv_len, causal_offset), axis=-1, keepdims=True)
    if mask.shape[-2] == 1 and all(type(n) is int for n in (q_len, kv_len, causal_offset)):
        return _rows_with_a_key_before(mask, q_len, kv_len, causal_offset)
    causal = causal_mask(q_len, kv_len, causal_offset)
    if weights:
        return ops.max(mask * ops.cast(causal, mask.dtype), axis=-1, keepdims=True)
    return ops.any(ops.logical_and(mask, causal), axis=-1, keepdims=True)


def _rows_with_a_key_before(key_mask, q_len, kv_len, offset):
    """`rows_with_a_key` of a key mask `(batch..., 1, Tv)` and a causal mask
    with a static offset: row i sees a key iff one of keys `0..i + offset`
    is shown, a running count over the narrow key mask (not a reduction of
    its `(Tq, Tv)` AND with the causal mask) read at column `i + offset`."""
    # An integer count of a boolean mask; a float count of key weights is
    # exact (below 2**24 keys in float32).
    seen = ops.cumsum(key_mask, axis=-1)
    # Rows before the first key see none (count 0); rows past the last, all.
    start, stop = max(offset, 0), max(min(q_len + offset, kv_len), 0)
    parts = [seen if (start, stop) == (0, kv_len) else seen[..., start:stop]]
    if offset < 0:
        # From `seen`, not its static shape: the batch may be unknown when traced.
        parts.insert(0, ops.repeat(ops.zeros_like(seen[..., :1]), min(-offset, q_len), axis=-1))
    if q_len + offset > kv_len:
        extra = min(q_len + offset - kv_len, q_len)
        parts.append(ops.repeat(seen[..., -1:], extra, axis=-1))
    seen = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)
    # The count as 1.0 / 0.0 for key weights (the sign of a count), else as
    # a boolean (the operator, not `ops.greater`: no conversion of the 0 per
    # call).
    seen = ops.sign(seen) if dtype_name(key_mask.dtype) != "bool" else seen > 0
    return ops.swapaxes(seen, -1, -2)
