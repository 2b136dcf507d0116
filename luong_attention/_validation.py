"""Every argument, shape and dtype check of the package.

Checks raise `ValueError` for values and shapes and `TypeError` for types,
in Keras's wording: the argument, what was expected, what was received.
What `keras.layers.Attention` accepts is accepted here too: any Python or
NumPy scalar as a flag, NumPy numbers as rates and seeds, batch dims that
broadcast, rank-2 inputs.
"""

import numbers

import keras
import numpy as np

SCORE_MODES = ("dot", "concat", "general")
CAUSAL_ALIGNMENTS = ("top_left", "bottom_right")
IMPLEMENTATIONS = ("auto", "reference", "fused", "blocked")
LOW_PRECISION = ("float16", "bfloat16")


def static_dims(shape):
    """`shape` with every dim that is not a Python int (unknown or symbolic) as `None`."""
    return tuple(d if isinstance(d, int) else None for d in shape)


def dtype_name(dtype):
    """Keras's name of `dtype` (`"float32"`, ...), or its `str` where Keras has none."""
    try:
        return _DTYPE_NAMES[dtype]
    except KeyError:
        name = _standard_dtype_name(dtype)
        if len(_DTYPE_NAMES) < 64:
            _DTYPE_NAMES[dtype] = name
        return name
    except TypeError:  # unhashable
        return _standard_dtype_name(dtype)


def _standard_dtype_name(dtype):
    try:
        return keras.backend.standardize_dtype(dtype)
    except ValueError:
        return str(dtype)


# Names of the dtype objects seen: eager calls ask for a few dtypes many
# times, and Keras's standardize_dtype does string work each time.
_DTYPE_NAMES = {}


def invalid(argument, expected, received):
    return ValueError(
        f"Invalid value for argument {argument}. Expected {expected}. "
        f"Received: {argument}={received}"
    )


def wrong_type(argument, expected, received):
    return TypeError(
        f"Invalid type for argument {argument}. Expected {expected}. "
        f"Received: {argument}={received!r} of type {type(received).__name__}"
    )


def check_option(name, value, allowed):
    if not isinstance(value, str) or value not in allowed:
        choices = "{" + ", ".join(repr(a) for a in allowed) + "}"
        raise invalid(name, f"one of {choices}", repr(value))


def as_flag(value, name):
    """A Python bool from any Python or NumPy scalar (`1`, `np.True_`, ...).

    Keras's `Layer.__call__` turns NumPy scalars among the call arguments
    into 0-d tensors, so a concrete 0-d tensor counts as a scalar too.
    """
    if value is True or value is False:  # the common case, without the checks below
        return value
    if isinstance(value, (bool, np.bool_, numbers.Number)) and np.ndim(value) == 0:
        return bool(value)
    if keras.ops.is_tensor(value) and tuple(value.shape) == ():
        dtype = dtype_name(value.dtype)
        if dtype == "bool" or "int" in dtype or "float" in dtype:
            return bool(keras.ops.convert_to_numpy(value))
    raise wrong_type(name, "a bool (or a number, nonzero meaning True)", value)


def as_dropout(dropout):
    """`dropout` as a Python float in `[0, 1)`."""
    if isinstance(dropout, (bool, np.bool_)) or not isinstance(dropout, numbers.Real):
        raise wrong_type("dropout", "a float in [0, 1)", dropout)
    dropout = float(dropout)
    if not 0.0 <= dropout < 1.0:
        raise invalid("dropout", "a float in [0, 1)", dropout)
    return dropout


