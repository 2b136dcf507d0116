"""A two-minute look at LuongAttention on whichever backend KERAS_BACKEND names.

Runs the layer beside keras.layers.Attention on the same inputs, shows what
each does with a fully-masked query row, and trains a tiny model for a few
steps.
"""

import os

# TensorFlow's C++ INFO/WARNING lines; set before keras imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from luong_attention import LuongAttention  # noqa: E402

rng = np.random.default_rng(0)
query = rng.normal(size=(2, 4, 8)).astype("float32")
value = rng.normal(size=(2, 6, 8)).astype("float32")
value_mask = np.ones((2, 6), bool)
value_mask[1] = False  # the second example has no valid key at all

print(f"Keras {keras.__version__} on the {keras.backend.backend()} backend\n")

ours, our_weights = LuongAttention(use_scale=True)(
    [query, value], mask=[None, value_mask], return_attention_scores=True
)
theirs, their_weights = keras.layers.Attention(use_scale=True)(
    [query, value], mask=[None, value_mask], return_attention_scores=True
)
ours, theirs = keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs)
print(
    "example 0 (ordinary): max |LuongAttention - keras Attention| =",
    f"{np.abs(ours[0] - theirs[0]).max():.2e}",
)
print("example 1 (every key masked):")
print("  LuongAttention row sums of weights:", keras.ops.convert_to_numpy(our_weights)[1].sum(-1))
print(
    "  keras Attention row sums of weights:", keras.ops.convert_to_numpy(their_weights)[1].sum(-1)
)
print("  (Keras spreads the weight over masked keys; LuongAttention gives zeros)\n")

# A tiny sequence model: embed tokens, attend causally over the past, and
# predict the next token of a counting sequence (each token is the last + 1).
tokens = keras.Input(shape=(None,), dtype="int32")
x = keras.layers.Embedding(50, 32, mask_zero=True)(tokens)
context = LuongAttention(use_scale=True, causal=True)([x, x])
logits = keras.layers.Dense(50)(keras.layers.Concatenate()([x, context]))
model = keras.Model(tokens, logits)
model.compile(
    optimizer=keras.optimizers.Adam(0.01),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
)
start = rng.integers(1, 50, size=(512, 1))
data = (start + np.arange(12) - 1) % 49 + 1
history = model.fit(data[:, :-1], data[:, 1:], epochs=5, batch_size=32, verbose=2)
print("\nloss per epoch:", [round(v, 3) for v in history.history["loss"]])
