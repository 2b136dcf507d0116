"""The implementation paths: keyword-only functions of prepared tensors.

- `reference_attention`: the `(Tq, Tv)` scores; supports every option.
- `fused_attention`: `keras.ops.dot_product_attention`.
- `blocked_attention`: row blocks, causal tiles skipped, `O(T)` memory; its
  tuning knobs are a `BlockedOptions`.
"""

from luong_attention.kernels.blocked import BlockedOptions, blocked_attention
from luong_attention.kernels.fused import fused_attention
from luong_attention.kernels.reference import reference_attention

__all__ = ["BlockedOptions", "blocked_attention", "fused_attention", "reference_attention"]
