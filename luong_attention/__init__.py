"""Dot-product (Luong-style) attention for Keras 3 on JAX, PyTorch and TensorFlow."""

from luong_attention.functional import luong_attention
from luong_attention.layer import LuongAttention

__version__ = "0.2.0"

__all__ = ["LuongAttention", "luong_attention", "__version__"]
