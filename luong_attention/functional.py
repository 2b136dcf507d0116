"""Dot-product (Luong) attention as pure functions of tensors.

Everything here is written with `keras.ops` only, so it runs unchanged on
JAX, PyTorch and TensorFlow. The layer in `layer.py` owns the weights, the
dropout seed and the argument checks of the Keras call convention; the math
lives here.
"""

import keras
import numpy as np
from keras import ops

from luong_attention import _blocked, _paths

SCORE_MODES = ("dot", "concat", "general")
CAUSAL_ALIGNMENTS = ("top_left", "bottom_right")
IMPLEMENTATIONS = ("auto", "reference", "fused", "blocked")

_LOW_PRECISION = ("float16", "bfloat16")
# Finite stand-in for -inf on masked scores (kept in float32). A finite value
# keeps `exp` and its gradient free of inf - inf = NaN.
_MASKED_SCORE = -1e30


def _static_dims(shape):
    # A dim that is not a Python int is unknown here: `None`, or a symbolic
    # dim such as JAX's when exporting with a polymorphic batch size.
    return tuple(d if isinstance(d, int) else None for d in shape)


def _dims_compatible(a, b):
    return a is None or b is None or a == b


def _invalid(argument, expected, received):
    return ValueError(
        f"Invalid value for argument {argument}. Expected {expected}. "
        f"Received: {argument}={received}"
    )


def check_options(score_mode, causal_alignment, implementation):
    """Raises `ValueError` for an unknown option name."""
    for name, value, allowed in (
        ("score_mode", score_mode, SCORE_MODES),
        ("causal_alignment", causal_alignment, CAUSAL_ALIGNMENTS),
        ("implementation", implementation, IMPLEMENTATIONS),
    ):
        if value not in allowed:
            choices = "{" + ", ".join(repr(a) for a in allowed) + "}"
            raise _invalid(name, f"one of {choices}", repr(value))


def check_flags(**flags):
    """Raises `TypeError` unless each flag is a bool (`training` may be None)."""
    for name, flag in flags.items():
        if flag is None and name == "training":
            continue
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(
                f"Invalid type for argument {name}. Expected a bool. "
                f"Received: {name}={flag!r} of type {type(flag).__name__}"
            )


def as_input_tensor(x, name):
    """`x` as a tensor; `TypeError` for None, strings and non-float dtypes."""
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(
            f"Invalid type for argument {name}. Expected a floating-point tensor. "
            f"Received: {name}={x!r}"
        )
    dtype = getattr(x, "dtype", None)
    if dtype is not None:
        _check_float_dtype(dtype, name)
    return ops.convert_to_tensor(x)


def as_mask_tensor(mask, name):
    """Checks a mask's type: bool, int or float (nonzero means True), or None."""
    if mask is None:
        return None
    if isinstance(mask, (str, bytes)):
        raise TypeError(
            f"Invalid type for argument {name}. Expected a boolean tensor. Received: {name}={mask!r}"
        )
    if not hasattr(mask, "dtype") or not hasattr(mask, "shape"):
        mask = np.asarray(mask)
    dtype = _dtype_name(mask.dtype)
    if dtype != "bool" and "int" not in dtype and "float" not in dtype:
        raise TypeError(
            f"Invalid dtype for argument {name}. Expected a boolean tensor (or "
            f"0/1 ints or floats, nonzero meaning True). Received: {name}.dtype={dtype}"
        )
    return mask


def _dtype_name(dtype):
    try:
        return keras.backend.standardize_dtype(dtype)
    except ValueError:
        return str(dtype)


def _check_float_dtype(dtype, name):
    dtype = _dtype_name(dtype)
    if "float" not in dtype:
        raise TypeError(
            f"Invalid dtype for argument {name}. Expected a floating-point "
            f"tensor. Received: {name}.dtype={dtype}"
        )


