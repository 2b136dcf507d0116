"""`LuongAttention`: a drop-in for `keras.layers.Attention`."""

import keras
from keras import ops

from luong_attention import _validation, functional

# Version of the dict `get_config` writes, saved under "config_version".
# 0: no "config_version" key: this package before versioning, and the config
#    of `keras.layers.Attention` (same keys; missing ones take defaults).
# 1: adds "config_version".
# 2: adds "skip_padded_keys".
# 3: adds "nan_safe_padding" (before it, padded keys and values were always
#    zeroed).
# `from_config` reads every version up to this one; to change the config,
# bump it and add a step to `_MIGRATIONS` that turns the previous one into it.
CONFIG_VERSION = 3


@keras.saving.register_keras_serializable(package="luong_attention")
class LuongAttention(keras.layers.Layer):
    """Dot-product attention layer, a.k.a. Luong-style attention.

    A drop-in for `keras.layers.Attention` (same arguments, weights, config
    and results on ordinary inputs) that also handles fully-masked rows, key
    masks, masks on inputs with extra batch dims (such as heads), bottom-right
    causal alignment, Luong's "general" score, and float16/bfloat16.

    Inputs are a list (or tuple) `[query, value]` or `[query, value, key]`:

    1. `query` of shape `(batch_size, Tq, dim)`;
    2. `value` of shape `(batch_size, Tv, dim_v)`;
    3. optional `key` of shape `(batch_size, Tv, dim)`; `value` when omitted.

    Any number of leading batch dims is accepted, e.g.
    `(batch_size, heads, T, dim)`, and batch dims broadcast as in NumPy: a
    learned `(1, Tq, dim)` query attends over every sequence of a
    `(batch_size, Tv, dim)` value. Rank-2 inputs `(T, dim)` have no batch
    dim, as in `keras.layers.Attention`. The layer computes scores
    `(batch_size, Tq, Tv)` from `query` and `key`, takes their softmax over
    the keys in float32, and returns the weighted sum of `value`.

    Args:
        use_scale: If `True`, creates a trainable scalar weight `scale`
            (initialised to 1) that multiplies the scores. Flags take any
            Python or NumPy bool or number, as in `keras.layers.Attention`.
        score_mode: How scores are computed: `"dot"` (`query . key`),
            `"general"` (`query . W_a . key` with a learned
            `(dim, dim_k)` matrix `W_a`, so query and key dims may differ) or
            `"concat"` (`w * sum(tanh(query + key))`, as in
            `keras.layers.Attention`).
        dropout: Float in `[0, 1)`. Fraction of the attention weights to drop
            in training. Defaults to `0.0`.
        seed: Python integer, seed of the dropout.
        causal: Default for the call argument `use_causal_mask` (the
            argument of TF 2.x's `tf.keras.layers.Attention`).
        causal_alignment: `"top_left"` (query i sees keys j <= i, as in
            Keras, PyTorch and JAX) or `"bottom_right"` (j <= i + Tv - Tq,
            for decoding against a cache of earlier keys).
        implementation: Which code path computes the attention: `"auto"`
            (default: the fastest path that supports the call's options),
            `"reference"` (materialises the scores; supports everything),
            `"fused"` (`keras.ops.dot_product_attention`) or `"blocked"`
            (row blocks, causal blocks skipped, O(T) memory). All paths give
            the same results; `"fused"` and `"blocked"` do not support
            `score_mode="concat"`, dropout in training or
            `return_attention_scores=True`, and a model that asks for them
            fails when it is built. `"auto"` honours
            `keras.config.disable_flash_attention()` (never the fused path)
            and `enable_flash_attention()` (the fused path wherever it can).
        skip_padded_keys: If `True`, each sequence of the batch is computed
            only up to its last key that the value or key mask leaves
            visible and its last query row that the query mask keeps (in
            blocks of 64), so a long padded batch costs about its real
            tokens; results are those computed in full, up to float
            rounding. It reads the masks' values, so it skips in eager
            calls only (PyTorch's default, or `run_eagerly=True`); traced
            calls (exports included) and calls of little work compute in
            full. Defaults to `False`.
        nan_safe_padding: If `True`, the keys and values that the value or
            key mask hides are zeroed before any arithmetic, so a NaN or inf
            in padding never reaches the output or the gradients. That is
            one more pass over the keys and the values, which short
            sequences notice. If `False`, a NaN or inf in padding reaches
            the output as it does in `keras.layers.Attention`. Defaults to
            `False`.
        **kwargs: Base layer arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: List `[query, value]` or `[query, value, key]`.
        mask: List `[query_mask, value_mask]` or
            `[query_mask, value_mask, key_mask]` of boolean tensors of shape
            `(batch_size, Tq)`, `(batch_size, Tv)`, `(batch_size, Tv)` (or
            the full leading dims of their input followed by the time dim).
            Output rows where `query_mask` is False are zero; keys where
            `value_mask` or `key_mask` is False get no weight. Filled in
            automatically from `Embedding(mask_zero=True)`.
        training: Whether dropout is applied.
        return_attention_scores: If `True`, also return the attention weights
            (after masking and softmax).
        use_causal_mask: If `True`, query i attends only to earlier keys (see
            `causal_alignment`). Defaults to the constructor's `causal`.
        attention_mask: Optional boolean tensor broadcastable to
            `(batch_size, Tq, Tv)`, ANDed with the other masks.

    Returns:
        The attention output of shape `(batch_size, Tq, dim_v)`, and with
        `return_attention_scores=True` also the weights of shape
        `(batch_size, Tq, Tv)`. A query row with nothing to attend to gets
        zero weights and a zero output.

    Examples:

    >>> query = keras.random.normal((2, 3, 8))
    >>> value = keras.random.normal((2, 5, 8))
    >>> output, weights = LuongAttention()(
    ...     [query, value], return_attention_scores=True)
    >>> tuple(output.shape), tuple(weights.shape)
    ((2, 3, 8), (2, 3, 5))

    Reference:
        Luong, Pham, Manning (2015). Effective Approaches to Attention-based
        Neural Machine Translation. https://arxiv.org/abs/1508.04025
    """

    def __init__(
        self,
        use_scale=False,
        score_mode="dot",
        dropout=0.0,
        seed=None,
        causal=False,
        causal_alignment="top_left",
        implementation="auto",
        skip_padded_keys=False,
        nan_safe_padding=False,
        **kwargs,
    ):
        use_scale = _validation.as_flag(use_scale, "use_scale")
        causal = _validation.as_flag(causal, "causal")
        skip_padded_keys = _validation.as_flag(skip_padded_keys, "skip_padded_keys")
        nan_safe_padding = _validation.as_flag(nan_safe_padding, "nan_safe_padding")
        _validation.check_option("score_mode", score_mode, _validation.SCORE_MODES)
        _validation.check_option(
            "causal_alignment", causal_alignment, _validation.CAUSAL_ALIGNMENTS
        )
        _validation.check_option("implementation", implementation, _validation.IMPLEMENTATIONS)
        dropout = _validation.as_dropout(dropout)
        seed = _validation.as_seed(seed)
        super().__init__(**kwargs)
        self.use_scale = use_scale
        self.score_mode = score_mode
        self.dropout = dropout
        self.seed = seed
        self.causal = causal
        self.causal_alignment = causal_alignment
        self.implementation = implementation
        self.skip_padded_keys = skip_padded_keys
        self.nan_safe_padding = nan_safe_padding
        self.seed_generator = keras.random.SeedGenerator(seed=seed) if dropout > 0 else None
        self.scale = None
        self.concat_score_weight = None
        self.general_score_weight = None
        self.supports_masking = True

    def build(self, input_shape):
        query_shape, _, key_shape = _shapes(self.__class__.__name__, input_shape)
        if self.use_scale:
            self.scale = self._scalar_weight("scale")
        if self.score_mode == "concat":
            self.concat_score_weight = self._scalar_weight("concat_score_weight")
        if self.score_mode == "general":
            dims = (query_shape[-1], key_shape[-1])
            if None in dims:
                raise ValueError(
                    "score_mode='general' needs the last dims of query and key "
                    f"to be known when the layer is built. Received: input_shape={input_shape}"
                )
            self.general_score_weight = self.add_weight(
                name="general_score_weight",
                shape=dims,
                initializer="glorot_uniform",
                dtype=self.dtype,
                trainable=True,
            )

    def _scalar_weight(self, name):
        return self.add_weight(
            name=name, shape=(), initializer="ones", dtype=self.dtype, trainable=True
        )

    def call(
        self,
        inputs,
        mask=None,
        training=None,
        return_attention_scores=False,
        use_causal_mask=None,
        attention_mask=None,
    ):
        _validation.check_call_lists(self.__class__.__name__, inputs, mask)
        query_mask, value_mask, key_mask = (*(mask or ()), None, None, None)[:3]
        if use_causal_mask is None:
            use_causal_mask = self.causal
        return functional.luong_attention(
            inputs[0],
            inputs[1],
            inputs[2] if len(inputs) == 3 else None,
            query_mask=query_mask,
            value_mask=value_mask,
            key_mask=key_mask,
            attention_mask=attention_mask,
            causal=_validation.as_flag(use_causal_mask, "use_causal_mask"),
            causal_alignment=self.causal_alignment,
            score_mode=self.score_mode,
            # The weights' values (what any op on them reads, autocast
            # included), taken once: each op on a variable converts it again.
            scale=_value(self.scale),
            concat_score_weight=_value(self.concat_score_weight),
            general_score_weight=_value(self.general_score_weight),
            dropout=self.dropout,
            seed=self.seed_generator,
            training=training,
            return_attention_scores=return_attention_scores,
            implementation=self.implementation,
            skip_padded_keys=self.skip_padded_keys,
            nan_safe_padding=self.nan_safe_padding,
        )

    def compute_mask(self, inputs, mask=None):
        _validation.check_call_lists(self.__class__.__name__, inputs, mask)
        if not mask or mask[0] is None:
            return None
        return ops.convert_to_tensor(mask[0])

    def compute_output_shape(self, input_shape):
        query_shape, value_shape, key_shape = _shapes(self.__class__.__name__, input_shape)
        batch = _validation.broadcast_batch_shape(
            query_shape[:-2], value_shape[:-2], key_shape[:-2]
        )
        return (*(batch or query_shape[:-2]), query_shape[-2], value_shape[-1])

    def compute_output_spec(
        self,
        inputs,
        mask=None,
        training=None,
        return_attention_scores=False,
        use_causal_mask=None,
        attention_mask=None,
    ):
        _validation.check_call_lists(self.__class__.__name__, inputs, mask)
        query, value = inputs[0], inputs[1]
        key = inputs[2] if len(inputs) == 3 else value
        batch = _validation.check_inputs(query, value, key, self.score_mode)
        return_attention_scores = _validation.as_flag(
            return_attention_scores, "return_attention_scores"
        )
        if self.implementation != "auto":
            # A named path that cannot compute the call fails here, when the
            # model is built, not at its first call.
            functional.check_implementation(
                self.implementation,
                score_mode=self.score_mode,
                dropout_active=bool(training) and self.dropout > 0,
                return_attention_scores=return_attention_scores,
            )
        output = keras.KerasTensor(
            (*batch, query.shape[-2], value.shape[-1]), dtype=self.compute_dtype
        )
        if not return_attention_scores:
            return output
        weights = keras.KerasTensor(
            (*batch, query.shape[-2], key.shape[-2]), dtype=self.compute_dtype
        )
        return output, weights

    def load_own_variables(self, store):
        if self.weights and len(store) == 0:
            store = _keras_attention_entry(store) or store
        super().load_own_variables(store)

    def get_config(self):
        config = {
            "use_scale": self.use_scale,
            "score_mode": self.score_mode,
            "dropout": self.dropout,
            "seed": self.seed,
            "causal": self.causal,
            "causal_alignment": self.causal_alignment,
            "implementation": self.implementation,
            "skip_padded_keys": self.skip_padded_keys,
            "nan_safe_padding": self.nan_safe_padding,
            "config_version": CONFIG_VERSION,
        }
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config):
        if not isinstance(config, dict):
            raise TypeError(
                f"Invalid type for argument config. Expected a dict. Received: config={config!r}"
            )
        config = dict(config)
        version = config.pop("config_version", 0)
        if isinstance(version, bool) or not isinstance(version, int):
            raise TypeError(
                "Invalid type for config_version. Expected an int. "
                f"Received: config_version={version!r}"
            )
        if not 0 <= version <= CONFIG_VERSION:
            raise ValueError(
                f"Invalid value for config_version. This version of luong_attention "
                f"reads config versions 0 to {CONFIG_VERSION}; a newer one wrote this "
                f"config. Received: config_version={version}"
            )
        for migrate in _MIGRATIONS[version:]:
            config = migrate(config)
        return super().from_config(config)


