"""Max pooling's padding as ONNX `MaxPool` pads: the exporter writes the model's explicit
padding with -inf (`pooling.max_pool_ceil`) as a `Pad` node with a constant of -inf before a
`MaxPool` with no padding; `fold_max_pool_padding` gives those pads to the `MaxPool` itself,
which leaves padded positions out of the maximum, as -inf does.

The values are the same; the graph loses a float copy of the stem's activations, and an int8
quantisation no longer meets -inf (no uint8 range holds it: its scale would be NaN), so the
pooling runs on uint8 with the convolutions around it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Nodes that may sit between the padding and the pooling: layout only.
_MOVES = ("Transpose",)


def _constants(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def fold_max_pool_padding(model: Any) -> int:
    """Rewrites `model` (an `onnx.ModelProto`) in place: each `Pad` of constant -inf followed
    (through Transposes) by a 2-D `MaxPool` without padding is removed and its spatial pads
    become the `MaxPool`'s. Returns how many were folded."""
    from onnx import helper

    graph = model.graph
    constants = _constants(graph)
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    folded: list[Any] = []
    reshaped: set[str] = set()
    for pad in graph.node:
        value = constants.get(pad.input[2]) if len(pad.input) > 2 else None
        if pad.op_type != "Pad" or value is None or not np.all(np.isneginf(value)):
            continue
        if pad.input[1] not in constants:
            continue
        pads = constants[pad.input[1]].reshape(2, -1)  # [begin, end] x axes
        chain, node = [], pad
        while len(consumers.get(node.output[0], [])) == 1:
            (node,) = consumers[node.output[0]]
            if node.op_type not in _MOVES:
                break
            chain.append(node)
        if node.op_type != "MaxPool" or pads.shape[1] != 4:
            continue
        for move in chain:  # the pads follow the axes into the pooling's layout
            perm = [a.ints for a in move.attribute if a.name == "perm"][0]
            pads = pads[:, list(perm)]
        if np.any(pads[:, :2]) or _has_padding(node):
            continue
        (chain[0] if chain else node).input[0] = pad.input[0]
        reshaped.update(move.output[0] for move in chain)  # unpadded now
        kept = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.attribute.append(helper.make_attribute("pads", [int(v) for v in pads[:, 2:].ravel()]))
        folded.append(pad)
    for pad in folded:
        graph.node.remove(pad)
    # The shapes recorded for the moved tensors are the padded ones (onnxruntime warns).
    for info in [v for v in graph.value_info if v.name in reshaped]:
        graph.value_info.remove(info)
    # The pads and the -inf, now unused (onnxruntime warns of each unused initializer).
    used = {name for node in graph.node for name in node.input}
    unused = [t for t in graph.initializer if t.name not in used]
    for tensor in unused:
        graph.initializer.remove(tensor)
    return len(folded)


def _has_padding(node: Any) -> bool:
    from onnx import helper

    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        if attribute.name == "pads" and any(value):
            return True
        if attribute.name == "auto_pad" and value not in (b"NOTSET", b"VALID"):
            return True
    return False
