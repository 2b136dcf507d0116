"""`luong_attention`, the public function: validate, prepare, dispatch, compute.

Written with `keras.ops` only, so it runs unchanged on JAX, PyTorch and
TensorFlow. Each step is one level down: `_validation` checks the
arguments, `_dispatch` picks the path, `_prepare` readies the tensors, and
a kernel in `kernels/` computes.
"""

from collections.abc import Callable
from typing import NamedTuple

import keras
from keras import ops

from luong_attention import _dispatch, _masks, _padding, _prepare, _validation
from luong_attention._padding import SkipOptions
from luong_attention._validation import CAUSAL_ALIGNMENTS, IMPLEMENTATIONS, SCORE_MODES
from luong_attention.kernels import (
    BlockedOptions,
    blocked_attention,
    fused_attention,
    reference_attention,
)
from luong_attention.kernels.reference import plan as reference_plan


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
    blocked_options=None,
    skip_padded_keys=False,
    skip_options=None,
    nan_safe_padding=False,
):
    """Dot-product (Luong) attention of `query` over `value`.

    Args:
        query: `(batch..., Tq, dim)` floating-point tensor, with any number
            of leading batch dims (none: a `(Tq, dim)` input). `query`,
            `value` and `key` share one dtype; their batch dims are equal or
            broadcast (size 1).
        value: `(batch..., Tv, dim_v)` tensor.
        key: optional `(batch..., Tv, dim)` tensor; `value` when omitted.
        query_mask: boolean `(batch..., Tq)` (or a prefix such as
            `(batch_size, Tq)`); output rows where it is False are zero.
        value_mask: boolean `(batch..., Tv)` (or a prefix); keys where it is
            False get no weight. Int and float masks count nonzero as True.
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
        training: whether dropout is applied. It also selects the measured
            choice of `"auto"` for training or inference, and the blocked
            path's memory-saving gradient (used in training only).
        return_attention_scores: also return the `(batch..., Tq, Tv)` weights.
        implementation: `"auto"` (default: the fastest path that supports
            the call, from measurements), `"reference"` (materialises the
            scores; supports everything), `"fused"`
            (`keras.ops.dot_product_attention`) or `"blocked"` (row blocks,
            causal blocks skipped, O(T) memory). `"fused"` and `"blocked"`
            do not support `score_mode="concat"`, dropout in training or
            `return_attention_scores=True`; `"blocked"` needs Tq and Tv
            known when traced.
        blocked_options: a `luong_attention.kernels.BlockedOptions`, the
            tuning knobs of the blocked path (block size, thresholds). None
            (default): `BlockedOptions`' defaults, with the smallest block
            that `nox -s bench` measured fastest for the call's backend,
            length, mode and causal mask or not where it measured one (the
            auto table).
        skip_padded_keys: compute each element of the first batch dim only
            up to its last key that the value, key or attention mask leaves
            visible, and its last query row that `query_mask` keeps (unless
            the weights are returned), in blocks of 64, so a long padded
            batch costs about its real tokens; results are those computed
            in full, up to float rounding. It reads the masks' values, so it
            skips in eager calls only (PyTorch's default; `run_eagerly=True`
            on JAX and TensorFlow); a traced call (`jit`, `tf.function`,
            `torch.export`, TorchScript's trace) and a call of little work
            compute in full, so exported models do too.
        skip_options: a `luong_attention.functional.SkipOptions`, the tuning
            knobs of `skip_padded_keys` (block, cost of a kernel call, least
            work worth planning).
        nan_safe_padding: zero the keys and values that `value_mask` and
            `key_mask` hide before any arithmetic, so a NaN or inf there
            never reaches the output or the gradients. That is one more pass
            over the keys and the values, which short sequences notice; off
            (the default), a NaN or inf in padding reaches the output as it
            does in `keras.layers.Attention`.

    Returns:
        The `(batch..., Tq, dim_v)` output, and the weights when
        `return_attention_scores` is True. A query row with no key to attend
        to gets zero weights and a zero output. Scores and softmax are
        computed in float32 for float16 and bfloat16 inputs.

    Examples:

    >>> import numpy as np
    >>> query = np.ones((2, 3, 4), "float32")
    >>> value = np.ones((2, 5, 4), "float32")
    >>> output = luong_attention(query, value, value_mask=[[1, 1, 0, 0, 0]] * 2)
    >>> tuple(output.shape)
    (2, 3, 4)
    """
    # The options as given, a plain tuple: `_Options` is built (and checked)
    # only for a signature not seen before.
    given = (
        score_mode,
        causal_alignment,
        implementation,
        dropout,
        causal,
        training,
        return_attention_scores,
        blocked_options,
        skip_padded_keys,
        skip_options,
        nan_safe_padding,
    )
    # One flat tuple serves as the signature's source and as the run's
    # arguments: an eager call with a known signature builds nothing else.
    values = (
        query,
        value,
        key,
        query_mask,
        value_mask,
        key_mask,
        attention_mask,
        scale,
        concat_score_weight,
        general_score_weight,
    )
    signature = _signature(values, given, implementation)
    run = None
    if signature is not None:
        try:
            run = _CHECKED.get(signature)
        except TypeError:  # an unhashable option value: checked (and rejected) in full
            signature = None
    if run is None:
        masks = _prepare.Masks(*values[3:7])
        run = _check_call(values[:3], masks, values[7:], _Options(*given))
        if signature is None:
            # Python lists among the masks become arrays; a call with a
            # signature has only masks with a checked dtype and shape.
            values = (*values[:3], *_typed_masks(masks), *values[7:])
        else:
            _remember(signature, run)
    return run(values, seed)


