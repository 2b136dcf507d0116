"""Regression tests of bugs met while giving each concept one home (issue 12)."""

import keras
import pytest

from luong_attention import LuongAttention, _dispatch, _validation
from luong_attention._prepare import Masks
from luong_attention.functional import _describe
from luong_attention.kernels import blocked


def test_blocked_plan_with_two_unknown_batch_dims_chains_and_recomputes():
    # The batch size was math.prod(d or -1), +1 with two unknown dims: the
    # plan then kept every block's weights for a batch it did not know.
    query = keras.KerasTensor((None, None, 8, 4))
    plan = blocked._make_plan(
        query, query, None, None, blocked.BlockedOptions(), chain_slices=False
    )
    assert plan.chain
    assert not plan.save_weights


class _SymbolicDim:
    """A dim that is neither None nor an int, as JAX's export makes."""


def test_a_symbolic_length_is_not_static():
    # "Static" meant `is not None` in one place and `isinstance(d, int)` in
    # another: a symbolic length passed as static and the blocked path was
    # chosen for a length it cannot unroll.
    assert _validation.static_dims((2, _SymbolicDim(), 4)) == (2, None, 4)

    class Tensor:
        shape = (2, _SymbolicDim(), 4)
        dtype = "float32"

    call = _describe((Tensor, Tensor, Tensor), Masks())
    assert call.q_len is None and call.kv_len is None
    with pytest.raises(ValueError, match=r"implementation='blocked' does not support unknown"):
        _dispatch.choose_path("blocked", call)
    assert _dispatch.choose_path("auto", call) != "blocked"


@pytest.mark.parametrize(
    "kwargs,call_kwargs,reason",
    [
        ({"implementation": "blocked"}, {"return_attention_scores": True}, "return_attention"),
        ({"implementation": "fused", "score_mode": "concat"}, {}, "concat"),
    ],
)
def test_a_named_path_that_cannot_run_fails_when_the_model_is_built(kwargs, call_kwargs, reason):
    # compute_output_spec did not check the path: the model built, then
    # failed at its first call.
    query, value = keras.Input((3, 4)), keras.Input((5, 4))
    with pytest.raises(ValueError, match=rf"argument implementation.*{reason}"):
        LuongAttention(**kwargs)([query, value], **call_kwargs)