def as_seed(seed):
    """`seed` as a Python int, or None."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise wrong_type("seed", "an int or None", seed)
    return int(seed)


def check_float_dtype(dtype, name):
    dtype = dtype_name(dtype)
    if "float" not in dtype:
        raise TypeError(
            f"Invalid dtype for argument {name}. Expected a floating-point "
            f"tensor. Received: {name}.dtype={dtype}"
        )


def check_input(x, name):
    """Raises `TypeError` for None, strings and non-float dtypes."""
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(
            f"Invalid type for argument {name}. Expected a floating-point tensor. "
            f"Received: {name}={x!r}"
        )
    dtype = getattr(x, "dtype", None)
    if dtype is not None:
        check_float_dtype(dtype, name)


def check_mask_type(mask, name):
    """Returns `mask` with a dtype and shape: bool, int or float (nonzero = True)."""
    if mask is None:
        return None
    if isinstance(mask, (str, bytes)):
        raise TypeError(
            f"Invalid type for argument {name}. Expected a boolean tensor. Received: {name}={mask!r}"
        )
    if not hasattr(mask, "dtype") or not hasattr(mask, "shape"):
        mask = np.asarray(mask)
    dtype = dtype_name(mask.dtype)
    if dtype != "bool" and "int" not in dtype and "float" not in dtype:
        raise TypeError(
            f"Invalid dtype for argument {name}. Expected a boolean tensor (or "
            f"0/1 ints or floats, nonzero meaning True). Received: {name}.dtype={dtype}"
        )
    return mask


def broadcast_batch_shape(*shapes):
    """The batch dims that `shapes[i][:-2]` broadcast to, or None if they do not.

    NumPy's rules, with unknown dims: `None` against 1 or `None` gives
    `None`, against a known size gives that size.
    """
    rank = max(len(s) for s in shapes)
    result = []
    for i in range(rank):
        dims = [s[i - rank + len(s)] for s in shapes if i - rank + len(s) >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            return None
        if known:
            result.append(known.pop())
        else:
            result.append(None if None in dims else 1)
    return tuple(result)


def _compatible(a, b):
    return a is None or b is None or a == b


def check_inputs(query, value, key, score_mode):
    """Checks dtypes, ranks, batch dims, lengths and feature dims of the inputs.

    Returns the static batch shape they broadcast to. Unknown (`None`) dims
    are accepted; only dims known on both sides are compared.
    """
    named = (("query", query), ("value", value), ("key", key))
    for name, tensor in named:
        check_float_dtype(tensor.dtype, name)
        if len(tensor.shape) < 2:
            raise ValueError(
                f"Invalid shape for argument {name}. Expected rank >= 2, "
                f"(batch..., T, dim). Received: {name}.shape={tuple(tensor.shape)}"
            )
    dtypes = [dtype_name(t.dtype) for _, t in named]
    if len(set(dtypes)) > 1:
        raise TypeError(
            "query, value and key must have the same dtype (cast them, or let "
            "the layer's dtype policy do it). Received: query.dtype="
            f"{dtypes[0]}, value.dtype={dtypes[1]}, key.dtype={dtypes[2]}"
        )
    q_shape, v_shape, k_shape = (static_dims(t.shape) for _, t in named)
    batch_shape = broadcast_batch_shape(q_shape[:-2], v_shape[:-2], k_shape[:-2])
    if batch_shape is None:
        raise ValueError(
            "query, value and key must have batch dims (all dims but the last "
            "two) that are equal or broadcast (size 1). Received: "
            f"query.shape={q_shape}, value.shape={v_shape}, key.shape={k_shape}"
        )
    if not _compatible(k_shape[-2], v_shape[-2]):
        raise ValueError(
            "key and value must have the same length (axis -2). Received: "
            f"key.shape={k_shape}, value.shape={v_shape}"
        )
    if score_mode in ("dot", "concat") and not _compatible(q_shape[-1], k_shape[-1]):
        raise ValueError(
            f"With score_mode={score_mode!r}, query and key must have the same "
            f"last dim. Received: query.shape={q_shape}, key.shape={k_shape}. "
            "Use score_mode='general' for different dims."
        )
    return batch_shape


def check_sequence_mask(mask, name, tensor_shape, batch_shape):
    """Checks that a sequence mask fits its input.

    A mask of `tensor_shape[:-1]` fits, and so does any shorter prefix ending
    in the time dim, such as `(batch_size, T)` for a `(batch_size, heads, T,
    dim)` input: it is broadcast over the dims it leaves out. Size-1 dims
    broadcast, and where the input's batch dim is 1 the mask may have the
    size the batch dims broadcast to (`batch_shape`).
    """
    if mask is None:
        return
    shape = static_dims(mask.shape)
    target = static_dims(tensor_shape)[:-1]
    own_batch = len(target) - 1
    broadcast = tuple(batch_shape)[len(batch_shape) - own_batch :] if own_batch else ()
    rank = len(shape)
    fits = 1 <= rank <= len(target)
    if fits:
        # Each leading dim may match the input's dim or the broadcast one.
        allowed = [{t, b} for t, b in zip(target, broadcast, strict=False)][: rank - 1]
        fits = all(
            m == 1 or any(_compatible(m, t) for t in options)
            for m, options in zip(shape, [*allowed, {target[-1]}], strict=True)
        )
    if not fits:
        raise ValueError(
            f"Invalid shape for argument {name}. Expected {target} or a prefix "
            f"of it ending in the time dim, such as {target[:1] + target[-1:]}."
            f" Received: {name}.shape={shape}"
        )


def check_attention_mask(attention_mask, batch_shape, q_len, kv_len):
    if attention_mask is None:
        return
    shape = static_dims(attention_mask.shape)
    target = (*batch_shape, q_len, kv_len)
    fits = 2 <= len(shape) <= len(target) and all(
        m == 1 or _compatible(m, t) for m, t in zip(reversed(shape), reversed(target), strict=False)
    )
    if not fits:
        raise ValueError(
            "Invalid shape for argument attention_mask. Expected a shape "
            f"broadcastable to (batch..., Tq, Tv) = {target}. "
            f"Received: attention_mask.shape={shape}"
        )


def check_score_weights(scale, concat_score_weight, general_score_weight, q_dim, k_dim):
    """Scalars `scale`/`concat_score_weight`, a `(q_dim, k_dim)` matrix `W_a`."""
    for name, weight in (("scale", scale), ("concat_score_weight", concat_score_weight)):
        if weight is None or (
            isinstance(weight, numbers.Real) and not isinstance(weight, (bool, np.bool_))
        ):
            continue
        if not hasattr(weight, "shape") or not hasattr(weight, "dtype"):
            raise TypeError(
                f"Invalid type for argument {name}. Expected a float or a scalar "
                f"tensor. Received: {name}={weight!r}"
            )
        check_float_dtype(weight.dtype, name)
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
    check_float_dtype(general_score_weight.dtype, "general_score_weight")
    shape = static_dims(general_score_weight.shape)
    if len(shape) != 2 or not (_compatible(shape[0], q_dim) and _compatible(shape[1], k_dim)):
        raise ValueError(
            "Invalid shape for argument general_score_weight. Expected (query "
            f"dim, key dim) = {(q_dim, k_dim)}. Received: "
            f"general_score_weight.shape={shape}"
        )


def check_call_lists(class_name, inputs, mask):
    """Keras's call convention: `inputs` and `mask` are lists (or tuples) of 2 or 3.

    The phrases "must be called on a list", "length 2 or 3" and "layer mask
    must be a list" are the ones Keras's own tests of
    `keras.layers.Attention` look for.
    """
    if not isinstance(inputs, (list, tuple)):
        raise ValueError(
            f"{class_name} layer must be called on a list of inputs, [query, value] "
            f"or [query, value, key] (a tuple works too). Received: inputs={inputs}."
        )
    if not 2 <= len(inputs) <= 3:
        raise ValueError(
            f"{class_name} layer takes inputs of length 2 or 3, [query, value] or "
            f"[query, value, key]. Received length: {len(inputs)}."
        )
    if mask is None:
        return
    if not isinstance(mask, (list, tuple)):
        raise ValueError(
            f"{class_name} layer mask must be a list, [query_mask, value_mask] or "
            f"[query_mask, value_mask, key_mask] (a tuple works too). Received: mask={mask}."
        )
    if not 2 <= len(mask) <= 3:
        raise ValueError(
            f"{class_name} layer takes a mask of length 2 or 3, [query_mask, "
            f"value_mask] or [query_mask, value_mask, key_mask]. Received length: {len(mask)}."
        )
