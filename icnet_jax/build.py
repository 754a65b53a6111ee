"""The model, optimiser and train state that a config describes (training, fine-tuning, evaluation
and prediction build them here; nothing here reads data)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from icnet_jax.models import ICNet, PSPNet
from icnet_jax.models.backbone import Trunk, frozen_layers

Array = jax.Array
_log = logging.getLogger(__name__)


class TrainState(train_state.TrainState):
    batch_stats: Any = None


def create_model(
    config: ml_collections.ConfigDict,
    num_classes: int,
    *,
    axis_name: str | None = None,
    **overrides,
) -> nn.Module:
    """ICNet or PSPNet as `config.model` describes (`overrides` replace attributes)."""
    m = config.model
    common = dict(
        num_classes=num_classes,
        width=m.width,
        align_corners=m.align_corners,
        bn_momentum=m.bn_momentum,
        axis_name=axis_name,
        dtype=jnp.dtype(m.dtype),
        frozen_bn=frozen_bn(config),
        stem=m.stem,
        stride_on=m.stride_on,
        shortcut=m.shortcut,
    )
    model: ICNet | PSPNet
    if m.name == "icnet":
        model = ICNet(branch=m.branch, cff_upsampling=m.cff_upsampling, **common)
    elif m.name == "pspnet":
        model = PSPNet(output_stride=m.output_stride, **common)
    else:
        raise ValueError(f"config.model.name must be 'icnet' or 'pspnet', got {m.name!r}")
    return model.clone(**overrides)


def frozen_bn(config: ml_collections.ConfigDict) -> str:
    """The layers whose BatchNorm statistics `config.model.freeze_bn_stats` freezes: those the
    loaded weights held, 'all' from `init_checkpoint` (a whole network), 'trunk' from
    `init_backbone` (an ImageNet ResNet-50); fresh layers learn theirs. Without either (a run
    started otherwise) 'all', as the switch always meant. 'none' when the switch is off."""
    if not config.model.freeze_bn_stats:
        return "none"
    if config.get("init_backbone") and not config.get("init_checkpoint"):
        return "trunk"
    return "all"


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """'poly': lr (1 - step / num_steps) ** power."""
    return optax.polynomial_schedule(
        init_value=config.optim.lr,
        end_value=0.0,
        power=config.optim.power,
        transition_steps=config.num_steps,
    )


def bn_affine_mask(params: Mapping[str, Any], layers: tuple[str, ...] = ("*",)) -> Any:
    """True for the BatchNorm scale and offset (leaves under a `bn` module) of the top-level
    layers named in `layers` ('*': every layer; the rule of `ConvBN.frozen_layers`), False
    elsewhere: the parameters `config.optim.freeze_bn_affine` keeps fixed."""

    def frozen(path, _) -> bool:
        top = getattr(path[0], "key", None)
        in_bn = any(getattr(k, "key", None) == "bn" for k in path)
        return in_bn and ("*" in layers or top in layers)

    return jax.tree_util.tree_map_with_path(frozen, params)


def frozen_bn_affine(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The top-level layers whose BatchNorm scale and offset `config.optim.freeze_bn_affine`
    keeps fixed: those whose statistics are frozen (`frozen_bn`), so with 'trunk' the fresh
    layers learn their affine parameters as they learn their statistics."""
    m = config.model
    return frozen_layers(frozen_bn(config), Trunk(m.stem, m.stride_on, m.shortcut))


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """SGD with momentum; weight decay (added to the gradient, as in Caffe) on kernels only; with
    `config.optim.freeze_bn_affine`, no update of the BatchNorm scales and offsets of the layers
    `frozen_bn_affine` names."""

    def kernels(params):
        return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "kernel", params)

    tx = optax.chain(
        optax.add_decayed_weights(config.optim.weight_decay, mask=kernels),
        optax.sgd(learning_rate_schedule(config), momentum=config.optim.momentum),
    )
    if config.optim.get("freeze_bn_affine", False):
        layers = frozen_bn_affine(config)
        if not layers:
            _log.warning(
                "config.optim.freeze_bn_affine=True has no effect without "
                "config.model.freeze_bn_stats=True: only the layers whose BatchNorm statistics "
                "are frozen keep their scales and offsets"
            )
        # Chained even when no layer is named: the optimiser state keeps one structure.
        mask = functools.partial(bn_affine_mask, layers=layers)
        tx = optax.chain(tx, optax.masked(optax.set_to_zero(), mask))
    return tx


def create_train_state(
    rng: Array, model: nn.Module, tx: optax.GradientTransformation, image_size: tuple[int, int]
) -> TrainState:
    variables = jax.jit(model.init)(rng, jnp.zeros((1, *image_size, 3), jnp.float32))
    state = TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        batch_stats=variables.get("batch_stats", {}),
    )
    # An array step from the start: a Python int would retrace the step after the first update.
    return state.replace(step=jnp.zeros((), jnp.int32))


def inference_model(
    config: ml_collections.ConfigDict, num_classes: int, branch: str = "all"
) -> nn.Module:
    """The config's model giving `branch` ('all': every ICNet branch; ignored for PSPNet)."""
    overrides = {"branch": branch} if config.model.name == "icnet" else {}
    return create_model(config, num_classes, **overrides)
