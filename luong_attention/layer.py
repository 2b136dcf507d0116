"""`LuongAttention`: a drop-in for `keras.layers.Attention`."""

import keras
from keras import ops

from luong_attention import functional

# Version of the dict `get_config` writes, saved under "config_version".
# 0: no "config_version" key: this package before versioning, and the config
#    of `keras.layers.Attention` (same keys; missing ones take defaults).
# 1: adds "config_version".
# `from_config` reads every version up to this one; to change the config,
# bump it and add a step to `_MIGRATIONS` that turns the previous one into it.
CONFIG_VERSION = 1


@keras.saving.register_keras_serializable(package="luong_attention")
class LuongAttention(keras.layers.Layer):
    """Dot-product attention layer, a.k.a. Luong-style attention.

    A drop-in for `keras.layers.Attention` (same arguments, weights, config
    and results on ordinary inputs) that also handles fully-masked rows, key
    masks, masks on inputs with extra batch dims (such as heads), bottom-right
    causal alignment, Luong's "general" score, and float16/bfloat16.

    Inputs are a list `[query, value]` or `[query, value, key]`:

    1. `query` of shape `(batch_size, Tq, dim)`;
    2. `value` of shape `(batch_size, Tv, dim_v)`;
    3. optional `key` of shape `(batch_size, Tv, dim)`; `value` when omitted.

    Any number of leading batch dims is accepted, e.g.
    `(batch_size, heads, T, dim)`. The layer computes scores
    `(batch_size, Tq, Tv)` from `query` and `key`, takes their softmax over
    the keys, and returns the weighted sum of `value`.

    Args:
        use_scale: If `True`, creates a trainable scalar weight `scale`
            (initialised to 1) that multiplies the scores.
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
            `return_attention_scores=True`.
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

    Example:

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
        **kwargs,
    ):
        functional.check_options(score_mode, causal_alignment, implementation)
        functional.check_dropout(dropout)
        for name, flag in (("use_scale", use_scale), ("causal", causal)):
            if not isinstance(flag, bool):
                raise TypeError(
                    f"Invalid type for argument {name}. Expected a bool. Received: {name}={flag!r}"
                )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(
                f"Invalid type for argument seed. Expected an int or None. Received: seed={seed!r}"
            )
        super().__init__(**kwargs)
        self.use_scale = use_scale
        self.score_mode = score_mode
        self.dropout = dropout
        self.seed = seed
        self.causal = causal
        self.causal_alignment = causal_alignment
        self.implementation = implementation
        if self.dropout > 0:
            self.seed_generator = keras.random.SeedGenerator(seed=seed)
        self.supports_masking = True

    def build(self, input_shape):
        self._validate_inputs(input_shape)
        self.scale = None
        self.concat_score_weight = None
        self.general_score_weight = None
        if self.use_scale:
            self.scale = self.add_weight(
                name="scale",
                shape=(),
                initializer="ones",
                dtype=self.dtype,
                trainable=True,
            )
        if self.score_mode == "concat":
            self.concat_score_weight = self.add_weight(
                name="concat_score_weight",
                shape=(),
                initializer="ones",
                dtype=self.dtype,
                trainable=True,
            )
        if self.score_mode == "general":
            query_dim = input_shape[0][-1]
            key_dim = input_shape[-1][-1]
            if query_dim is None or key_dim is None:
                raise ValueError(
                    "score_mode='general' needs the last dims of query and key "
                    "to be known when the layer is built. Received: "
                    f"input_shape={input_shape}"
                )
            self.general_score_weight = self.add_weight(
                name="general_score_weight",
                shape=(query_dim, key_dim),
                initializer="glorot_uniform",
                dtype=self.dtype,
                trainable=True,
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
        self._validate_inputs(inputs, mask)
        query, value = inputs[0], inputs[1]
        key = inputs[2] if len(inputs) > 2 else None
        masks = list(mask) if mask else []
        masks += [None] * (3 - len(masks))
        if use_causal_mask is None:
            use_causal_mask = self.causal
        functional.check_flags(use_causal_mask=use_causal_mask)
        return functional.luong_attention(
            query,
            value,
            key,
            query_mask=masks[0],
            value_mask=masks[1],
            key_mask=masks[2],
            attention_mask=attention_mask,
            causal=bool(use_causal_mask),
            causal_alignment=self.causal_alignment,
            score_mode=self.score_mode,
            scale=self.scale,
            concat_score_weight=self.concat_score_weight,
            general_score_weight=self.general_score_weight,
            dropout=self.dropout,
            seed=self.seed_generator if self.dropout > 0 else None,
            training=bool(training),
            return_attention_scores=return_attention_scores,
            implementation=self.implementation,
        )

    def compute_mask(self, inputs, mask=None):
        self._validate_inputs(inputs, mask)
        if mask is None or mask[0] is None:
            return None
        return ops.convert_to_tensor(mask[0])

    def compute_output_shape(self, input_shape):
        query_shape, value_shape = input_shape[0], input_shape[1]
        return (*query_shape[:-1], value_shape[-1])

    def compute_output_spec(
        self,
        inputs,
        mask=None,
        training=None,
        return_attention_scores=False,
        use_causal_mask=None,
        attention_mask=None,
    ):
        self._validate_inputs(inputs, mask)
        query, value = inputs[0], inputs[1]
        key = inputs[2] if len(inputs) > 2 else value
        functional.check_inputs(query, value, key, self.score_mode)
        output = keras.KerasTensor(
            self.compute_output_shape([query.shape, value.shape]),
            dtype=self.compute_dtype,
        )
        if not return_attention_scores:
            return output
        weights = keras.KerasTensor((*query.shape[:-1], key.shape[-2]), dtype=self.compute_dtype)
        return output, weights

    def _validate_inputs(self, inputs, mask=None):
        """Checks the list structure of `inputs` and `mask`, as Keras does."""
        class_name = self.__class__.__name__
        if not isinstance(inputs, list):
            raise ValueError(
                f"{class_name} layer must be called on a list of inputs, "
                "namely [query, value] or [query, value, key]. "
                f"Received: inputs={inputs}."
            )
        if len(inputs) < 2 or len(inputs) > 3:
            raise ValueError(
                f"{class_name} layer accepts inputs list of length 2 or 3, "
                "namely [query, value] or [query, value, key]. "
                f"Received length: {len(inputs)}."
            )
        if mask is not None:
            if not isinstance(mask, list):
                raise ValueError(
                    f"{class_name} layer mask must be a list, "
                    f"namely [query_mask, value_mask]. Received: mask={mask}."
                )
            if len(mask) < 2 or len(mask) > 3:
                raise ValueError(
                    f"{class_name} layer accepts mask list of length 2 or 3, "
                    "namely [query_mask, value_mask] or "
                    "[query_mask, value_mask, key_mask]. "
                    f"Received length: {len(mask)}."
                )

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


# `_MIGRATIONS[n]` turns a version-n config into a version-(n + 1) one.
_MIGRATIONS = (_from_version_0,)


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
