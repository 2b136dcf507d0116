"""Input preparation, done once per call before any kernel runs.

- Batch dims: inputs of lower rank get leading size-1 dims; for the paths
  that flatten the batch (fused, blocked) size-1 dims are broadcast out.
- Masks: every key-side mask ANDed into one boolean mask; with
  `nan_safe_padding`, keys and values that no query may see are zeroed, so
  a NaN or inf in padding never reaches the output.
- Precision: the dtypes each path computes in (scores and softmax in
  float32 under float16/bfloat16).
- Scores: `W_a` (the "general" score) folded into the query, and for the
  fused and blocked paths the scale too.
"""

from typing import Any, NamedTuple

from keras import ops

from luong_attention import _masks
from luong_attention._validation import LOW_PRECISION, dtype_name, static_dims


class Masks(NamedTuple):
    """The masks of one call, as given (any may be None)."""

    query: Any = None
    value: Any = None
    key: Any = None
    attention: Any = None


class Prepared(NamedTuple):
    """What a kernel needs: tensors in their working dtype and one key-side mask."""

    query: Any
    key: Any
    value: Any
    mask: Any  # boolean, broadcastable to (batch..., Tq, Tv); no causal part
    causal_offset: Any  # None when not causal; else key j is seen by row i iff j <= i + offset
    query_keep: Any  # boolean (batch..., Tq, 1), or None: output rows to keep


def working_dtypes(path, dtype, *, fused_float32):
    """`(score dtype, value dtype)` a path computes in for inputs of `dtype`.

    The reference path takes scores and softmax in float32 under low
    precision and multiplies the values in their own dtype; the blocked path
    does everything in float32; the fused path hands the backend kernel its
    own dtype (its softmax accumulates in float32) unless `fused_float32`.
    """
    if dtype not in LOW_PRECISION:
        return dtype, dtype
    if path == "reference":
        return "float32", dtype
    if path == "blocked" or fused_float32:
        return "float32", "float32"
    return dtype, dtype


class Layout(NamedTuple):
    """What `prepare` does to the inputs of one call signature (see `layout`)."""

    batch_shape: tuple  # the static shape the inputs' batch dims broadcast to
    flat_batch: bool  # the path needs every input at that full batch shape
    zero_masked: bool  # zero the keys and values that the value and key masks hide
    plain: bool  # nothing to reshape, convert or zero: the key-side mask is the value mask's


def layout(query, value, key, masks, *, batch_shape, flat_batch, zero_masked):
    """The `Layout` of a call, from static shapes and dtypes only.

    A call is plain when its inputs have every batch dim, the path needs no
    broadcast, and its only mask is a boolean value mask `(batch..., Tv)`:
    what `prepare` does then comes down to one index op.
    """
    rank = len(batch_shape) + 2
    shapes = [static_dims(t.shape) for t in (query, value, key)]
    mask = masks.value
    plain = (
        not zero_masked
        and masks.query is None
        and masks.key is None
        and masks.attention is None
        and all(len(s) == rank for s in shapes)
        and (not flat_batch or _has_full_batch([s[:-2] for s in shapes], batch_shape))
        and (
            mask is None
            or (
                ops.is_tensor(mask)
                and dtype_name(mask.dtype) == "bool"
                and len(mask.shape) == rank - 1
            )
        )
    )
    return Layout(tuple(batch_shape), flat_batch, zero_masked, plain)