def _staged(checked):
    """The rest of a call of one signature, with every choice `checked` made resolved.

    Returns `run(values, seed)`: given `luong_attention`'s tuple of tensors,
    masks and score weights, it prepares the inputs, runs the kernel and
    returns what `luong_attention` does. Eager calls repeat a signature, so
    its `run` is made once (`_check_call`) and a call with that signature
    does its tensor ops and few Python branches more; a plain one (one
    boolean value mask at most, nothing to cast or fold into the query)
    skips the preparation.
    """
    (
        options,
        layout,
        causal_offset,
        tensors,
        dtypes,
        scale_scores,
        fold_query,
        cast_weights,
        kernel,
    ) = checked
    cast_scale, cast_concat_weight = cast_weights
    call_dtype, score_dtype, value_dtype = dtypes
    cast_inputs = score_dtype != call_dtype or value_dtype != call_dtype
    cast_output = value_dtype != call_dtype
    causal, causal_alignment = options.causal, options.causal_alignment
    offset_when_run = causal_offset is None and causal  # lengths known only when run
    skip = options.skip_padded_keys and bool(layout.batch_shape)
    with_weights = options.return_attention_scores
    skip_options = options.skip_options or SkipOptions()

    def run(values, seed):
        query, value, key, *masks, scale, concat_score_weight, general_score_weight = values
        if not tensors:
            query, value = ops.convert_to_tensor(query), ops.convert_to_tensor(value)
            key = key if key is None else ops.convert_to_tensor(key)
        if key is None:
            key = value
        offset = causal_offset
        if offset_when_run:
            offset = _causal_offset(causal, causal_alignment, query, key)
        prepared = _prepare.prepare(
            query, value, key, _prepare.Masks(*masks), layout, causal_offset=offset
        )
        if cast_inputs:
            prepared = _prepare.cast_for_path(prepared, score_dtype, value_dtype)
        query = prepared.query
        if fold_query:
            query = _prepare.fold_query(
                query,
                general_score_weight=general_score_weight,
                scale=None if scale_scores else scale,
            )
        # What each call brings to `kernel`, which has the rest bound.
        if not scale_scores:
            scale = None
        elif cast_scale:
            scale = ops.cast(scale, score_dtype)
        if cast_concat_weight:
            concat_score_weight = ops.cast(concat_score_weight, score_dtype)
        runs = None
        if skip:
            runs = _padding.plan(
                prepared.mask,
                prepared.query_keep,
                shape=(
                    layout.batch_shape[0],
                    query.shape[-2],
                    prepared.key.shape[-2],
                    query.shape[-1],
                ),
                rank=len(query.shape),
                # The weights of rows the query mask drops are returned as computed.
                trim_queries=not with_weights,
                options=skip_options,
            )
        if runs is None:
            output, weights = kernel(
                query,
                prepared.key,
                prepared.value,
                prepared.mask,
                prepared.causal_offset,
                scale,
                concat_score_weight,
                seed,
            )
        else:
            output, weights = _by_runs(
                lambda q, k, v, m: kernel(
                    q,
                    k,
                    v,
                    m,
                    prepared.causal_offset,
                    scale,
                    concat_score_weight,
                    seed,
                    whole=False,
                ),
                query,
                prepared,
                runs,
                with_weights=with_weights,
            )
        if cast_output:
            output = ops.cast(output, call_dtype)
        if prepared.query_keep is not None:
            output = ops.where(prepared.query_keep, output, 0.0)
        if with_weights:
            return output, weights
        return output

    # A plain call of backend tensors, with nothing to cast or fold into the
    # query (most eager calls on short sequences), goes straight to the kernel.
    lean = (
        layout.plain
        and tensors
        and not (
            offset_when_run
            or cast_inputs  # (and so cast_output)
            or skip
            or fold_query
            or cast_scale
            or cast_concat_weight
        )
    )
    if not lean:
        return run

    def lean_run(values, seed):
        query, value, key, _, value_mask, _, _, scale, concat_score_weight, _ = values
        output, weights = kernel(
            query,
            value if key is None else key,
            value,
            _prepare.plain_mask(value_mask),
            causal_offset,
            scale,
            concat_score_weight,
            seed,
        )
        return (output, weights) if with_weights else output

    return lean_run


