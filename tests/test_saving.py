"""Config, serialization and `.keras` files."""

import inspect

import keras
import numpy as np
import pytest

from luong_attention import LuongAttention
from tests.helpers import run_layer_test, to_numpy

NON_DEFAULT = {
    "use_scale": True,
    "score_mode": "general",
    "dropout": 0.3,
    "seed": 42,
    "causal": True,
    "causal_alignment": "bottom_right",
    "implementation": "reference",
    "skip_padded_keys": True,
    "nan_safe_padding": True,
}


def test_get_config_holds_every_constructor_argument():
    params = inspect.signature(LuongAttention.__init__).parameters
    arguments = [p for p in params if p not in ("self", "kwargs")]
    assert sorted(arguments) == sorted(NON_DEFAULT)
    config = LuongAttention(**NON_DEFAULT, name="att").get_config()
    assert {k: config[k] for k in NON_DEFAULT} == NON_DEFAULT
    assert config["name"] == "att"
    restored = LuongAttention.from_config(config)
    assert restored.get_config() == config


def test_registered_for_saving_under_the_package_name():
    assert keras.saving.get_registered_name(LuongAttention) == "luong_attention>LuongAttention"
    assert keras.saving.get_registered_object("luong_attention>LuongAttention") is LuongAttention


def test_serialize_deserialize():
    layer = LuongAttention(**NON_DEFAULT)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, LuongAttention)
    assert restored.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "init_kwargs,num_weights",
    [
        ({}, 0),
        ({"use_scale": True}, 1),
        ({"use_scale": True, "score_mode": "concat"}, 2),
        ({"use_scale": True, "score_mode": "general", "causal": True}, 2),
        ({"dropout": 0.2, "seed": 1, "causal_alignment": "bottom_right"}, 0),
    ],
)
def test_run_layer_test(tmp_path, init_kwargs, num_weights):
    run_layer_test(
        LuongAttention,
        init_kwargs=init_kwargs,
        input_shape=[(2, 3, 4), (2, 5, 4)],
        expected_output_shape=(2, 3, 4),
        expected_num_trainable_weights=num_weights,
        expected_num_non_trainable_weights=0,
        expected_num_seed_generators=1 if init_kwargs.get("dropout") else 0,
        expected_num_losses=0,
        supports_masking=True,
        saving_dir=tmp_path,
    )


def test_keras_file_round_trips_exactly_with_masks_and_trained_weights(tmp_path):
    tokens = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(20, 8, mask_zero=True)(tokens)
    x = LuongAttention(use_scale=True, score_mode="general", causal=True)([x, x])
    model = keras.Model(tokens, keras.layers.Dense(3)(x))
    rng = np.random.default_rng(0)
    model.set_weights([rng.standard_normal(w.shape) for w in model.weights])
    data = np.array([[4, 9, 2, 0], [1, 0, 0, 0]])
    expected = to_numpy(model(data))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded(data)), expected)
    layer = [layer for layer in loaded.layers if isinstance(layer, LuongAttention)][0]
    assert layer.causal and layer.score_mode == "general"