def check_score_weights(scale, concat_score_weight, general_score_weight, q_dim, k_dim):
    """Scalars `scale`/`concat_score_weight`, a `(q_dim, k_dim)` matrix `W_a`."""
    for name, weight in (("scale", scale), ("concat_score_weight", concat_score_weight)):
        if weight is None or (isinstance(weight, (int, float)) and not isinstance(weight, bool)):
            continue
        if not hasattr(weight, "shape") or not hasattr(weight, "dtype"):
            raise TypeError(
                f"Invalid type for argument {name}. Expected a float or a scalar "
                f"tensor. Received: {name}={weight!r}"
            )
        _check_float_dtype(weight.dtype, name)
        if len(weight.shape) != 0:
            raise ValueError(
                f"Invalid shape for argument {name}. Expected a scalar, shape (). "
                f"Received: {name}.shape={tuple(weight.shape)}"
            )
    if general_score_weight is None:
        return
    if not hasattr(general_score_weight, "shape") or not hasattr(general_score_weight, "dtype"):
        raise TypeError(
            "Invalid type for argument general_score_weight. Expected a "
            f"(dim, dim_k) tensor. Received: general_score_weight={general_score_weight!r}"
        )
    _check_float_dtype(general_score_weight.dtype, "general_score_weight")
    shape = _static_dims(general_score_weight.shape)
    if len(shape) != 2 or not (
        _dims_compatible(shape[0], q_dim) and _dims_compatible(shape[1], k_dim)
    ):
        raise ValueError(
            "Invalid shape for argument general_score_weight. Expected (query "
            f"dim, key dim) = {(q_dim, k_dim)}. Received: "
            f"general_score_weight.shape={shape}"
        )


def check_dropout(dropout):
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
        raise TypeError(
            "Invalid type for argument dropout. Expected a float in [0, 1). "
            f"Received: dropout={dropout!r} of type {type(dropout).__name__}"
        )
    if not 0.0 <= dropout < 1.0:
        raise _invalid("dropout", "a float in [0, 1)", dropout)


def check_inputs(query, value, key, score_mode="dot"):
    """Checks ranks, batch dims, lengths and feature dims of the inputs.

    Unknown (`None`) dims are accepted; only dims known on both sides are
    compared. Returns nothing; raises `ValueError`/`TypeError`.
    """
    named = (("query", query), ("value", value), ("key", key))
    for name, tensor in named:
        _check_float_dtype(tensor.dtype, name)
        if len(tensor.shape) < 3:
            raise ValueError(
                f"Invalid shape for argument {name}. Expected rank >= 3, "
                f"(batch_size, ..., T, dim). Received: {name}.shape="
                f"{tuple(tensor.shape)}"
            )
    dtypes = [keras.backend.standardize_dtype(t.dtype) for _, t in named]
    if len(set(dtypes)) > 1:
        raise TypeError(
            "query, value and key must have the same dtype (cast them, or let "
            "the layer's dtype policy do it). Received: query.dtype="
            f"{dtypes[0]}, value.dtype={dtypes[1]}, key.dtype={dtypes[2]}"
        )
    q_shape, v_shape, k_shape = (_static_dims(t.shape) for _, t in named)
    for name, shape in (("value", v_shape), ("key", k_shape)):
        if len(shape) != len(q_shape) or not all(
            _dims_compatible(a, b) for a, b in zip(q_shape[:-2], shape[:-2], strict=True)
        ):
            raise ValueError(
                "query, value and key must have the same batch dims (all dims "
                f"but the last two). Received: query.shape={q_shape}, "
                f"{name}.shape={shape}"
            )
    if not _dims_compatible(k_shape[-2], v_shape[-2]):
        raise ValueError(
            "key and value must have the same length (axis -2). Received: "
            f"key.shape={k_shape}, value.shape={v_shape}"
        )
    if score_mode in ("dot", "concat") and not _dims_compatible(q_shape[-1], k_shape[-1]):
        raise ValueError(
            f"With score_mode={score_mode!r}, query and key must have the same "
            f"last dim. Received: query.shape={q_shape}, key.shape={k_shape}. "
            "Use score_mode='general' for different dims."
        )


