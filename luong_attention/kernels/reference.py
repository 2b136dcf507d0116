"""The reference path: the `(Tq, Tv)` scores, a masked softmax, the weighted sum.

It supports every option (the concat score, dropout, returning the weights)
and is the one the other paths are checked against.
"""

from typing import NamedTuple

import keras
from keras import ops

from luong_attention import _masks, _prepare
from luong_attention._validation import dtype_name

# Finite stand-in for -inf on masked scores (kept in float32). A finite value
# keeps `exp` and its gradient free of inf - inf = NaN.
MASKED_SCORE = -1e30
# The score of a key the causal mask hides: below MASKED_SCORE, so that a row
# whose causally visible keys are all masked (zeroed) keys weighs those alone
# and averages zeros, never the unzeroed keys after it.
CAUSAL_SCORE = 2 * MASKED_SCORE


def concat_scores(query, key, *, scale=None, weight=None):
    """The `"concat"` scores `(batch..., Tq, Tv)` of `keras.layers.Attention(score_mode="concat")`:
    `weight * sum(tanh(scale * (query + key)))`."""
    summed = ops.expand_dims(query, axis=-2) + ops.expand_dims(key, axis=-3)
    if scale is not None:
        summed = scale * summed
    scores = ops.sum(ops.tanh(summed), axis=-1)
    return scores if weight is None else weight * scores


def masked_softmax(scores, mask=None, causal_bias=None, key_weights=None):
    """Softmax over the last axis in float32, masked positions exactly zero.

    No large-negative bias in the input dtype (which overflows in float16):
    masked scores become `MASKED_SCORE` in float32, and those the causal mask
    hides `CAUSAL_SCORE`. A row where every key is masked comes out an
    average over the masked keys with the higher fill (those the causal
    mask leaves, if any); the caller zeroes it (`_masks.rows_with_a_key`,
    or the weights times `key_weights` below) unless those keys' values are
    zeros. Gradients stay finite.

    A mask comes in one of two forms (a call may use both):

    - `mask` (a key or attention mask), boolean, broadcastable to the
      scores: the scores it hides are replaced with `MASKED_SCORE`, so a
      NaN there stays out.
    - Biases added to the scores in their own (narrow) shapes, cheaper than
      a select over the scores on PyTorch's CPU kernels, with the identity
      as gradient: `causal_bias`, the causal mask as a float32 bias
      (`_masks.causal_fill` with `seen=0.0` and `hidden=CAUSAL_SCORE`), and
      `key_weights`, a key mask `(batch..., 1, Tv)` as 1.0 (seen) and 0.0
      (hidden) in the softmax's dtype (`softmax_dtype`). A bias hides only
      finite scores below 1e29 in magnitude, so `key_weights` is for a
      caller that zeroed the keys it hides, or lets a NaN or inf among them
      reach the row (as Keras's layer does).
    """
    dtype = softmax_dtype(scores.dtype)
    scores = _prepare.cast(scores, dtype)
    if 0 in scores.shape:
        # An empty batch, Tq = 0 or Tv = 0: nothing to normalise (and max
        # has no identity).
        return ops.zeros_like(scores)
    return _softmax(scores, dtype, mask, causal_bias, key_weights)


def _softmax(scores, dtype, mask, causal_bias, key_weights):
    """`masked_softmax` of scores with no zero dim, already in its `dtype`."""
    if key_weights is not None:
        # 0 where seen, MASKED_SCORE where hidden. Added on its own, not
        # summed with the causal bias first: a sum of two narrow biases
        # would broadcast both ways, a slow case for TensorFlow's kernels.
        scores = scores + (key_weights - 1.0) * -MASKED_SCORE
    if mask is not None:
        # Masked scores become the fill, whose exp underflows to exactly
        # 0 after softmax subtracts the row max.
        scores = ops.where(mask, scores, MASKED_SCORE)
    if causal_bias is not None:
        scores = scores + _prepare.cast(causal_bias, dtype)
    return ops.softmax(scores, axis=-1)


def softmax_dtype(dtype):
    """The dtype `masked_softmax` computes in for scores of `dtype`: float32, or float64."""
    return "float64" if dtype_name(dtype) == "float64" else "float32"


class Plan(NamedTuple):
    """What `reference_attention` decides from shapes, dtypes and options alone.

    Eager calls with the same signature reuse one plan (`plan`), so a call
    on short sequences runs its tensor ops and little else.
    """

    softmax_dtype: str  # `softmax_dtype` of the scores
    cast_scores: bool  # the scores (in the query's dtype) are cast to it
    value_dtype: str  # the weights' dtype for the weighted sum
    mask_as_bias: bool  # the mask goes on the scores as `key_weights`
    empty_rows: str | None  # resolved: None, "weights" or "output"
    no_scores: bool  # the scores have a zero dim (empty batch, Tq or Tv)


def plan(query, key, value, mask=None, *, empty_rows="weights", mask_as_bias=False):
    """The `Plan` of `reference_attention` for tensors of these shapes and dtypes.

    Reads only the shapes and dtypes of its arguments (and `mask`'s rank):
    see `reference_attention` for them and the options.
    """
    rank = max(len(query.shape), len(key.shape))  # the scores'
    no_scores = 0 in query.shape[:-1] or 0 in key.shape[:-1]
    score_dtype = softmax_dtype(query.dtype)
    as_bias = (
        mask is not None
        and mask_as_bias
        and (len(mask.shape) < rank or mask.shape[-2] == 1)  # a key mask
    )
    if no_scores:
        empty_rows = None
    keys, value_dim = key.shape[-2], value.shape[-1]
    if empty_rows == "output" and None not in (keys, value_dim) and keys <= value_dim:
        empty_rows = "weights"  # the weights are the smaller tensor
    return Plan(
        score_dtype,
        dtype_name(query.dtype) != score_dtype,
        dtype_name(value.dtype),
        as_bias,
        empty_rows,
        no_scores,
    )