def _kernel(path, options, quirks, *, masked, attention_mask, sees_first_key, dropout):
    """The kernel of `path` with what a signature decides bound to it.

    Returns `kernel(query, key, value, mask, causal_offset, scale,
    concat_score_weight, seed, whole=True)`, which takes the tensors of a
    `_prepare.Prepared` and gives `(output, weights)`, the weights only from the
    reference path; `whole=False` for a run of `_by_runs`, whose shapes are
    not the signature's (only the reference path reads it). `masked` says
    whether a value, key or attention mask is given, `sees_first_key`
    whether every row sees key 0 under the causal mask
    (`_masks.sees_first_key`), and `dropout` is the rate in effect.
    """
    if path == "reference":
        # Zeroed by `nan_safe_padding`, the values that value and key masks
        # hide make a row they leave without a key average zeros. The causal
        # mask scores the keys it hides lower still, so a row left only
        # padded keys by it and a key mask averages zeros too, if every row
        # sees key 0 (no row is left only the unzeroed keys it hides). An
        # attention mask, or a key mask without the zeroing, hides unzeroed
        # values.
        empty_rows = None
        if options.return_attention_scores:
            empty_rows = "weights"
        elif (
            attention_mask
            or (masked and not options.nan_safe_padding)
            or (options.causal and not sees_first_key)
        ):
            empty_rows = "output"
        mask_as_bias = not attention_mask
        score_mode = options.score_mode
        keep_constants = quirks["reference_keep_constants"]

        # Made by the first whole call: every call with this signature
        # brings tensors of the same shapes and dtypes (the runs of
        # `_by_runs` do not, and are planned one by one).
        plans = []

        def reference(
            query, key, value, mask, causal_offset, scale, concat_score_weight, seed, whole=True
        ):
            planned = plans[0] if plans and whole else None
            if planned is None:
                planned = reference_plan(
                    query,
                    key,
                    value,
                    mask,
                    empty_rows=empty_rows,
                    mask_as_bias=mask_as_bias,
                )
                if whole:
                    plans.append(planned)
            return reference_attention(
                query=query,
                key=key,
                value=value,
                mask=mask,
                causal_offset=causal_offset,
                score_mode=score_mode,
                scale=scale,
                concat_score_weight=concat_score_weight,
                dropout=dropout,
                seed=seed,
                empty_rows=empty_rows,
                # A bias on the scores, as Keras's layer adds one: it hides
                # zeroed keys, and unzeroed ones with finite scores below 1e29
                # (a NaN there stays, as in Keras, without `nan_safe_padding`).
                mask_as_bias=mask_as_bias,
                keep_constants=keep_constants,
                planned=planned,
            )

        return reference
    # The fused and blocked paths take the scale folded into the query and
    # support neither the concat score nor dropout.
    if path == "fused":
        run = fused_attention
        bound = {
            name: quirks[f"fused_{name}"]
            for name in ("equal_depths", "transpose_heads", "full_mask")
        }
    else:
        run = blocked_attention
        bound = dict(
            options=options.blocked_options,
            chain_slices=quirks["blocked_chain_slices"],
            with_gradient=options.training,
        )

    def kernel(
        query, key, value, mask, causal_offset, scale, concat_score_weight, seed, whole=True
    ):
        output = run(
            query=query, key=key, value=value, mask=mask, causal_offset=causal_offset, **bound
        )
        return output, None

    return kernel


