"""Writes the `.keras` fixture of the current config version.

    KERAS_BACKEND=jax python tests/data/make_fixtures.py

`luong_attention_v<N>.keras` holds a small model saved with config version N,
and `luong_attention_v<N>.npz` its inputs and outputs. Keep old files: the
tests load every one of them to check that older files still load.
(`luong_attention_v0.keras` was written by the layer before its config had
a `config_version` key, at commit 5d44292.)
"""

import pathlib

import keras
import numpy as np

from luong_attention import LuongAttention
from luong_attention.layer import CONFIG_VERSION

HERE = pathlib.Path(__file__).parent


def build_model():
    query = keras.Input((3, 4), name="query")
    value = keras.Input((5, 4), name="value")
    layer = LuongAttention(
        use_scale=True,
        score_mode="general",
        dropout=0.1,
        seed=3,
        causal=True,
        causal_alignment="bottom_right",
        implementation="reference",
        skip_padded_keys=True,
        nan_safe_padding=False,
        name="luong",
    )
    model = keras.Model([query, value], layer([query, value]))
    layer.scale.assign(0.5)
    layer.general_score_weight.assign(np.linspace(-1, 1, 16).reshape(4, 4))
    return model


def fixture_inputs():
    query = np.linspace(-2, 2, 2 * 3 * 4).reshape(2, 3, 4).astype("float32")
    value = np.cos(np.arange(2 * 5 * 4)).reshape(2, 5, 4).astype("float32")
    return query, value


def main(version=None):
    version = CONFIG_VERSION if version is None else version
    model = build_model()
    query, value = fixture_inputs()
    output = keras.ops.convert_to_numpy(model([query, value]))
    model.save(HERE / f"luong_attention_v{version}.keras")
    np.savez(HERE / f"luong_attention_v{version}.npz", query=query, value=value, output=output)


if __name__ == "__main__":
    main()
