"""The fused path: `keras.ops.dot_product_attention`, the backend's own kernel.

PyTorch's scaled_dot_product_attention, `jax.nn.dot_product_attention`
(cuDNN's flash kernel on a GPU), an einsum on TensorFlow. The op takes
`(batch, T, heads, dim)`; every batch dim is flattened into `batch` with
one head.
"""

from keras import ops

from luong_attention import _masks


def fused_attention(*, query, key, value, mask=None, causal_offset=None, equal_depths=False):
    """Attention of `query` (scale already folded in) over `key`/`value`.

    Args:
        query: `(batch..., Tq, dim)`, batch dims equal to those of key/value.
        key: `(batch..., Tv, dim)`.
        value: `(batch..., Tv, dim_v)`.
        mask: boolean, broadcastable to `(batch..., Tq, Tv)`, or None.
        causal_offset: None, or row i sees only keys `j <= i + causal_offset`.
        equal_depths: pad query, key and value to one depth, for a backend
            whose op needs `dim == dim_v` (zero columns change nothing).

    Returns:
        `(batch..., Tq, dim_v)` in the dtype of `value`; rows with no visible
        key are zero (the op would give them a uniform average).
    """
    batch_shape = ops.shape(query)[:-2]
    q_len, kv_len = ops.shape(query)[-2], ops.shape(key)[-2]
    value_dim = value.shape[-1]
    # A plain top-left causal mask goes to the op as is_causal (PyTorch's
    # causal-aware kernels); anything else becomes one boolean mask.
    is_causal = causal_offset is not None and mask is None and _is_zero(causal_offset)
    row_valid = None
    if causal_offset is not None and not is_causal:
        mask = _masks.conjoin(mask, _masks.causal_mask(q_len, kv_len, causal_offset))
    if mask is not None:
        rows = ops.shape(mask)[-2]
        mask = ops.broadcast_to(mask, (*batch_shape, rows, kv_len))
        row_valid = ops.any(mask, axis=-1, keepdims=True)
        mask = ops.reshape(mask, (-1, 1, rows, kv_len))
    if equal_depths:
        query, key, value = _pad_depths(query, key, value)
    output = ops.dot_product_attention(
        _heads_layout(query),
        _heads_layout(key),
        _heads_layout(value),
        mask=mask,
        scale=1.0,
        is_causal=is_causal,
    )
    output = ops.reshape(output, (*batch_shape, q_len, ops.shape(value)[-1]))[..., :value_dim]
    if row_valid is not None:
        output = output * ops.cast(row_valid, output.dtype)
    return output


def _is_zero(offset):
    return isinstance(offset, int) and offset == 0


def _heads_layout(x):
    """`(batch..., T, dim)` -> `(N, T, 1, dim)`, the layout of the op."""
    shape = ops.shape(x)
    return ops.reshape(x, (-1, shape[-2], 1, shape[-1]))


def _pad_depths(query, key, value):
    pad = value.shape[-1] - query.shape[-1]
    if pad == 0:
        return query, key, value

    def widen(x, n):
        return ops.pad(x, [(0, 0)] * (len(x.shape) - 1) + [(0, n)]) if n > 0 else x

    return widen(query, pad), widen(key, pad), widen(value, -pad)