def _by_runs(compute, query, prepared, runs, *, with_weights):
    """`compute(query, key, value, mask)` on each run of batch elements, on its query rows and keys only.

    `runs` are the `_padding.Run`s of the first batch dim; an input
    broadcast over that dim (size 1) is shared by every run. Skipped query
    rows come out zero, and skipped keys get zero weights (returned
    `with_weights`).
    """
    batch, rank = runs[-1].stop, len(query.shape)
    q_len, kv_len = query.shape[-2], prepared.key.shape[-2]

    def pieces(x):
        """`x` split into the runs' elements: one op, whose gradient is one concatenation
        (a slice per run would give each run's gradient the whole input's size)."""
        if not _padding.carries_batch(x, rank, batch):
            return [x] * len(runs)  # None, or broadcast over the batch
        if len(runs) == 1:
            return [x]
        return ops.split(x, [run.stop for run in runs[:-1]], axis=0)

    def prefix(x, run, rows=None, keys=None):
        """`x` cut to the run's query rows on axis `rows` and its keys on `keys`."""
        if rows is not None and x.shape[rows] == q_len:
            x = _prefix(x, rows, run.q_len)
        if keys is not None and x.shape[keys] == kv_len:
            x = _prefix(x, keys, run.kv_len)
        return x

    split = zip(
        runs,
        *(pieces(t) for t in (query, prepared.key, prepared.value, prepared.mask)),
        strict=True,
    )
    outputs, all_weights = [], []
    for run, query_part, key_part, value_part, mask_part in split:
        output, weights = compute(
            prefix(query_part, run, rows=-2),
            prefix(key_part, run, keys=-2),
            prefix(value_part, run, keys=-2),
            None if mask_part is None else prefix(mask_part, run, rows=-2, keys=-1),
        )
        outputs.append(_prepare.zero_pad(output, -2, q_len))
        if with_weights:
            all_weights.append(_prepare.zero_pad(weights, -1, kv_len))

    def joined(parts):
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=0)

    return joined(outputs), joined(all_weights) if all_weights else None


def _prefix(x, axis, length):
    """The first `length` entries of `x` along `axis` (-1 or -2)."""
    return x[..., :length] if axis == -1 else x[..., :length, :]


def _query_is_smaller(call, dim):
    """Whether the (folded) query `(Tq, dim)` has fewer entries than the scores `(Tq, Tv)`.

    `dim` is the key's depth, which the query has once `W_a` is folded in.
    """
    return isinstance(dim, int) and call.kv_len is not None and dim < call.kv_len


class _Options(NamedTuple):
    """The call's options other than tensors, validated by `_check_call`."""

    score_mode: str
    causal_alignment: str
    implementation: str
    dropout: float
    causal: bool
    training: bool
    return_attention_scores: bool
    blocked_options: BlockedOptions | None
    skip_padded_keys: bool
    skip_options: SkipOptions | None
    nan_safe_padding: bool


class _Checked(NamedTuple):
    """What `_check_call` decides about a call."""

    options: _Options  # as plain Python values
    layout: _prepare.Layout  # what `_prepare.prepare` does to the inputs
    causal_offset: int | None  # None when not causal, or known only when run
    tensors: bool  # query, value and key are backend tensors (no conversion)
    dtypes: tuple  # the call's, then the path's working dtypes (`_prepare.working_dtypes`)
    scale_scores: bool  # the scale multiplies the scores, not the query
    fold_query: bool  # `W_a` or the scale multiplies the query (`_prepare.fold_query`)
    cast_weights: tuple  # (scale, concat_score_weight): `_prepare.needs_cast` to the score dtype
    kernel: Callable  # `_kernel`: the path's kernel with the signature's choices bound