def reference_attention(
    *,
    query,
    key,
    value,
    mask=None,
    causal_offset=None,
    score_mode="dot",
    scale=None,
    concat_score_weight=None,
    dropout=0.0,
    seed=None,
    empty_rows="weights",
    mask_as_bias=False,
    keep_constants=False,
    planned=None,
):
    """Attention of `query` over `key`/`value`; returns `(output, weights)`.

    Args:
        query: `(batch..., Tq, dim)`, in the dtype of the scores.
        key: `(batch..., Tv, dim)`, same dtype.
        value: `(batch..., Tv, dim_v)`; the output and weights take its dtype.
        mask: boolean, broadcastable to `(batch..., Tq, Tv)`, or None.
        causal_offset: None, or row i sees only keys `j <= i + causal_offset`.
        score_mode: `"dot"` (Luong's `scale * query . key`; the "general"
            score has `W_a` folded into `query`) or `"concat"`
            (`concat_scores`).
        scale: optional scalar multiplying the scores.
        concat_score_weight: the weight of the `"concat"` score.
        dropout: rate of dropout on the weights (0 for none).
        seed: the dropout's seed or `keras.random.SeedGenerator`.
        empty_rows: where a row with no visible key is zeroed: `"weights"`
            (and so the output), `"output"` (for callers that do not return
            the weights: the output or the weights, whichever is smaller), or
            None when the caller knows such a row averages zeroed values
            (every key `mask` hides is zeroed, and every row sees key 0
            under the causal mask: see `CAUSAL_SCORE`).
        mask_as_bias: add `mask`, where it is a key mask (one row, or fewer
            dims than the scores), to the scores as a bias: `masked_softmax`'s
            `key_weights`, with its conditions.
        keep_constants: keep the causal bias of a short sequence as a tensor
            for later calls (`_masks.causal_fill`'s `keep`).
        planned: the `plan` of these arguments' shapes, dtypes, `empty_rows`
            and `mask_as_bias`, from an earlier call with the same ones;
            made here when None.
    """
    if planned is None:
        planned = plan(query, key, value, mask, empty_rows=empty_rows, mask_as_bias=mask_as_bias)
    dtype = planned.softmax_dtype
    if score_mode == "concat":
        scores = concat_scores(query, key, scale=scale, weight=concat_score_weight)
    else:
        # Luong's dot score (and the "general" one, whose `W_a` is already
        # folded into `query`). The `@` operator is the backend's matmul
        # without `keras.ops`'s Python layer, which eager PyTorch pays on
        # every call (short sequences are mostly that); the inputs already
        # share one floating dtype.
        scores = query @ ops.swapaxes(key, -2, -1)
        if scale is not None:
            scores = scores * scale
    q_len = kv_len = None  # read only under a causal mask: `ops.shape` costs eager calls
    if causal_offset is not None:
        q_len, kv_len = ops.shape(scores)[-2], ops.shape(scores)[-1]
    key_weights = None
    if planned.mask_as_bias:
        # One cast of the narrow key mask serves as the bias and as the
        # count of each row's keys.
        key_weights, mask = ops.cast(mask, dtype), None
    empty_rows = planned.empty_rows
    keep = None
    if (
        empty_rows == "weights"
        and key_weights is not None
        and (causal_offset is None or _masks.sees_first_key(causal_offset))
    ):
        # The key weights themselves zero the rows without a key, with no
        # reduction over them: such a row weighs only keys they hide (every
        # row sees key 0 under the causal mask, so not the ones it hides),
        # and in any other row those keys' weights are exactly 0 already.
        keep = key_weights
    elif empty_rows is not None:
        keep = _masks.rows_with_a_key(
            mask if key_weights is None else key_weights,
            causal_offset,
            q_len=q_len,
            kv_len=kv_len,
        )
    causal_bias = None
    if causal_offset is not None:
        # The causal mask as a bias: for short sequences a constant, one op
        # per call, not a cast and two operators on the boolean mask.
        causal_bias = _masks.causal_fill(
            q_len, kv_len, causal_offset, seen=0.0, hidden=CAUSAL_SCORE, keep=keep_constants
        )
    if planned.no_scores:
        weights = masked_softmax(scores)  # zeros, in the softmax's dtype
    else:
        if planned.cast_scores:
            scores = ops.cast(scores, dtype)
        weights = _softmax(scores, dtype, mask, causal_bias, key_weights)
    if keep is not None and empty_rows == "weights":
        weights = weights * (keep if key_weights is not None else ops.cast(keep, dtype))
    if planned.value_dtype != dtype:
        weights = ops.cast(weights, planned.value_dtype)
    if dropout > 0:
        weights = keras.random.dropout(weights, dropout, seed=seed)
    output = weights @ value
    if keep is not None and empty_rows == "output":
        if key_weights is not None:
            keep = keep > 0
        output = ops.where(keep, output, 0.0)
    return output, weights
