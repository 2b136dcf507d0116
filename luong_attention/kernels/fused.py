"""The fused path: `keras.ops.dot_product_attention`, the backend's own kernel.

PyTorch's scaled_dot_product_attention, `jax.nn.dot_product_attention`
(cuDNN's flash kernel on a GPU), an einsum on TensorFlow. The op takes
`(batch, T, heads, dim)`: a `(batch, T, dim)` input gets one head, a
`(batch, heads, T, dim)` input is transposed or flattened into `batch`
(see `transpose_heads`), and any other batch dims are flattened into
`batch` with one head.
"""

from keras import ops

from luong_attention import _masks, _prepare


def fused_attention(
    *,
    query,
    key,
    value,
    mask=None,
    causal_offset=None,
    equal_depths=False,
    transpose_heads=False,
    full_mask=False,
):
    """Attention of `query` (scale already folded in) over `key`/`value`.

    Args:
        query: `(batch..., Tq, dim)`, batch dims equal to those of key/value.
        key: `(batch..., Tv, dim)`.
        value: `(batch..., Tv, dim_v)`.
        mask: boolean, broadcastable to `(batch..., Tq, Tv)`, or None.
        causal_offset: None, or row i sees only keys `j <= i + causal_offset`.
        equal_depths: pad query, key and value to one depth, for a backend
            whose op needs `dim == dim_v` (zero columns change nothing).
        transpose_heads: hand a `(batch, heads, T, dim)` input to the op as
            its `(batch, T, heads, dim)` transpose rather than flattened to
            `(batch * heads, T, 1, dim)` (the same memory either way where
            the op transposes back; a reshape costs eager PyTorch several
            times a transpose in Python).
        full_mask: hand the op a mask with a row per query, `(batch, heads
            or 1, Tq, Tv)`, never one broadcast over the rows (cuDNN takes
            a mask only as a dense bias of that shape). A `(batch, heads,
            T, dim)` input then goes transposed, so that a mask shared by
            the heads stays `(batch, 1, Tq, Tv)`.

    Returns:
        `(batch..., Tq, dim_v)` in the dtype of `value`; rows with no visible
        key are zero (the op would give them a uniform average).
    """
    q_len, kv_len = ops.shape(query)[-2], ops.shape(key)[-2]
    value_dim = value.shape[-1]
    # A plain top-left causal mask goes to the op as is_causal (PyTorch's
    # causal-aware kernels); anything else becomes one boolean mask.
    is_causal = causal_offset is not None and mask is None and _is_zero(causal_offset)
    if causal_offset is not None and not is_causal:
        mask = _masks.conjoin(mask, _masks.causal_mask(q_len, kv_len, causal_offset))
    layout = _Layout(query, transpose_heads or (full_mask and mask is not None))
    row_valid = None
    if mask is not None:
        row_valid = ops.any(mask, axis=-1, keepdims=True)
        mask = layout.mask(mask)
        if full_mask:
            mask = ops.broadcast_to(mask, (*ops.shape(mask)[:2], q_len, kv_len))
    if equal_depths:
        query, key, value = _pad_depths(query, key, value)
    output = ops.dot_product_attention(
        layout.to_op(query),
        layout.to_op(key),
        layout.to_op(value),
        mask=mask,
        scale=1.0,
        is_causal=is_causal,
    )
    output = layout.from_op(output, q_len)
    if output.shape[-1] != value_dim:
        output = output[..., :value_dim]
    if row_valid is not None:
        output = output * ops.cast(row_valid, output.dtype)
    return output


class _Layout:
    """Between the call's `(batch..., T, dim)` and the op's `(batch, T, heads, dim)`."""

    def __init__(self, query, transpose_heads):
        self.rank = len(query.shape)
        self.batch_shape = ops.shape(query)[:-2]
        if self.rank == 3:
            self.kind = "one_head"
        elif self.rank == 4 and transpose_heads:
            self.kind = "transpose"
        else:
            self.kind = "flatten"

    def to_op(self, x):
        if self.kind == "one_head":
            return ops.expand_dims(x, 2)
        if self.kind == "transpose":
            return ops.transpose(x, (0, 2, 1, 3))
        shape = ops.shape(x)
        return ops.reshape(x, (-1, shape[-2], 1, shape[-1]))

    def from_op(self, output, q_len):
        if self.kind == "one_head":
            return ops.squeeze(output, 2)
        if self.kind == "transpose":
            return ops.transpose(output, (0, 2, 1, 3))
        return ops.reshape(output, (*self.batch_shape, q_len, ops.shape(output)[-1]))

    def mask(self, mask):
        """A mask broadcastable to `(batch..., Tq, Tv)`, as the op's `(batch, heads, Tq, Tv)`."""
        if self.kind == "flatten":
            rows, kv_len = ops.shape(mask)[-2:]
            mask = ops.broadcast_to(mask, (*self.batch_shape, rows, kv_len))
            return ops.reshape(mask, (-1, 1, rows, kv_len))
        mask = _prepare.with_batch_rank(mask, self.rank - 2)
        # (batch, heads, Tq, Tv) already; (batch, Tq, Tv) gets its one head.
        return ops.expand_dims(mask, 1) if self.kind == "one_head" else mask


def _is_zero(offset):
    return isinstance(offset, int) and offset == 0


def _pad_depths(query, key, value):
    # The narrower side gets zero columns, which add nothing to a score or
    # output (`zero_pad` leaves a tensor of that depth as it is).
    depth = max(query.shape[-1], value.shape[-1])
    return tuple(_prepare.zero_pad(x, -1, depth) for x in (query, key, value))
