"""Models written for TF 2.x's `tf.keras.layers.Attention`, only the import swapped.

A recommender-like model: a learned query head `(1, H, D)` (one query per
user interest, shared by every example) attends over the embeddings of the
items a user saw, `(B, T, D)`, padded with id 0 (`Embedding(mask_zero=True)`
supplies the value mask). Written once as a functional model and once
subclassed; each is trained with `fit`, saved as `.keras`, reloaded, and must
predict the same.
"""

import keras
import numpy as np
import pytest

from luong_attention import LuongAttention as Attention
from tests.helpers import to_numpy

NUM_ITEMS, SEQUENCE_LENGTH, DIM, NUM_INTERESTS = 20, 6, 8, 2
LIKED_ITEM = 7


@keras.saving.register_keras_serializable(package="tests")
class InterestQueries(keras.layers.Layer):
    """`num_interests` learned queries, returned as `(1, num_interests, dim)`."""

    def __init__(self, num_interests, **kwargs):
        super().__init__(**kwargs)
        self.num_interests = num_interests

    def build(self, input_shape):
        self.queries = self.add_weight(
            name="queries", shape=(self.num_interests, input_shape[-1]), initializer="normal"
        )

    def call(self, items):
        # `items` only fixes the dtype; the queries are the same for every example.
        return keras.ops.expand_dims(keras.ops.cast(self.queries, items.dtype), 0)

    def compute_output_shape(self, input_shape):
        return (1, self.num_interests, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "num_interests": self.num_interests}


def functional_recommender():
    item_ids = keras.Input(shape=(SEQUENCE_LENGTH,), dtype="int32")
    items = keras.layers.Embedding(NUM_ITEMS, DIM, mask_zero=True)(item_ids)
    queries = InterestQueries(NUM_INTERESTS)(items)
    interests = Attention(use_scale=True)([queries, items])
    flat = keras.layers.Flatten()(interests)
    return keras.Model(item_ids, keras.layers.Dense(1, activation="sigmoid")(flat))


@keras.saving.register_keras_serializable(package="tests")
class SubclassedRecommender(keras.Model):
    def __init__(self, num_items=NUM_ITEMS, dim=DIM, num_interests=NUM_INTERESTS, **kwargs):
        super().__init__(**kwargs)
        self.num_items, self.dim, self.num_interests = num_items, dim, num_interests
        self.embedding = keras.layers.Embedding(num_items, dim, mask_zero=True)
        self.interest_queries = InterestQueries(num_interests)
        self.attention = Attention(use_scale=True)
        self.flatten = keras.layers.Flatten()
        self.classifier = keras.layers.Dense(1, activation="sigmoid")

    def call(self, item_ids):
        items = self.embedding(item_ids)
        padding = self.embedding.compute_mask(item_ids)
        interests = self.attention([self.interest_queries(items), items], mask=[None, padding])
        return self.classifier(self.flatten(interests))

    def get_config(self):
        return {
            **super().get_config(),
            "num_items": self.num_items,
            "dim": self.dim,
            "num_interests": self.num_interests,
        }


def _clicks(num_users=64, seed=0):
    """Histories padded with 0 at the end; the label: the user saw `LIKED_ITEM`."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, NUM_ITEMS, (num_users, SEQUENCE_LENGTH)).astype("int32")
    lengths = rng.integers(1, SEQUENCE_LENGTH + 1, num_users)
    ids[np.arange(SEQUENCE_LENGTH) >= lengths[:, None]] = 0
    labels = (ids == LIKED_ITEM).any(axis=1).astype("float32")[:, None]
    return ids, labels


@pytest.mark.parametrize("build", [functional_recommender, SubclassedRecommender])
def test_train_save_reload(build, tmp_path):
    keras.utils.set_random_seed(0)
    ids, labels = _clicks()
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    history = model.fit(ids, labels, batch_size=16, epochs=4, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]

    predictions = to_numpy(model.predict(ids, verbose=0))
    assert predictions.shape == (len(ids), 1)
    path = tmp_path / "recommender.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_numpy(reloaded.predict(ids, verbose=0)), predictions, atol=1e-6)
    attention = next(layer for layer in reloaded.layers if isinstance(layer, Attention))
    assert attention.get_config()["use_scale"] is True


@pytest.mark.parametrize("build", [functional_recommender, SubclassedRecommender])
def test_padding_is_masked(build):
    """The Embedding's mask reaches the attention: the padding id's vector is never seen."""
    keras.utils.set_random_seed(0)
    ids, _ = _clicks(num_users=8)
    assert (ids == 0).any()
    model = build()
    before = to_numpy(model(ids))
    embedding = next(layer for layer in model.layers if isinstance(layer, keras.layers.Embedding))
    table = embedding.get_weights()[0]
    embedding.set_weights([np.where(np.arange(NUM_ITEMS)[:, None] == 0, table + 5.0, table)])
    np.testing.assert_allclose(to_numpy(model(ids)), before, atol=1e-6)
    embedding.set_weights([table + 5.0])  # every item moves: the output must too
    assert not np.allclose(to_numpy(model(ids)), before, atol=1e-3)