def check_mask(mask, name, tensor_shape):
    """Checks that a sequence mask fits its input.

    A mask of `tensor_shape[:-1]` fits, and so does any shorter prefix ending
    in the time dim, such as `(batch_size, T)` for a `(batch_size, heads, T,
    dim)` input: it is broadcast over the dims it leaves out. Size-1 dims
    broadcast too.
    """
    if mask is None:
        return
    shape = _static_dims(mask.shape)
    target = _static_dims(tensor_shape)[:-1]
    rank = len(shape)
    fits = 1 <= rank <= len(target) and all(
        m == 1 or _dims_compatible(m, t)
        for m, t in zip(shape, target[: rank - 1] + target[-1:], strict=True)
    )
    if not fits:
        raise ValueError(
            f"Invalid shape for argument {name}. Expected {target} or a prefix "
            f"of it ending in the time dim, such as {target[:1] + target[-1:]}."
            f" Received: {name}.shape={shape}"
        )


def check_attention_mask(attention_mask, q_shape, v_shape):
    if attention_mask is None:
        return
    shape = _static_dims(attention_mask.shape)
    target = _static_dims(q_shape)[:-1] + _static_dims(v_shape)[-2:-1]
    fits = 2 <= len(shape) <= len(target) and all(
        m == 1 or _dims_compatible(m, t)
        for m, t in zip(reversed(shape), reversed(target), strict=False)
    )
    if not fits:
        raise ValueError(
            "Invalid shape for argument attention_mask. Expected a shape "
            f"broadcastable to (batch..., Tq, Tv) = {target}. "
            f"Received: attention_mask.shape={shape}"
        )


def _as_bool(mask):
    mask = ops.convert_to_tensor(mask)
    if keras.backend.standardize_dtype(mask.dtype) != "bool":
        mask = ops.not_equal(mask, 0)
    return mask


def expand_sequence_mask(mask, batch_rank):
    """Reshapes a `(b_0, ..., b_k, T)` mask to `batch_rank + 1` dims.

    Size-1 axes are inserted before the time dim, so a `(batch_size, T)` mask
    broadcasts over heads for `(batch_size, heads, T, dim)` inputs.
    """
    mask = _as_bool(mask)
    for _ in range(batch_rank + 1 - len(mask.shape)):
        mask = ops.expand_dims(mask, axis=-2)
    return mask


def causal_mask(q_len, kv_len, alignment="top_left"):
    """Boolean `(Tq, Tv)` mask, True where query i may attend to key j.

    `top_left`: j <= i. `bottom_right`: j <= i + (Tv - Tq), the alignment of
    a query block that continues a cached key sequence.
    """
    rows = ops.expand_dims(ops.arange(q_len, dtype="int32"), -1)
    cols = ops.expand_dims(ops.arange(kv_len, dtype="int32"), 0)
    if alignment == "bottom_right":
        rows = rows + (kv_len - q_len)
    return ops.less_equal(cols, rows)


def combine_masks(
    batch_rank,
    q_len,
    kv_len,
    value_mask=None,
    key_mask=None,
    attention_mask=None,
    causal=False,
    causal_alignment="top_left",
):
    """ANDs every key-side mask into one boolean `(batch..., Tq, Tv)` mask.

    Returns `None` when nothing is masked. The result broadcasts against the
    score tensor; it is not materialised at full size.
    """
    combined = None

    def conjoin(mask):
        return mask if combined is None else ops.logical_and(combined, mask)

    for mask in (value_mask, key_mask):
        if mask is not None:
            mask = expand_sequence_mask(mask, batch_rank)
            combined = conjoin(ops.expand_dims(mask, axis=-2))
    if attention_mask is not None:
        combined = conjoin(_as_bool(attention_mask))
    if causal:
        combined = conjoin(causal_mask(q_len, kv_len, causal_alignment))
    return combined


