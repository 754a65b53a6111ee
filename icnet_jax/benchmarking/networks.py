"""The benchmarked networks (ICNet by output branch, PSPNet50 at half and full width) with
random weights, and their random inputs: what `speed` times on JAX and `onnx_speed` on
onnxruntime."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from icnet_jax.models import ICNet, PSPNet, fold_batchnorm

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Parameter shapes are taken on a small input (they do not depend on the input size).
INIT_SIZE = (129, 257)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One benchmarked network: `build(width_scale, fold_bn, dtype)` returns the Flax module."""

    name: str
    branch: str | None
    width: float
    build: Callable[[float, bool, Any], Any]


def _icnet(branch: str) -> ModelSpec:
    return ModelSpec(
        f"icnet_{branch}",
        branch,
        0.5,
        lambda s, fold, dt: ICNet(width=0.5 * s, branch=branch, fold_bn=fold, dtype=dt),
    )


def _pspnet(name: str, width: float) -> ModelSpec:
    return ModelSpec(
        name, None, width, lambda s, fold, dt: PSPNet(width=width * s, fold_bn=fold, dtype=dt)
    )


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _icnet("sub4"),
        _icnet("sub24"),
        _icnet("sub124"),
        _pspnet("pspnet50_half", 0.5),
        _pspnet("pspnet50", 1.0),
    )
}
GROUPS = {
    "all": list(MODELS),
    "icnet": ["icnet_sub4", "icnet_sub24", "icnet_sub124"],
    "pspnet": ["pspnet50_half", "pspnet50"],
}
NAMES = [*GROUPS, *MODELS]  # what `--models` accepts


def expand_models(names: Sequence[str]) -> list[str]:
    """Model names from names and groups, in order, without repeats; ValueError on an unknown."""
    out: list[str] = []
    for name in names:
        if name not in GROUPS and name not in MODELS:
            raise ValueError(f"unknown model {name!r}: one of {', '.join(NAMES)}")
        for model in GROUPS.get(name, [name]):
            if model not in out:
                out.append(model)
    return out


def random_variables(model: Any, seed: int = 0) -> dict[str, Any]:
    """Random variables of `model` without running `model.init`.

    Shapes come from `jax.eval_shape(model.init, ...)` (no compilation: jitting `init`
    costs ~40 s of XLA compilation per model on a 2-core CPU); values are drawn with NumPy:
    kernels He-normal (std sqrt(2 / fan_in)), BatchNorm scale and variance 1, biases and means 0.
    Speed does not depend on the values; these keep activations O(1) (no denormals).
    """
    shapes = jax.eval_shape(
        model.init, jax.random.PRNGKey(seed), jax.ShapeDtypeStruct((1, *INIT_SIZE, 3), jnp.float32)
    )
    rng = np.random.default_rng(seed)

    def fill(path: tuple[Any, ...], leaf: jax.ShapeDtypeStruct) -> jax.Array:
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            value = rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)
        elif name in ("scale", "var"):
            value = np.ones(leaf.shape)
        else:
            value = np.zeros(leaf.shape)
        return jnp.asarray(value, dtype=leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def build_model(
    name: str, dtype: str, fold_bn: bool, width_scale: float = 1.0, seed: int = 0
) -> tuple[Any, dict[str, Any]]:
    """The module and its random variables (`random_variables`), BatchNorm folded when
    `fold_bn` (with `fold_batchnorm`, into `model.clone(fold_bn=True)`)."""
    model = MODELS[name].build(width_scale, False, DTYPES[dtype])
    variables = random_variables(model, seed)
    if fold_bn:
        variables = jax.jit(fold_batchnorm)(variables)
        model = model.clone(fold_bn=True)
    return model, variables


def make_images(options: Any) -> jax.Array:
    """Standard-normal float32 inputs `[batch, height, width, 3]`."""
    rng = np.random.default_rng(options.seed)
    shape = (options.batch, options.height, options.width, 3)
    return jnp.asarray(rng.standard_normal(shape, dtype=np.float32))