# The run `_check_call` returned for each signature seen (shapes, dtypes and
# options): eager calls repeat with the same signature, so the checks and the
# choice of path are done once per signature, not once per call.
_CHECKED = {}
_MAX_CHECKED = 256


def _signature(values, given, implementation):
    """A key of everything `_check_call` depends on, or None.

    `values` are the tensors, masks and score weights of the call, `given`
    its other options as passed. None where a value is not a tensor-like
    with a shape and dtype (a Python list, say): such a call is checked
    every time. The caller treats a key that turns out unhashable (an
    unhashable option) the same way.
    """
    try:
        # Shapes as they come: PyTorch's and JAX's are tuples, TensorFlow's
        # a `TensorShape`, hashable and equal by its dims (known or None).
        # Reading a PyTorch tensor's shape and dtype is most of what an
        # eager call with a known signature costs here, so nothing more.
        specs = tuple(
            [
                x if x is None else float if type(x) is float else (type(x), x.shape, x.dtype)
                for x in values
            ]
        )
    except AttributeError:  # no shape or dtype: a list, a bool, an int
        return None
    # Only "auto" reads the flash attention setting.
    flash = keras.config.is_flash_attention_enabled() if implementation == "auto" else None
    return (specs, given, flash)


def _remember(signature, run):
    """Caches `run`, the `_staged` run of `signature` (all are dropped at `_MAX_CHECKED`)."""
    if len(_CHECKED) >= _MAX_CHECKED:
        _CHECKED.clear()
    _CHECKED[signature] = run


def _check_call(inputs, masks, score_weights, options):
    """Validates a call and chooses its path.

    Returns the `_staged` run of its `_Checked`: everything about the call
    that depends only on shapes, dtypes and options (see `_signature`)
    decided, so that an eager call with a signature seen before does little
    more than its tensor ops.
    """
    for name, tensor in zip(("query", "value", "key"), inputs, strict=True):
        if tensor is not None or name != "key":
            _validation.check_input(tensor, name)
    _validation.check_option("score_mode", options.score_mode, SCORE_MODES)
    _validation.check_option("causal_alignment", options.causal_alignment, CAUSAL_ALIGNMENTS)
    _validation.check_option("implementation", options.implementation, IMPLEMENTATIONS)
    blocked_options = options.blocked_options
    if blocked_options is not None and not isinstance(blocked_options, BlockedOptions):
        raise _validation.wrong_type("blocked_options", "a BlockedOptions or None", blocked_options)
    skip_options = options.skip_options
    if skip_options is not None and not isinstance(skip_options, SkipOptions):
        raise _validation.wrong_type("skip_options", "a SkipOptions or None", skip_options)
    options = options._replace(
        dropout=_validation.as_dropout(options.dropout),
        causal=_validation.as_flag(options.causal, "causal"),
        training=options.training is not None and _validation.as_flag(options.training, "training"),
        return_attention_scores=_validation.as_flag(
            options.return_attention_scores, "return_attention_scores"
        ),
        skip_padded_keys=_validation.as_flag(options.skip_padded_keys, "skip_padded_keys"),
        nan_safe_padding=_validation.as_flag(options.nan_safe_padding, "nan_safe_padding"),
    )
    query, value, key = (ops.convert_to_tensor(t) if t is not None else None for t in inputs)
    key = value if key is None else key
    batch_shape = _validation.check_inputs(query, value, key, options.score_mode)
    masks = _checked_masks(masks, (query, value, key), batch_shape)
    scale, concat_score_weight, general_score_weight = score_weights
    q_dim, k_dim = _validation.static_dims(query.shape)[-1], _validation.static_dims(key.shape)[-1]
    _validation.check_score_weights(scale, concat_score_weight, general_score_weight, q_dim, k_dim)
    if options.score_mode == "general" and general_score_weight is None:
        raise ValueError(
            "score_mode='general' needs general_score_weight, the (dim, dim_k) "
            "matrix W_a. Received: general_score_weight=None"
        )
    call = _describe(
        (query, value, key),
        masks,
        score_mode=options.score_mode,
        dropout_active=options.training and options.dropout > 0,
        return_attention_scores=options.return_attention_scores,
        causal=options.causal,
        training=options.training,
    )
    path = _dispatch.choose_path(options.implementation, call)
    backend = keras.backend.backend()
    quirks = _dispatch.kernel_options(backend)
    if path == "blocked" and options.blocked_options is None:
        options = options._replace(blocked_options=_dispatch.blocked_options(call, backend))
    score_dtype, value_dtype = _prepare.working_dtypes(
        path, call.dtype, fused_float32=call.dtype in quirks["fused_float32_dtypes"]
    )
    # The scale goes on the query, or on the scores where they are the
    # smaller tensor (and in the concat score, where it acts inside tanh).
    scale_scores = path == "reference" and (
        options.score_mode == "concat" or not _query_is_smaller(call, k_dim)
    )
    tensors = all(t is None or ops.is_tensor(t) for t in inputs)
    layout = _prepare.layout(
        query,
        value,
        key,
        masks,
        batch_shape=batch_shape,
        flat_batch=path != "reference",
        zero_masked=options.nan_safe_padding,
    )
    causal_offset = _causal_offset(options.causal, options.causal_alignment, query, key)
    kernel = _kernel(
        path,
        options,
        quirks,
        masked=call.masked,
        attention_mask=masks.attention is not None,
        sees_first_key=_masks.sees_first_key(causal_offset),
        dropout=options.dropout if call.dropout_active else 0.0,
    )
    if not isinstance(causal_offset, int):
        causal_offset = None  # a tensor: recomputed from each call's inputs
    return _staged(
        _Checked(
            options,
            layout,
            causal_offset,
            tensors,
            (call.dtype, score_dtype, value_dtype),
            scale_scores,
            general_score_weight is not None or (scale is not None and not scale_scores),
            (
                scale_scores and _prepare.needs_cast(scale, score_dtype),
                _prepare.needs_cast(concat_score_weight, score_dtype),
            ),
            kernel,
        )
    )


