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


def masked_softmax(scores, mask=None, zero_empty_rows=True):
    """Softmax over the last axis in float32; rows with no key give zeros.

    Masked positions get exactly zero weight (no large-negative bias that
    overflows in float16), and with `zero_empty_rows` a row where every key
    is masked gets all-zero weights instead of a uniform average or NaN.
    Gradients stay finite.
    """
    if keras.backend.standardize_dtype(scores.dtype) not in ("float32", "float64"):
        scores = ops.cast(scores, "float32")
    if 0 in scores.shape:
        # An empty batch, Tq = 0 or Tv = 0: nothing to normalise (and max
        # has no identity).
        return ops.zeros_like(scores)
    if mask is None:
        return ops.softmax(scores, axis=-1)
    # Masked scores become MASKED_SCORE, whose exp underflows to exactly 0
    # after softmax subtracts the row max; a row with no visible key has only
    # MASKED_SCORE, comes out uniform, and is zeroed (weights and gradient).
    weights = ops.softmax(ops.where(mask, scores, MASKED_SCORE), axis=-1)
    if not zero_empty_rows:
        return weights
    return weights * ops.cast(ops.any(mask, axis=-1, keepdims=True), weights.dtype)


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
            caller may pass False when the weights are not returned and such
            a row can only come from masked keys whose values it zeroed:
            the row's output and gradients are then zero anyway, and one
            pass over the `(Tq, Tv)` weights is saved.
    """
    scores = attention_scores(
        query, key, score_mode=score_mode, scale=scale, concat_score_weight=concat_score_weight
    )
    if causal_offset is not None:
        q_len, kv_len = ops.shape(query)[-2], ops.shape(key)[-2]
        mask = _masks.conjoin(mask, _masks.causal_mask(q_len, kv_len, causal_offset))
    weights = masked_softmax(scores, mask, zero_empty_rows)
    if keras.backend.standardize_dtype(weights.dtype) != keras.backend.standardize_dtype(
        value.dtype
    ):
        weights = ops.cast(weights, value.dtype)
    if dropout > 0:
        weights = keras.random.dropout(weights, dropout, seed=seed)
    return ops.matmul(weights, value), weights
