"""ICNet's bilinear resizes as single ONNX `Resize` nodes in the ONNX export.

Traced as it is, `layers.resize_bilinear` (two gathers and a lerp per axis) becomes about a dozen
Gather, Sub, Mul, Add and Expand nodes per resize, which onnxruntime runs as separate passes over
full-size maps: measured, those took more than half of the int8 model's time and most of the
interpolation's in float32. ONNX's `Resize` (linear, `align_corners` or `half_pixel`: the two
conventions of `layers.resize_bilinear`) is one fused kernel with the same values.

`resize_nodes()` swaps the resize for a primitive while jax2onnx traces the network, and the
primitive's jax2onnx plugin writes the node. Export only: nothing in training or JAX inference
changes. A resize to a side of 1 from more pixels (align corners has no ratio there) keeps the
traced form.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence

import numpy as np
from jax.extend.core import Primitive

from icnet_jax.models import layers

_RESIZE = Primitive("icnet_resize_bilinear")


def _abstract_eval(x, *, size: tuple[int, int], align_corners: bool):
    del align_corners
    return x.update(shape=(x.shape[0], *size, x.shape[3]))


_RESIZE.def_abstract_eval(_abstract_eval)


def _as_node(original):
    def resize(x, size: Sequence[int], align_corners: bool = True):
        size = tuple(int(n) for n in size)
        degenerate = any(n == 1 < m for n, m in zip(size, x.shape[1:3]))
        if tuple(x.shape[1:3]) == size or (align_corners and degenerate):
            return original(x, size, align_corners)
        return _RESIZE.bind(x, size=size, align_corners=bool(align_corners))

    return resize


@contextlib.contextmanager
def resize_nodes() -> Iterator[None]:
    """While active, the models' bilinear resizes trace as the primitive `_register_plugin`
    lowers to one `Resize` node."""
    _register_plugin()
    original = layers.resize_bilinear
    # Every module that imported the function by name (the models), not a list to keep in step.
    modules = [
        module
        for name, module in list(sys.modules.items())
        if name.startswith("icnet_jax.") and getattr(module, "resize_bilinear", None) is original
    ]
    for module in modules:
        module.resize_bilinear = _as_node(original)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module in modules:
            module.resize_bilinear = original  # type: ignore[attr-defined]


def _register_plugin() -> None:
    """Registers (once) the jax2onnx lowering of `_RESIZE`: `Resize(x, sizes)` with the batch
    taken from the input's shape (the export's batch is symbolic)."""
    from jax2onnx.plugins import plugin_system

    if _RESIZE.name in plugin_system.PLUGIN_REGISTRY:
        return

    class ResizePlugin(plugin_system.PrimitiveLeafPlugin):
        def lower(self, ctx, eqn) -> None:
            import onnx_ir as ir

            (x_var,), (out_var,) = eqn.invars, eqn.outvars
            size = eqn.params["size"]
            x = ctx.get_value_for_var(x_var, name_hint=ctx.fresh_name("resize_in"))

            def constant(name: str, array: np.ndarray):
                return ctx.builder.add_initializer_from_array(
                    name=ctx.fresh_name(name), array=array
                )

            shape = ctx.builder.Shape(x, _outputs=[ctx.fresh_name("resize_shape")])
            batch = ctx.builder.Slice(
                shape,
                constant("resize_start", np.asarray([0], np.int64)),
                constant("resize_end", np.asarray([1], np.int64)),
                _outputs=[ctx.fresh_name("resize_batch")],
            )
            rest = np.asarray([*size, x_var.aval.shape[3]], np.int64)
            sizes = ctx.builder.Concat(
                batch, constant("resize_rest", rest), axis=0, _outputs=[ctx.fresh_name("sizes")]
            )
            empty = np.zeros((0,), np.float32)
            mode = "align_corners" if eqn.params["align_corners"] else "half_pixel"
            out = ctx.builder.Resize(
                x,
                constant("resize_roi", empty),
                constant("resize_scales", empty),
                sizes,
                mode="linear",
                coordinate_transformation_mode=mode,
                _outputs=[ctx.fresh_name("resize_out")],
            )
            out.type = ir.TensorType(x.type.dtype)
            ctx.bind_value_for_var(out_var, out)

    plugin_system.register_primitive(jaxpr_primitive=_RESIZE.name)(ResizePlugin)