def check_implementation(implementation, **options):
    """Raises `ValueError` if the path `implementation` cannot run these options.

    `options` are fields of `_dispatch.Call` known before the inputs are,
    such as `score_mode` and `return_attention_scores`; the lengths the
    blocked path needs are checked when the call is traced.
    """
    _validation.check_option("implementation", implementation, IMPLEMENTATIONS)
    _dispatch.choose_path(implementation, _dispatch.Call(q_len=1, kv_len=1, **options))


def _typed_masks(masks):
    """`masks` with a dtype and shape each (Python lists become arrays)."""
    return _prepare.Masks(
        *(
            _validation.check_mask_type(m, f"{n}_mask")
            for m, n in zip(masks, masks._fields, strict=True)
        )
    )


def _checked_masks(masks, inputs, batch_shape):
    """`masks` with a dtype and shape each, checked against the inputs."""
    query, value, key = inputs
    masks = _typed_masks(masks)
    for name, mask, tensor in (
        ("query_mask", masks.query, query),
        ("value_mask", masks.value, value),
        ("key_mask", masks.key, key),
    ):
        _validation.check_sequence_mask(mask, name, tensor.shape, batch_shape)
    _validation.check_attention_mask(
        masks.attention,
        batch_shape,
        _validation.static_dims(query.shape)[-2],
        _validation.static_dims(key.shape)[-2],
    )
    return masks


def _describe(inputs, masks, **options):
    """The `_dispatch.Call` of these inputs, masks and options."""
    query, value, key = inputs
    shapes = [_validation.static_dims(t.shape) for t in inputs]
    return _dispatch.Call(
        q_len=shapes[0][-2],
        kv_len=shapes[2][-2],
        empty=any(0 in s for s in shapes),
        masked=any(m is not None for m in (masks.value, masks.key, masks.attention)),
        dtype=_validation.dtype_name(value.dtype),
        **options,
    )


def _causal_offset(causal, causal_alignment, query, key):
    """None when not causal; else the offset of `_masks.causal_mask`."""
    if not causal:
        return None
    if causal_alignment == "top_left":
        return 0
    q_len, kv_len = query.shape[-2], key.shape[-2]
    if isinstance(q_len, int) and isinstance(kv_len, int):
        return kv_len - q_len
    return ops.shape(key)[-2] - ops.shape(query)[-2]