def attention_scores(
    query,
    key,
    score_mode="dot",
    scale=None,
    concat_score_weight=None,
    general_score_weight=None,
):
    """Unnormalised scores `(batch..., Tq, Tv)` for one of the score modes.

    - `dot`: `scale * query . key` (Luong's "dot").
    - `general`: `scale * query . W_a . key` (Luong's "general").
    - `concat`: `w * sum(tanh(scale * (query + key)))`, as in
      `keras.layers.Attention(score_mode="concat")`.
    """
    if score_mode == "concat":
        q = ops.expand_dims(query, axis=-2)
        k = ops.expand_dims(key, axis=-3)
        summed = q + k if scale is None else scale * (q + k)
        scores = ops.sum(ops.tanh(summed), axis=-1)
        if concat_score_weight is not None:
            scores = concat_score_weight * scores
        return scores
    if score_mode == "general":
        query = ops.matmul(query, general_score_weight)
    scores = ops.matmul(query, ops.swapaxes(key, -2, -1))
    if scale is not None:
        scores = scores * scale
    return scores


def masked_softmax(scores, mask=None):
    """Softmax over the last axis in float32; rows with no key give zeros.

    Masked positions get exactly zero weight (no large-negative bias that
    overflows in float16), and a row where every key is masked gets all-zero
    weights instead of a uniform average or NaN. Gradients stay finite.
    """
    if keras.backend.standardize_dtype(scores.dtype) != "float64":
        scores = ops.cast(scores, "float32")
    if 0 in _static_dims(scores.shape):
        # Tq = 0 or Tv = 0: nothing to normalise (and max has no identity).
        return ops.zeros_like(scores)
    if mask is None:
        return ops.softmax(scores, axis=-1)
    mask = ops.broadcast_to(mask, ops.shape(scores))
    scores = ops.where(mask, scores, _MASKED_SCORE)
    row_max = ops.stop_gradient(ops.max(scores, axis=-1, keepdims=True))
    exp = ops.where(mask, ops.exp(scores - row_max), 0.0)
    total = ops.sum(exp, axis=-1, keepdims=True)
    return exp / ops.maximum(total, 1e-30)


def _reference(
    query,
    value,
    key,
    mask,
    score_mode,
    scale,
    concat_score_weight,
    general_score_weight,
    dropout,
    seed,
    training,
):
    out_dtype = value.dtype
    if keras.backend.standardize_dtype(query.dtype) in _LOW_PRECISION:
        # Scores in float32: a float16 dot product overflows past 65504.
        query = ops.cast(query, "float32")
        key = ops.cast(key, "float32")
        cast_weight = lambda w: None if w is None else ops.cast(w, "float32")  # noqa: E731
        scale = cast_weight(scale)
        concat_score_weight = cast_weight(concat_score_weight)
        general_score_weight = cast_weight(general_score_weight)
    scores = attention_scores(
        query,
        key,
        score_mode=score_mode,
        scale=scale,
        concat_score_weight=concat_score_weight,
        general_score_weight=general_score_weight,
    )
    weights = ops.cast(masked_softmax(scores, mask), out_dtype)
    if training and dropout > 0:
        weights = keras.random.dropout(weights, dropout, seed=seed)
    return ops.matmul(weights, value), weights


def select_implementation(
    implementation,
    query,
    key,
    *,
    score_mode="dot",
    dropout=0.0,
    training=False,
    return_attention_scores=False,
    causal=False,
    causal_alignment="top_left",
    has_mask=False,
):
    """The path that computes this call: `"reference"`, `"fused"` or `"blocked"`.

    Resolves `"auto"` (see `_paths.choose_implementation`) and raises
    `ValueError` when an explicitly named path cannot run these options.
    """
    options = dict(
        score_mode=score_mode,
        dropout_active=bool(training) and dropout > 0,
        return_attention_scores=return_attention_scores,
        static_lengths=query.shape[-2] is not None and key.shape[-2] is not None,
    )
    if implementation == "auto":
        return _paths.choose_implementation(
            **options,
            causal=causal,
            causal_alignment=causal_alignment,
            has_mask=has_mask,
            low_precision=keras.backend.standardize_dtype(query.dtype) in _LOW_PRECISION,
        )
    reason = _paths.unsupported_reason(implementation, **options)
    if reason is not None:
        raise ValueError(
            f"Invalid value for argument implementation. implementation="
            f"{implementation!r} does not support {reason}; use 'reference' "
            f"or 'auto'. Received: implementation={implementation!r}"
        )
    return implementation


