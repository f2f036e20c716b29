"""Exact rewrites of a stage model's ONNX graph that make onnxruntime's CPU provider faster.

MTCNN nets put a per-channel PReLU after every convolution. onnxruntime runs PRelu as a generic
broadcasting element-wise op outside its blocked (NCHWc) convolution layout: in an MTCNN-shaped PNet it
is ~45% of the run time. Per channel with slope s, PReLU(x) = x if x ≥ 0 else s·x equals
max(x, s·x) when s ≤ 1 and min(x, s·x) when s ≥ 1, and s·x is a 1×1 depthwise convolution without
bias; both stay in the blocked layout. Each output element is the very float x or s·x the PRelu would
give, so the rewritten model returns bit-identical outputs (tested on random inputs). PRelu nodes this
does not cover (slopes on both sides of 1 in one node, slopes not per channel, slopes computed in the
graph) are left as they are.
"""

from __future__ import annotations

import numpy as np


def fast_prelu(model_bytes: bytes) -> bytes:
    """The model with every per-channel constant PRelu rewritten as Max/Min(x, depthwise 1×1 Conv(x))."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    slopes = {init.name: init for init in graph.initializer}
    taken = {name for node in graph.node for name in (*node.input, *node.output)} | set(slopes)
    nodes, changed = [], False
    for node in graph.node:
        rewrite = _rewrite(node, slopes, taken, helper, numpy_helper) if node.op_type == "PRelu" else None
        if rewrite is None:
            nodes.append(node)
            continue
        weight, new_nodes = rewrite
        graph.initializer.append(weight)
        nodes.extend(new_nodes)
        changed = True
    if not changed:
        return model_bytes
    del graph.node[:]
    graph.node.extend(nodes)
    return model.SerializeToString()


def _rewrite(node, slopes, taken: set[str], helper, numpy_helper):
    """(depthwise weight initializer, [Conv, Max|Min]) for one PRelu node, or None to leave it."""
    x, slope_name = node.input
    init = slopes.get(slope_name)
    if init is None:
        return None
    slope = numpy_helper.to_array(init)
    if slope.ndim not in (3, 4) or slope.shape[-2:] != (1, 1) or (slope.ndim == 4 and slope.shape[0] != 1):
        return None  # not one slope per channel of an NCHW tensor
    if slope.dtype != np.float32 or not np.isfinite(slope).all():
        return None
    s = slope.reshape(-1)
    if (s <= 1).all():
        pick = "Max"
    elif (s >= 1).all():
        pick = "Min"
    else:
        return None
    y = node.output[0]
    weight_name, scaled = _fresh(f"{y}__slope_dw", taken), _fresh(f"{y}__scaled", taken)
    weight = numpy_helper.from_array(s.reshape(len(s), 1, 1, 1), weight_name)
    conv = helper.make_node("Conv", [x, weight_name], [scaled], group=len(s), kernel_shape=[1, 1],
                            name=_fresh(f"{node.name or y}__scale", taken))
    choose = helper.make_node(pick, [x, scaled], [y], name=_fresh(f"{node.name or y}__{pick.lower()}", taken))
    return weight, [conv, choose]


def _fresh(name: str, taken: set[str]) -> str:
    candidate, k = name, 0
    while candidate in taken:
        k += 1
        candidate = f"{name}{k}"
    taken.add(candidate)
    return candidate
