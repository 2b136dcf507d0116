"""Drop-in parity with keras.layers.Attention on ordinary inputs.

"Ordinary" means every query row has at least one key to attend to: there
Keras's results are right, and LuongAttention must match them to 1e-5.
"""

import itertools

import keras
import numpy as np
import pytest

from luong_attention import LuongAttention
from tests.helpers import to_numpy

B, TQ, TV, D = 3, 5, 7, 4


def _inputs(seed, with_key):
    rng = np.random.default_rng(seed)
    query = rng.standard_normal((B, TQ, D)).astype("float32")
    # The value dim may differ from the query/key dim when a key is given.
    value_dim = D + 2 if with_key else D
    value = rng.standard_normal((B, TV, value_dim)).astype("float32")
    key = rng.standard_normal((B, TV, D)).astype("float32") if with_key else None
    query_mask = rng.random((B, TQ)) > 0.3
    value_mask = rng.random((B, TV)) > 0.3
    value_mask[:, 0] = True  # key 0 stays visible: no fully-masked row
    return query, value, key, query_mask, value_mask


def _set_weights(ours, theirs, rng):
    values = [rng.uniform(0.5, 1.5, size=w.shape).astype("float32") for w in theirs.weights]
    theirs.set_weights(values)
    ours.set_weights(values)


CASES = list(
    itertools.product(
        ["dot", "concat"],  # score_mode
        [False, True],  # use_scale
        [False, True],  # key given
        [False, True],  # masks
        [False, True],  # causal
    )
)


@pytest.mark.parametrize(
    "score_mode,use_scale,with_key,with_masks,causal",
    CASES,
    ids=["-".join(map(str, c)) for c in CASES],
)
def test_matches_keras_attention(score_mode, use_scale, with_key, with_masks, causal):
    query, value, key, query_mask, value_mask = _inputs(0, with_key)
    inputs = [query, value] + ([key] if with_key else [])
    mask = [query_mask, value_mask] if with_masks else None
    ours = LuongAttention(use_scale=use_scale, score_mode=score_mode)
    theirs = keras.layers.Attention(use_scale=use_scale, score_mode=score_mode)
    kwargs = dict(mask=mask, return_attention_scores=True, use_causal_mask=causal)
    ours(inputs, **kwargs), theirs(inputs, **kwargs)  # build both
    _set_weights(ours, theirs, np.random.default_rng(1))

    out, weights = ours(inputs, **kwargs)
    expected_out, expected_weights = theirs(inputs, **kwargs)
    np.testing.assert_allclose(to_numpy(out), to_numpy(expected_out), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(weights), to_numpy(expected_weights), atol=1e-5, rtol=1e-5)


def test_same_weights_names_order_shapes():
    shapes = [(2, 3, 4), (2, 5, 4)]
    for kwargs in [{}, {"use_scale": True}, {"score_mode": "concat", "use_scale": True}]:
        ours, theirs = LuongAttention(**kwargs), keras.layers.Attention(**kwargs)
        ours.build(shapes)
        theirs.build(shapes)
        assert [(w.name, tuple(w.shape), w.trainable) for w in ours.weights] == [
            (w.name, tuple(w.shape), w.trainable) for w in theirs.weights
        ]


def _model_of(cls):
    query = keras.Input(shape=(3, 4))
    value = keras.Input(shape=(5, 4))
    first = cls(use_scale=True, score_mode="concat")([query, value])
    second = cls(use_scale=True)([first, value])
    return keras.Model([query, value], keras.layers.Dense(2)(second))


def _random_weights_and_inputs(model):
    rng = np.random.default_rng(0)
    model.set_weights([rng.standard_normal(w.shape) for w in model.weights])
    return [rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))]


def test_keras_weight_file_loads_after_swapping_the_class(tmp_path):
    source = _model_of(keras.layers.Attention)
    inputs = _random_weights_and_inputs(source)
    path = str(tmp_path / "model.weights.h5")
    source.save_weights(path)
    target = _model_of(LuongAttention)
    target.load_weights(path)
    np.testing.assert_allclose(
        to_numpy(target(inputs)), to_numpy(source(inputs)), atol=1e-5, rtol=1e-5
    )


def test_weights_transfer_back_to_keras_attention_in_order():
    source = _model_of(LuongAttention)
    inputs = _random_weights_and_inputs(source)
    target = _model_of(keras.layers.Attention)
    target.set_weights(source.get_weights())
    np.testing.assert_allclose(
        to_numpy(target(inputs)), to_numpy(source(inputs)), atol=1e-5, rtol=1e-5
    )


def test_from_keras_attention_config():
    config = keras.layers.Attention(
        use_scale=True, score_mode="concat", dropout=0.25, seed=3, name="att"
    ).get_config()
    layer = LuongAttention.from_config(config)
    assert (layer.use_scale, layer.score_mode, layer.dropout, layer.seed, layer.name) == (
        True,
        "concat",
        0.25,
        3,
        "att",
    )


def test_dropout_matches_keras_with_the_same_seed():
    query, value, _, _, _ = _inputs(0, with_key=False)
    ours = LuongAttention(dropout=0.4, seed=7)
    theirs = keras.layers.Attention(dropout=0.4, seed=7)
    out, weights = ours([query, value], training=True, return_attention_scores=True)
    expected_out, expected_weights = theirs(
        [query, value], training=True, return_attention_scores=True
    )
    np.testing.assert_allclose(to_numpy(weights), to_numpy(expected_weights), atol=1e-6)
    np.testing.assert_allclose(to_numpy(out), to_numpy(expected_out), atol=1e-5)


def test_dropout_only_in_training():
    query, value, _, _, _ = _inputs(0, with_key=False)
    plain = to_numpy(LuongAttention()([query, value]))
    layer = LuongAttention(dropout=0.5, seed=0)
    for training in (None, False):
        np.testing.assert_array_equal(to_numpy(layer([query, value], training=training)), plain)
    _, weights = layer([query, value], training=True, return_attention_scores=True)
    weights = to_numpy(weights)
    assert (weights == 0).any()
    # Kept weights are scaled by 1 / (1 - rate), as in keras.random.dropout.
    _, exact = LuongAttention()([query, value], return_attention_scores=True)
    kept = weights != 0
    np.testing.assert_allclose(weights[kept], to_numpy(exact)[kept] / 0.5, rtol=1e-5)


def test_dropout_in_fit_is_on_and_in_predict_off():
    query, value, _, _, _ = _inputs(0, with_key=False)
    q_in, v_in = keras.Input(shape=(TQ, D)), keras.Input(shape=(TV, D))
    model = keras.Model([q_in, v_in], LuongAttention(dropout=0.5, seed=1)([q_in, v_in]))
    plain = to_numpy(LuongAttention()([query, value]))
    np.testing.assert_allclose(model.predict([query, value], verbose=0), plain, atol=1e-6)
    model.compile(optimizer="sgd", loss="mse")
    # With all weights kept the loss against `plain` would be ~0.
    loss = model.train_on_batch([query, value], plain)
    assert float(np.asarray(loss)) > 1e-3