def _fast(
    implementation,
    query,
    value,
    key,
    mask,
    causal,
    causal_alignment,
    score_mode,
    scale,
    general_score_weight,
):
    """The fused or blocked path: fold W_a and the scale into the query."""
    out_dtype = value.dtype
    low_precision = keras.backend.standardize_dtype(query.dtype) in _LOW_PRECISION
    if low_precision:
        # Scores and softmax statistics in float32, as in the reference.
        query, key = ops.cast(query, "float32"), ops.cast(key, "float32")
        if general_score_weight is not None:
            general_score_weight = ops.cast(general_score_weight, "float32")
        if scale is not None:
            scale = ops.cast(scale, "float32")
    if score_mode == "general":
        query = ops.matmul(query, general_score_weight)
    if scale is not None:
        query = query * scale
    offset = 0
    if causal and causal_alignment == "bottom_right":
        offset = ops.shape(key)[-2] - ops.shape(query)[-2]
    if implementation == "blocked":
        output = _blocked.blocked_attention(
            query,
            key,
            ops.cast(value, "float32") if low_precision else value,
            mask=mask,
            causal=causal,
            causal_offset=offset,
        )
    else:
        if low_precision:
            query, key = ops.cast(query, out_dtype), ops.cast(key, out_dtype)
        output = _paths.fused_attention(
            query, key, value, mask=mask, causal=causal, causal_offset=offset
        )
    return ops.cast(output, out_dtype)


