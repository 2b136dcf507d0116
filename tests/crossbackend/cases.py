"""The cases of the cross-backend check: layer options, shapes and masks.

NumPy only: the driver builds the arrays once, every backend's worker reads
the same file, so all backends see the same bytes.
"""

import numpy as np

B, TQ, TV, DIM = 2, 4, 5, 8

# name -> layer options, input shapes, masks and call options.
CASES = {
    "dot": {"layer": {}},
    "dot_scale": {"layer": {"use_scale": True}},
    "general_key": {
        "layer": {"score_mode": "general", "use_scale": True},
        "shapes": {"query": (B, TQ, 6), "value": (B, TV, 7), "key": (B, TV, 3)},
    },
    "concat_scale": {"layer": {"score_mode": "concat", "use_scale": True}},
    "masks_fully_masked_rows": {
        "layer": {},
        "masks": ("query_mask", "value_mask", "key_mask"),
        "shapes": {"key": (B, TV, DIM)},
    },
    "causal_top_left": {"layer": {"causal": True}, "shapes": {"query": (B, 6, DIM)}},
    "causal_bottom_right_long_query": {
        # Tq > Tv: the first Tq - Tv query rows see no key.
        "layer": {"causal": True, "causal_alignment": "bottom_right"},
        "shapes": {"query": (B, 7, DIM)},
        "masks": ("value_mask",),
    },
    "causal_bottom_right_call_arg": {
        "layer": {"causal_alignment": "bottom_right", "score_mode": "general"},
        "shapes": {"query": (B, 3, DIM)},
        "call": {"use_causal_mask": True},
    },
    "attention_mask": {
        "layer": {"score_mode": "concat"},
        "masks": ("attention_mask", "query_mask"),
    },
    "heads_4d_causal": {
        "layer": {"causal": True, "use_scale": True},
        "shapes": {"query": (B, 3, TQ, DIM), "value": (B, 3, TV, DIM)},
        "masks": ("query_mask", "value_mask"),
    },
    "heads_4d_general_full_masks": {
        "layer": {"score_mode": "general"},
        "shapes": {"query": (B, 3, TQ, DIM), "value": (B, 3, TV, 4), "key": (B, 3, TV, 5)},
        "masks": ("value_mask_full", "attention_mask"),
    },
}


def case_shapes(case):
    shapes = {"query": (B, TQ, DIM), "value": (B, TV, DIM)}
    shapes.update(case.get("shapes", {}))
    return shapes


def make_arrays(name, case, rng):
    """Returns {array name: array} for one case; keys are `<name>/<array>`.

    The masks leave one batch element with no valid key (`value_mask`) or a
    fully False row (`attention_mask`), so that fully-masked rows are in
    every masked case.
    """
    shapes = case_shapes(case)
    arrays = {k: rng.standard_normal(s).astype("float32") for k, s in shapes.items()}
    q_shape, v_shape = shapes["query"], shapes["value"]
    batch, tq, tv = q_shape[0], q_shape[-2], v_shape[-2]
    for mask in case.get("masks", ()):
        if mask == "query_mask":
            m = rng.random((batch, tq)) > 0.3
            m[0, 0] = False
        elif mask in ("value_mask", "key_mask"):
            m = rng.random((batch, tv)) > 0.3
            m[0, 0] = True
            if mask == "value_mask":
                m[1] = False  # batch element 1 attends to nothing
        elif mask == "value_mask_full":
            m = rng.random(v_shape[:-1]) > 0.3
            m[1, 0] = False
            mask = "value_mask"
        elif mask == "attention_mask":
            m = rng.random((*q_shape[:-2], tq, tv)) > 0.4
            m[(0,) * (len(q_shape) - 2) + (1,)] = False  # one query row sees nothing
        else:
            raise ValueError(f"Unknown mask {mask!r} in case {name!r}")
        arrays[mask] = m
    layer = case["layer"]
    if layer.get("use_scale"):
        arrays["weight:scale"] = np.asarray(0.7, "float32")
    if layer.get("score_mode") == "concat":
        arrays["weight:concat_score_weight"] = np.asarray(1.3, "float32")
    if layer.get("score_mode") == "general":
        key_shape = shapes.get("key", v_shape)
        w = rng.standard_normal((q_shape[-1], key_shape[-1])) / np.sqrt(q_shape[-1])
        arrays["weight:general_score_weight"] = w.astype("float32")
    return {f"{name}/{k}": v for k, v in arrays.items()}


def make_all_arrays(seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, case in CASES.items():
        arrays.update(make_arrays(name, case, rng))
    return arrays


def case_arrays(arrays, name):
    prefix = f"{name}/"
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