def prepare(query, value, key, masks, layout, *, causal_offset):
    """Returns the `Prepared` tensors of a call whose `Layout` is `layout`.

    `masks` have a dtype and shape each, checked against the inputs.
    """
    if layout.plain:
        return Prepared(query, key, value, plain_mask(masks.value), causal_offset, None)
    batch_shape = layout.batch_shape
    batch_rank = len(batch_shape)
    ranks = (len(query.shape), len(value.shape), len(key.shape))
    if ranks != (batch_rank + 2,) * 3:
        query, value, key = (with_batch_rank(t, batch_rank) for t in (query, value, key))
    if layout.flat_batch:
        query, value, key = _broadcast_batch(query, value, key, batch_shape)
    key_mask = None  # the value and key masks ANDed, (batch..., Tv)
    for mask, rank in ((masks.value, ranks[1]), (masks.key, ranks[2])):
        if mask is not None:
            key_mask = _masks.conjoin(key_mask, _masks.sequence_mask(mask, rank, batch_rank))
    if key_mask is not None and layout.zero_masked:
        keep = key_mask[..., None]
        key_is_value = key is value
        value = ops.where(keep, value, 0.0)
        # Keys too: a select over the scores alone would keep a NaN key out
        # of the output but not out of the query's gradient (0 * NaN).
        key = value if key_is_value else ops.where(keep, key, 0.0)
    query_keep = None
    if masks.query is not None:
        query_keep = _masks.sequence_mask(masks.query, ranks[0], batch_rank)[..., None]
    return Prepared(
        query=query,
        key=key,
        value=value,
        mask=_masks.key_side_mask(key_mask, masks.attention),
        causal_offset=causal_offset,
        query_keep=query_keep,
    )


def plain_mask(value_mask):
    """The key-side mask of a call whose layout is plain: its value mask, if any, as one row."""
    return None if value_mask is None else value_mask[..., None, :]


def cast_for_path(prepared, score_dtype, value_dtype):
    """`prepared` with query and key in `score_dtype`, value in `value_dtype`."""
    return prepared._replace(
        query=cast(prepared.query, score_dtype),
        key=cast(prepared.key, score_dtype),
        value=cast(prepared.value, value_dtype),
    )


def fold_query(query, *, general_score_weight=None, scale=None):
    """`query . W_a`, times `scale`: the scores become `folded_query . key`."""
    if general_score_weight is not None:
        query = ops.matmul(query, cast_like(general_score_weight, query))
    if scale is not None:
        query = query * cast_like(scale, query)
    return query


def cast(x, dtype):
    """`x` in `dtype`: no op when it is None, a Python number or already in `dtype`."""
    return ops.cast(x, dtype) if needs_cast(x, dtype) else x


def needs_cast(x, dtype):
    """Whether `cast(x, dtype)` casts: `x` is a tensor not in `dtype`."""
    return not (x is None or isinstance(x, (int, float)) or dtype_name(x.dtype) == dtype)


def zero_pad(x, axis, length):
    """`x` zero-padded at the end of `axis` up to `length` (no op when it has that many)."""
    missing = length - x.shape[axis]
    if not missing:
        return x
    pad = [(0, 0)] * len(x.shape)
    pad[axis] = (0, missing)
    return ops.pad(x, pad)


def with_batch_rank(x, batch_rank):
    """`x` with leading size-1 dims up to `batch_rank` batch dims (its last two are kept)."""
    for _ in range(batch_rank + 2 - len(x.shape)):
        x = ops.expand_dims(x, 0)
    return x


def _broadcast_batch(query, value, key, batch_shape):
    """The three inputs with batch dims broadcast to one shape (size-1 dims expanded)."""
    tensors = (query, value, key)
    statics = [static_dims(t.shape)[:-2] for t in tensors]
    if _has_full_batch(statics, batch_shape):
        return tensors
    target = []
    for i, dim in enumerate(batch_shape):
        if dim is None:
            # Unknown here: take it from an input where it is not 1.
            source = next(t for t, s in zip(tensors, statics, strict=True) if s[i] != 1)
            dim = ops.shape(source)[i]
        target.append(dim)
    out = []
    for t, s in zip(tensors, statics, strict=True):
        if any(d == 1 and b != 1 for d, b in zip(s, batch_shape, strict=True)):
            t = ops.broadcast_to(t, (*target, *ops.shape(t)[-2:]))
        out.append(t)
    return tuple(out)


def _has_full_batch(statics, batch_shape):
    """Whether inputs with these static batch dims need no broadcast to `batch_shape`."""
    return None not in batch_shape and all(s == tuple(batch_shape) for s in statics)


def cast_like(x, reference):
    """A scalar weight `x` (tensor, float or None) in the dtype of `reference`."""
    return cast(x, dtype_name(reference.dtype))