def _from_version_0(config):
    """Version 0 had the same keys; only `config_version` was added."""
    return config


def _from_version_1(config):
    """Version 2 added `skip_padded_keys`; older layers computed every key."""
    return {"skip_padded_keys": False, **config}


def _from_version_2(config):
    """Version 3 added `nan_safe_padding`; older layers always zeroed padding."""
    return {"nan_safe_padding": True, **config}


# `_MIGRATIONS[n]` turns a version-n config into a version-(n + 1) one.
_MIGRATIONS = (_from_version_0, _from_version_1, _from_version_2)


def _keras_attention_entry(store):
    """This layer's weights in a file written by `keras.layers.Attention`.

    Keras keys a weight file by the snake-cased class name of each layer, so
    weights saved from a model holding `keras.layers.Attention` sit under
    `.../attention` (`attention_1`, ...) where this class looks under
    `.../luong_attention`. When the own entry is empty, look there instead, so
    that a model's `save_weights` file loads after swapping the class. Returns
    `None` when the store cannot be searched or holds no such entry.
    """
    path = getattr(store, "_h5_entry_path", None)
    if not isinstance(path, str) or not hasattr(store, "get"):
        return None
    head, _, leaf = path.rpartition("/")
    if not leaf.startswith("luong_attention"):
        return None
    entry = store.get(f"{head}/{leaf.replace('luong_attention', 'attention', 1)}")
    return entry if len(entry) else None


def _value(weight):
    return None if weight is None else weight.value


def _shapes(class_name, input_shape):
    """`(query_shape, value_shape, key_shape)` from `[query_shape, value_shape(, key_shape)]`."""
    if not isinstance(input_shape, (list, tuple)) or not all(
        s is None or isinstance(s, (list, tuple)) for s in input_shape
    ):
        raise ValueError(
            f"{class_name} layer must be called on a list of inputs, [query, value] or "
            f"[query, value, key]. Received inputs of shape: {input_shape}."
        )
    _validation.check_call_lists(class_name, input_shape, None)
    query, value, *rest = input_shape
    key = rest[0] if rest and rest[0] is not None else value
    # A None input fails the call's own checks, with a clearer message.
    return tuple(tuple(s) if s is not None else (None,) for s in (query, value, key))
