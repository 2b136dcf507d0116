"""The reference path: the `(Tq, Tv)` scores, a masked softmax, the weighted sum.

It supports every option (the concat score, dropout, returning the weights)
and is the one the other paths are checked against.
"""

import keras
from keras import ops

from luong_attention import _masks

# Finite stand-in for -inf on masked scores (kept in float32). A finite value
# keeps `exp` and its gradient free of inf - inf = NaN.
MASKED_SCORE = -1e30


def attention_scores(query, key, *, score_mode="dot", scale=None, concat_score_weight=None):
    """Unnormalised scores `(batch..., Tq, Tv)`.

    - `"dot"` (and `"general"`, whose `W_a` is already folded into `query`):
      `scale * query . key`, Luong's score.
    - `"concat"`: `w * sum(tanh(scale * (query + key)))`, the score of
      `keras.layers.Attention(score_mode="concat")`.
    """
    if score_mode == "concat":
        summed = ops.expand_dims(query, axis=-2) + ops.expand_dims(key, axis=-3)
        if scale is not None:
            summed = scale * summed
        scores = ops.sum(ops.tanh(summed), axis=-1)
        return scores if concat_score_weight is None else concat_score_weight * scores
    scores = ops.matmul(query, ops.swapaxes(key, -2, -1))
    return scores if scale is None else scores * scale


def masked_softmax(
    scores,
    mask=None,
    zero_empty_rows=True,
    causal_offset=None,
    mask_as_bias=False,
    join_masks=False,
):
    """Softmax over the last axis in float32; rows with no key give zeros.

    Masked positions get exactly zero weight (no large-negative bias that
    overflows in float16), and with `zero_empty_rows` a row where every key
    is masked gets all-zero weights instead of a uniform average or NaN.
    Gradients stay finite.

    `mask` is a boolean mask broadcastable to the scores or None, and
    `causal_offset` that of `_masks.causal_mask` (None: not causal). A mask
    narrower than the scores (the causal `(Tq, Tv)`;
    with `mask_as_bias`, a key mask `(batch..., 1, Tv)`) becomes an additive
    bias of its own size: adding it costs a fraction of a select over the
    scores on PyTorch's CPU kernels, and its gradient is the identity. A bias
    hides only finite scores below 1e29 in magnitude, so `mask_as_bias` says
    the caller zeroed the keys `mask` hides; any other mask replaces the
    scores it hides (a NaN there stays out). With `join_masks` a causal and
    a key mask are ANDed into one mask that replaces the scores it hides.
    """
    dtype = keras.backend.standardize_dtype(scores.dtype)
    if dtype not in ("float32", "float64"):
        dtype = "float32"
        scores = ops.cast(scores, dtype)
    if 0 in scores.shape:
        # An empty batch, Tq = 0 or Tv = 0: nothing to normalise (and max
        # has no identity).
        return ops.zeros_like(scores)
    if mask is None and causal_offset is None:
        return ops.softmax(scores, axis=-1)
    q_len, kv_len = ops.shape(scores)[-2], ops.shape(scores)[-1]
    causal = None
    if causal_offset is not None:
        causal = _masks.causal_mask(q_len, kv_len, causal_offset)
    parts = (mask, causal)
    if join_masks and mask is not None and causal is not None:
        parts = (_masks.conjoin(mask, causal),)
    for part in parts:
        if part is None:
            continue
        if (part is causal or mask_as_bias) and _narrower_than(part, scores):
            # Each bias is added on its own: a sum of two narrow biases would
            # broadcast both ways, a slow case for TensorFlow's kernels.
            bias = ops.where(part, 0.0, MASKED_SCORE)
            scores = scores + (bias if dtype == "float32" else ops.cast(bias, dtype))
        else:
            # Masked scores become MASKED_SCORE, whose exp underflows to
            # exactly 0 after softmax subtracts the row max.
            scores = ops.where(part, scores, MASKED_SCORE)
    # A row with no visible key holds only masked scores: it comes out an
    # average over them, and is zeroed (weights and gradient).
    weights = ops.softmax(scores, axis=-1)
    if not zero_empty_rows:
        return weights
    keep = _masks.rows_with_a_key(mask, q_len, kv_len, causal_offset)
    return weights if keep is None else weights * ops.cast(keep, weights.dtype)


def _narrower_than(mask, scores):
    """Whether `mask` broadcasts over the query rows or the batch of `scores`."""
    return len(mask.shape) < len(scores.shape) or mask.shape[-2] == 1


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
    zero_empty_rows=True,
    mask_as_bias=False,
    join_masks=False,
):
    """Attention of `query` over `key`/`value`; returns `(output, weights)`.

    Args:
        query: `(batch..., Tq, dim)`, in the dtype of the scores.
        key: `(batch..., Tv, dim)`, same dtype.
        value: `(batch..., Tv, dim_v)`; the output and weights take its dtype.
        mask: boolean, broadcastable to `(batch..., Tq, Tv)`, or None.
        causal_offset: None, or row i sees only keys `j <= i + causal_offset`.
        score_mode, scale, concat_score_weight: see `attention_scores`.
        dropout: rate of dropout on the weights (0 for none).
        seed: the dropout's seed or `keras.random.SeedGenerator`.
        zero_empty_rows: give a row with no visible key zero weights. The
            caller may pass False when the weights are not returned and it
            zeroes such rows of the output itself (or they can only come from
            masked keys whose values it zeroed): one pass over the
            `(Tq, Tv)` weights is saved.
        mask_as_bias: the keys `mask` hides were zeroed (see `masked_softmax`).
        join_masks: see `masked_softmax`.
    """
    scores = attention_scores(
        query, key, score_mode=score_mode, scale=scale, concat_score_weight=concat_score_weight
    )
    weights = masked_softmax(scores, mask, zero_empty_rows, causal_offset, mask_as_bias, join_masks)
    if keras.backend.standardize_dtype(weights.dtype) != keras.backend.standardize_dtype(
        value.dtype
    ):
        weights = ops.cast(weights, value.dtype)
    if dropout > 0:
        weights = keras.random.dropout(weights, dropout, seed=seed)
    return ops.matmul(weights, value), weights