def luong_attention(
    query,
    value,
    key=None,
    *,
    query_mask=None,
    value_mask=None,
    key_mask=None,
    attention_mask=None,
    causal=False,
    causal_alignment="top_left",
    score_mode="dot",
    scale=None,
    concat_score_weight=None,
    general_score_weight=None,
    dropout=0.0,
    seed=None,
    training=False,
    return_attention_scores=False,
    implementation="auto",
):
    """Dot-product (Luong) attention of `query` over `value`.

    Args:
        query: `(batch..., Tq, dim)` floating-point tensor; any number of
            leading batch dims. `query`, `value` and `key` share one dtype.
        value: `(batch..., Tv, dim_v)` tensor.
        key: optional `(batch..., Tv, dim)` tensor; `value` when omitted.
        query_mask: boolean `(batch..., Tq)` (or a prefix such as
            `(batch_size, Tq)`); output rows where it is False are zero.
        value_mask: boolean `(batch..., Tv)` (or a prefix); keys where it is
            False get no weight, and their keys and values are zeroed first,
            so a NaN or inf there never reaches the output. Int and float
            masks count nonzero as True.
        key_mask: like `value_mask`; a key counts only where both are True.
        attention_mask: boolean, broadcastable to `(batch..., Tq, Tv)`.
        causal: if True, query i attends only to the keys before it.
        causal_alignment: `"top_left"` (key j <= i) or `"bottom_right"`
            (key j <= i + Tv - Tq).
        score_mode: `"dot"`, `"general"` or `"concat"`.
        scale: optional scalar multiplying the scores.
        concat_score_weight: scalar weight of the `"concat"` score.
        general_score_weight: `(dim, dim_k)` matrix `W_a` of the `"general"`
            score.
        dropout: rate of dropout on the attention weights, used only when
            `training` is True.
        seed: a `keras.random.SeedGenerator` or int for the dropout.
        training: whether dropout is applied.
        return_attention_scores: also return the `(batch..., Tq, Tv)` weights.
        implementation: `"auto"` (default: the fastest path that supports
            the options, see the README), `"reference"` (materialises the
            scores; supports everything), `"fused"`
            (`keras.ops.dot_product_attention`) or `"blocked"` (row blocks,
            causal blocks skipped, O(T) memory). `"fused"` and `"blocked"`
            do not support `score_mode="concat"`, dropout in training or
            `return_attention_scores=True`.

    Returns:
        The `(batch..., Tq, dim_v)` output, and the weights when
        `return_attention_scores` is True. A query row with no key to attend
        to gets zero weights and a zero output.
    """
    check_options(score_mode, causal_alignment, implementation)
    check_dropout(dropout)
    check_flags(causal=causal, training=training, return_attention_scores=return_attention_scores)
    query = as_input_tensor(query, "query")
    value = as_input_tensor(value, "value")
    key = value if key is None else as_input_tensor(key, "key")
    check_inputs(query, value, key, score_mode)
    check_score_weights(
        scale,
        concat_score_weight,
        general_score_weight,
        _static_dims(query.shape)[-1],
        _static_dims(key.shape)[-1],
    )
    if score_mode == "general" and general_score_weight is None:
        raise ValueError(
            "score_mode='general' needs general_score_weight, the (dim, dim_k) "
            "matrix W_a. Received: general_score_weight=None"
        )
    query_mask = as_mask_tensor(query_mask, "query_mask")
    value_mask = as_mask_tensor(value_mask, "value_mask")
    key_mask = as_mask_tensor(key_mask, "key_mask")
    attention_mask = as_mask_tensor(attention_mask, "attention_mask")
    for name, mask, tensor in (
        ("query_mask", query_mask, query),
        ("value_mask", value_mask, value),
        ("key_mask", key_mask, key),
    ):
        check_mask(mask, name, tensor.shape)
    check_attention_mask(attention_mask, query.shape, value.shape)

    batch_rank = len(query.shape) - 2
    path = select_implementation(
        implementation,
        query,
        key,
        score_mode=score_mode,
        dropout=dropout,
        training=training,
        return_attention_scores=return_attention_scores,
        causal=causal,
        causal_alignment=causal_alignment,
        has_mask=any(m is not None for m in (value_mask, key_mask, attention_mask)),
    )
    if 0 in _static_dims(query.shape) + _static_dims(key.shape) + _static_dims(value.shape):
        # An empty input (T = 0, batch 0, dim 0) has nothing to speed up, and
        # the fast kernels cannot reshape or reduce it.
        path = "reference"
    key_is_value = key is value
    for mask in (value_mask, key_mask):
        if mask is not None:
            # Keys and values that no query may see become zeros, so that a
            # NaN or inf in padding cannot reach the output through 0 * NaN.
            keep = ops.expand_dims(expand_sequence_mask(mask, batch_rank), -1)
            value = ops.where(keep, value, ops.zeros_like(value))
            key = value if key_is_value else ops.where(keep, key, ops.zeros_like(key))
    mask = combine_masks(
        batch_rank,
        ops.shape(query)[-2],
        ops.shape(key)[-2],
        value_mask=value_mask,
        key_mask=key_mask,
        attention_mask=attention_mask,
        causal=causal and path == "reference",
        causal_alignment=causal_alignment,
    )
    if path != "reference":
        output = _fast(
            path,
            query,
            value,
            key,
            mask,
            causal,
            causal_alignment,
            score_mode,
            scale,
            general_score_weight,
        )
        weights = None
    else:
        output, weights = _reference(
            query,
            value,
            key,
            mask,
            score_mode,
            scale,
            concat_score_weight,
            general_score_weight,
            dropout,
            seed,
            training,
        )
    if query_mask is not None:
        keep = ops.expand_dims(expand_sequence_mask(query_mask, batch_rank), -1)
        output = ops.where(keep, output, ops.zeros_like(output))
    if return_attention_scores:
        return output, weights
    return output
