"""The implementation paths besides the reference, and the "auto" choice.

- `"reference"` (in `functional.py`): materialises the `(Tq, Tv)` scores;
  supports everything, including the concat score, dropout and returning
  the attention weights.
- `"fused"`: `keras.ops.dot_product_attention`, the backend's own kernel
  (PyTorch's SDPA, `jax.nn.dot_product_attention`, an einsum on
  TensorFlow).
- `"blocked"`: `_blocked.blocked_attention`, a row-blocked kernel with a
  recomputing backward pass; `O(T)` memory, causal blocks skipped.

`unsupported_reason` is the one definition of what each path supports, and
`choose_implementation` the one place where "auto" picks a path.
"""

import keras
from keras import ops

FAST_IMPLEMENTATIONS = ("fused", "blocked")
_LOW_PRECISION = ("float16", "bfloat16")


def unsupported_reason(
    implementation,
    score_mode,
    dropout_active,
    return_attention_scores,
    static_lengths,
):
    """Why `implementation` cannot run these options, or `None` if it can."""
    if implementation == "reference":
        return None
    if score_mode == "concat":
        return "score_mode='concat' (it needs the full (Tq, Tv) tanh term)"
    if dropout_active:
        return "dropout in training (it drops individual attention weights)"
    if return_attention_scores:
        return "return_attention_scores=True (it never materialises the weights)"
    if implementation == "blocked" and not static_lengths:
        return "unknown (None) Tq or Tv at trace time (its blocks are static)"
    return None


def choose_implementation(
    score_mode,
    dropout_active,
    return_attention_scores,
    static_lengths,
    causal,
    causal_alignment,
    has_mask,
    low_precision,
):
    """The path "auto" takes.

    Measured with benchmarks/bench.py on 2 CPU cores, float32, D=64,
    causal, fwd+bwd, B=2, T=4096 (medians, ms; benchmarks/results/):

    - torch: fused 102, blocked 191, keras.layers.Attention 668; SDPA's
      causal flash kernel wins. With a padding mask (where SDPA gets a
      dense float mask; benchmarks/masked.py) blocked 217-248 vs fused
      245-250 ms over three runs, and blocked keeps O(T) memory: masks go
      to blocked.
    - jax: blocked 124, fused 518 (jax.nn.dot_product_attention is a dense
      einsum on CPU), keras.layers.Attention 305.
    - tensorflow (graph, no XLA): blocked 68, fused 145, Attention 173.
    Low precision on CPU goes to blocked: its scores and softmax are float32
    whatever the backend's fused op does.
    """
    supports = {
        name: unsupported_reason(
            name, score_mode, dropout_active, return_attention_scores, static_lengths
        )
        is None
        for name in FAST_IMPLEMENTATIONS
    }
    backend = keras.backend.backend()
    # SDPA gets is_causal only for a plain top-left causal mask; any other
    # mask becomes a dense additive (Tq, Tv) float mask, O(T^2) memory.
    sdpa_fast = backend == "torch" and not has_mask and causal_alignment == "top_left"
    if supports["fused"] and sdpa_fast and not low_precision:
        return "fused"
    if supports["blocked"]:
        return "blocked"
    return "reference"


def _flatten_batch(x):
    """`(batch..., T, dim)` -> `(N, T, 1, dim)`, the layout of the fused op."""
    shape = ops.shape(x)
    return ops.reshape(x, (-1, shape[-2], 1, shape[-1]))


def fused_attention(query, key, value, mask=None, causal=False, causal_offset=0):
    """`keras.ops.dot_product_attention` with the contract of this package.

    Same arguments as `_blocked.blocked_attention`. The caller has folded the
    scale into `query`, so the op gets `scale=1.0` (its default would be
    `1/sqrt(dim)`). Rows with no visible key are multiplied by zero (the op
    would give them a uniform average).
    """
    dtype = keras.backend.standardize_dtype(value.dtype)
    batch_shape = ops.shape(query)[:-2]
    q_len, kv_len = ops.shape(query)[-2], ops.shape(key)[-2]
    # A plain top-left causal mask goes to the op as is_causal (SDPA's
    # causal-aware kernel); anything else becomes one boolean mask.
    is_causal = causal and causal_offset == 0 and mask is None
    row_valid = None
    if mask is not None or (causal and not is_causal):
        if causal:
            rows = ops.expand_dims(ops.arange(q_len, dtype="int32"), -1) + causal_offset
            cols = ops.expand_dims(ops.arange(kv_len, dtype="int32"), 0)
            causal_part = ops.less_equal(cols, rows)
            mask = causal_part if mask is None else ops.logical_and(mask, causal_part)
        rows_dim = ops.shape(mask)[-2]
        mask = ops.broadcast_to(mask, (*batch_shape, rows_dim, kv_len))
        row_valid = ops.any(mask, axis=-1, keepdims=True)
        mask = ops.reshape(mask, (-1, 1, rows_dim, kv_len))
    if dtype in _LOW_PRECISION and keras.backend.backend() == "tensorflow":
        # Keras's TensorFlow op takes the score einsum in the input dtype,
        # where float16 overflows past 65504; its softmax is float32 already.
        query, key, value = (ops.cast(t, "float32") for t in (query, key, value))
    value_dim = value.shape[-1]
    pad = value_dim - query.shape[-1]
    if keras.backend.backend() == "jax" and pad != 0:
        # jax.nn.dot_product_attention needs one depth for query, key and
        # value; zero columns leave the scores and the output unchanged.
        widen = lambda x, n: ops.pad(x, [(0, 0)] * (len(x.shape) - 1) + [(0, n)])  # noqa: E731
        query, key = widen(query, max(pad, 0)), widen(key, max(pad, 0))
        value = widen(value, max(-pad, 0))
    output = ops.dot_product_attention(
        _flatten_batch(query),
        _flatten_batch(key),
        _flatten_batch(value),
        mask=mask,
        scale=1.0,
        is_causal=is_causal,
    )
    output = ops.reshape(output, (*batch_shape, q_len, ops.shape(value)[-1]))
    output = output[..., :value_dim]
    output = ops.cast(output, dtype)
    if row_valid is not None:
        output = output * ops.cast(row_valid, dtype)
    return output
