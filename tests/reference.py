"""A NumPy reference of the attention contract, independent of the package."""

import numpy as np


def _expand(mask, batch_rank):
    mask = np.asarray(mask).astype(bool)
    while mask.ndim < batch_rank + 1:
        mask = np.expand_dims(mask, -2)
    return mask


def reference_attention(
    query,
    value,
    key=None,
    query_mask=None,
    value_mask=None,
    key_mask=None,
    attention_mask=None,
    causal=False,
    causal_alignment="top_left",
    score_mode="dot",
    scale=None,
    concat_score_weight=1.0,
    general_score_weight=None,
):
    """Returns (output, weights) in float64; fully-masked rows give zeros."""
    q = np.asarray(query, np.float64)
    v = np.asarray(value, np.float64)
    k = v if key is None else np.asarray(key, np.float64)
    batch_rank = q.ndim - 2
    tq, tv = q.shape[-2], k.shape[-2]
    if score_mode == "concat":
        summed = q[..., :, None, :] + k[..., None, :, :]
        if scale is not None:
            summed = scale * summed
        scores = concat_score_weight * np.tanh(summed).sum(-1)
    else:
        if score_mode == "general":
            q = q @ np.asarray(general_score_weight, np.float64)
        scores = q @ np.swapaxes(k, -1, -2)
        if scale is not None:
            scores = scores * scale
    mask = np.ones(scores.shape, bool)
    for m in (value_mask, key_mask):
        if m is not None:
            mask &= _expand(m, batch_rank)[..., None, :]
    if attention_mask is not None:
        mask &= np.asarray(attention_mask).astype(bool)
    if causal:
        offset = tv - tq if causal_alignment == "bottom_right" else 0
        mask &= np.tril(np.ones((tq, tv), bool), k=offset)
    masked = np.where(mask, scores, -np.inf)
    row_max = masked.max(-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    e = np.where(mask, np.exp(masked - row_max), 0.0)
    total = e.sum(-1, keepdims=True)
    weights = e / np.where(total > 0, total, 1.0)
    out = weights @ v
    if query_mask is not None:
        out = out * _expand(query_mask, batch_rank)[..., None]
    return out, weights
