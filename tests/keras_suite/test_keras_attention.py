"""Keras's own Attention tests, collected from the installed wheel (see conftest.py)."""

import importlib
import importlib.util
import pathlib
import unittest

import keras
import pytest

from tests.keras_suite.conftest import SHIPPED_MODULE

_keras_dir = pathlib.Path(importlib.util.find_spec("keras").origin).parent
_path = _keras_dir.joinpath(*SHIPPED_MODULE.split(".")[1:]).with_suffix(".py")
if not _path.is_file():
    pytest.skip(
        f"keras {keras.__version__} does not ship {_path.relative_to(_keras_dir.parent)}",
        allow_module_level=True,
    )
_shipped = importlib.import_module(SHIPPED_MODULE)

# The shipped module's unittest classes, under their own names, for pytest to collect.
globals().update(
    {
        name: obj
        for name, obj in vars(_shipped).items()
        if isinstance(obj, type)
        and issubclass(obj, unittest.TestCase)
        and obj.__module__ == SHIPPED_MODULE
    }
)


def test_the_shipped_tests_see_luong_attention():
    from luong_attention import LuongAttention

    assert _shipped.layers.Attention is LuongAttention
    assert _shipped.layers.Input is keras.layers.Input
