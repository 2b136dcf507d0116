"""Config loading: versioned configs, older `.keras` files, and bad configs."""

import pathlib
import re

import keras
import numpy as np
import pytest

from luong_attention import LuongAttention
from luong_attention.layer import CONFIG_VERSION
from tests.helpers import to_numpy

DATA = pathlib.Path(__file__).parent / "data"
FIXTURES = sorted(DATA.glob("luong_attention_v*.keras"))


def test_get_config_writes_the_current_version():
    config = LuongAttention().get_config()
    assert config["config_version"] == CONFIG_VERSION
    assert LuongAttention.from_config(config).get_config() == config


def test_there_is_a_fixture_for_version_0_and_the_current_version():
    versions = {int(re.search(r"_v(\d+)\.keras$", p.name).group(1)) for p in FIXTURES}
    assert {0, CONFIG_VERSION} <= versions, (
        "run `python tests/data/make_fixtures.py` after bumping CONFIG_VERSION"
    )


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_keras_files_of_every_config_version_load(path):
    """Written on JAX by tests/data/make_fixtures.py; they load on every backend."""
    data = np.load(path.with_suffix(".npz"))
    model = keras.saving.load_model(path)
    layer = model.get_layer("luong")
    assert isinstance(layer, LuongAttention)
    config = layer.get_config()
    assert config["config_version"] == CONFIG_VERSION
    expected = {
        "use_scale": True,
        "score_mode": "general",
        "dropout": 0.1,
        "seed": 3,
        "causal": True,
        "causal_alignment": "bottom_right",
        "implementation": "reference",
    }
    assert {k: config[k] for k in expected} == expected
    # Version 2 added skip_padded_keys (the fixture turns it on); older files compute every key.
    version = int(re.search(r"_v(\d+)\.keras$", path.name).group(1))
    assert config["skip_padded_keys"] is (version >= 2)
    # Version 3 added nan_safe_padding (the fixture writes False, the
    # default); older layers always zeroed padded keys and values.
    assert config["nan_safe_padding"] is (version < 3)
    output = to_numpy(model([data["query"], data["value"]]))
    np.testing.assert_allclose(output, data["output"], rtol=1e-5, atol=1e-6)


def test_a_version_0_config_migrates():
    current = LuongAttention(use_scale=True, causal=True, name="a").get_config()
    old = {k: v for k, v in current.items() if k != "config_version"}
    assert LuongAttention.from_config(old).get_config() == current


def test_a_version_0_config_without_the_later_keys_takes_their_defaults():
    old = {"name": "a", "trainable": True, "dtype": "float32", "use_scale": False}
    old.update(score_mode="dot", dropout=0.0, seed=None)
    config = LuongAttention.from_config(old).get_config()
    assert config["causal"] is False
    assert config["causal_alignment"] == "top_left"
    assert config["implementation"] == "auto"
    assert config["skip_padded_keys"] is False


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"use_scale": True},
        {"score_mode": "concat", "dropout": 0.2, "seed": 7},
        {"use_scale": True, "score_mode": "concat", "name": "att", "dtype": "mixed_float16"},
    ],
)
def test_a_keras_attention_config_loads(kwargs):
    keras_config = keras.layers.Attention(**kwargs).get_config()
    layer = LuongAttention.from_config(keras_config)
    config = layer.get_config()
    for key, value in keras_config.items():
        assert config[key] == value, key
    assert config["config_version"] == CONFIG_VERSION
    # The same object through the serialization API, with the class swapped.
    serialized = keras.saving.serialize_keras_object(keras.layers.Attention(**kwargs))
    restored = keras.saving.deserialize_keras_object(
        {
            **serialized,
            "module": None,
            "class_name": "LuongAttention",
            "registered_name": "luong_attention>LuongAttention",
        }
    )
    assert isinstance(restored, LuongAttention)


BAD_CONFIGS = [
    ({"bogus": 1}, TypeError, r"Unrecognized keyword arguments.*\{'bogus': 1\}"),
    ({"causal_alignmnet": "top_left"}, TypeError, r"Unrecognized keyword.*causal_alignmnet"),
    ({"use_scale": "yes"}, TypeError, r"argument use_scale.*Received: use_scale='yes'"),
    ({"causal": "yes"}, TypeError, r"argument causal.*Received: causal='yes'"),
    ({"dropout": "0.1"}, TypeError, r"argument dropout.*Received: dropout='0.1'"),
    ({"dropout": 1.5}, TypeError, r"argument dropout.*Received: dropout=1.5"),
    ({"seed": 1.5}, TypeError, r"argument seed.*Received: seed=1.5"),
    (
        {"score_mode": "bahdanau"},
        TypeError,
        r"argument score_mode.*Received: score_mode='bahdanau'",
    ),
    ({"score_mode": 3}, TypeError, r"argument score_mode.*Received: score_mode=3"),
    ({"causal_alignment": None}, TypeError, r"argument causal_alignment.*=None"),
    ({"implementation": "cuda"}, TypeError, r"argument implementation.*='cuda'"),
    ({"dtype": "float17"}, TypeError, r"float17"),
    ({"config_version": CONFIG_VERSION + 1}, ValueError, r"config_version.*reads config versions"),
    ({"config_version": -1}, ValueError, r"Received: config_version=-1"),
    ({"config_version": "1"}, TypeError, r"config_version.*Expected an int.*Received"),
    ({"config_version": 1.0}, TypeError, r"config_version.*Expected an int"),
]


@pytest.mark.parametrize("config,error,match", BAD_CONFIGS, ids=[str(c) for c, _, _ in BAD_CONFIGS])
def test_bad_configs_raise_clear_errors(config, error, match):
    # Keras's Layer.from_config reraises a constructor's ValueError as a
    # TypeError that quotes it ("Error when deserializing class ...").
    with pytest.raises(error, match=match):
        LuongAttention.from_config(config)


def test_config_not_a_dict():
    with pytest.raises(TypeError, match=r"argument config.*Expected a dict.*Received: config=\["):
        LuongAttention.from_config([("use_scale", True)])


def test_a_bad_config_in_a_keras_file_names_the_argument(tmp_path):
    """An edited `.keras` file fails on load with the layer's own message."""
    import json
    import zipfile

    source = DATA / f"luong_attention_v{CONFIG_VERSION}.keras"
    target = tmp_path / "edited.keras"
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            payload = zin.read(item.filename)
            if item.filename == "config.json":
                text = json.dumps(json.loads(payload))
                payload = text.replace('"score_mode": "general"', '"score_mode": "additive"')
                assert payload != text
            zout.writestr(item, payload)
    with pytest.raises((TypeError, ValueError), match=r"score_mode.*'additive'"):
        keras.saving.load_model(target)
