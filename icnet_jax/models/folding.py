"""BatchNorm folding (paper Sec. 5.1) and the release's flat tensor names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from icnet_jax.models.layers import BN_EPSILON

Tree = Mapping[str, Any]


def fold_batchnorm(variables: Tree) -> dict[str, Any]:
    """Folds every ConvBN's BatchNorm into its convolution.

    `kernel * s` and bias `beta - mean * s`, with `s = gamma / sqrt(var + eps)` per output channel.
    The result is the variables of the same model built with `fold_bn=True`:
    `Model(..., fold_bn=True).apply(fold_batchnorm(variables), images)` equals
    `Model(...).apply(variables, images)` up to float rounding.

    Args:
      variables: `{'params': ..., 'batch_stats': ...}` of a model with `fold_bn=False`.
    Returns:
      `{'params': ...}` with `conv: {kernel, bias}` wherever there was `conv` + `bn`.
    """

    def fold(params: Tree, stats: Tree) -> dict[str, Any]:
        if "conv" in params and "bn" in params:
            bn, moments = params["bn"], stats["bn"]
            scale = bn["scale"] * jnp.reciprocal(jnp.sqrt(moments["var"] + BN_EPSILON))
            return {
                "conv": {
                    "kernel": params["conv"]["kernel"] * scale,
                    "bias": bn["bias"] - moments["mean"] * scale,
                }
            }
        return {
            name: fold(value, stats.get(name, {})) if isinstance(value, Mapping) else value
            for name, value in params.items()
        }

    return {"params": fold(variables["params"], variables.get("batch_stats", {}))}


def released_tensors(params: Tree, skip: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Flat `{'conv3_1_1x1_reduce/weights': array, ...}` in the release's names.

    A layer's name is its module path joined by '_' (ConvBN's inner `conv` left out); kernels
    become `weights` (`[kh, kw, in, out]`), biases `biases`.

    Args:
      params: folded parameters (`fold_batchnorm(variables)['params']`).
      skip: layer names to leave out (e.g. the training-only heads).
    """
    out = {}
    suffix = {"kernel": "weights", "bias": "biases"}

    def walk(tree: Tree, path: tuple[str, ...]) -> None:
        for name, value in tree.items():
            if isinstance(value, Mapping):
                walk(value, path if name == "conv" else (*path, name))
            elif "_".join(path) not in skip:
                out["_".join(path) + "/" + suffix[name]] = np.asarray(value)

    walk(params, ())
    return out
