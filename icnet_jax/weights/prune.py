"""L1-norm filter pruning of ICNet (paper Sec. 5.2, after Li et al., "Pruning filters for
efficient ConvNets", ICLR 2017), as the released half-width model was made (the library half of
`python -m icnet_jax.tools.prune --checkpoint=DIR --keep=0.5 --output=DIR2`).

For every layer, each filter (output channel) is scored by the sum of the absolute values of its
kernel (`sum |W[kh, kw, in, j]|`); filters are sorted by score, descending, and the
`channels(base, width * keep)` best kept (the rounding of `ICNet(width=width * keep)`). Channels
that are summed together must keep the same indices, so they are ranked together by the sum of
their layers' scores:
- a residual stage: its projection, every bottleneck's 1x1 increase and the identity path;
- the CFF units: conv_sub4 + conv3_1_sub2_proj, and conv_sub2 + conv3_sub1_proj.
The kept channels are then removed from the BatchNorm parameters and statistics of the layer and
from the input channels of every layer the feature map feeds (the pyramid pooling is a sum and
passes channels through). The image channels and the classifier outputs are never pruned.

The output is a training checkpoint (`DIR2/checkpoints/0`, config with `model.width` =
width * keep) to fine-tune from (`config.init_checkpoint=DIR2`) or evaluate.
"""

from __future__ import annotations

import json
import logging
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from icnet_jax import errors
from icnet_jax.models.backbone import STAGE_BLOCKS, STEM_LAYERS
from icnet_jax.models.layers import channels
from icnet_jax.weights import trees
from icnet_jax.weights.checkpoints import existing_checkpoint

_log = logging.getLogger(__name__)


class PruneError(ValueError, errors.UserError):
    """A keeping rate or checkpoint that cannot be pruned; the message says why."""


IMAGE, CLASSES = "image", "classes"  # channel groups never pruned
# The paper keeps 0.5 and 0.25 of the filters (Table 1). Below 1/20 the narrowest layers (32 and
# 64 filters at full width) are left with a channel or two, rounded up from nothing: a network
# that cannot segment (0.001 leaves a few hundred parameters).
MIN_KEEP = 0.05
Path = tuple[str, ...]


def check_keep(keep: float) -> None:
    """Raises PruneError unless `keep` is in [MIN_KEEP, 1]."""
    if not MIN_KEEP <= keep <= 1:
        raise PruneError(
            f"--keep={keep:g}: the keeping rate must be in [{MIN_KEEP:g}, 1] (paper Table 1: 0.5, "
            f"0.25); below {MIN_KEEP:g} the narrowest layers keep a channel or two"
        )


def icnet_channel_graph(stem: str = "release") -> dict[Path, tuple[str, str]]:
    """`{layer path: (input channel group, output channel group)}` of ICNet with the trunk's
    `stem` (`config.model.stem`; `stride_on` and `shortcut` do not change the channels).

    A channel group is a set of feature-map channels that must be pruned together: every layer
    with the same output group writes into the same (summed) channels.
    """
    g: dict[Path, tuple[str, str]] = {}
    previous = IMAGE
    for name, _, _ in STEM_LAYERS[stem]:
        g[(name,)] = (previous, name)
        previous = name  # the last one through the max pool
    for stage, blocks in STAGE_BLOCKS.items():
        out = f"stage{stage}"  # projection, increases and the identity path, summed
        for i in range(1, blocks + 1):
            block = f"conv{stage}_{i}"
            inp = previous if i == 1 else out
            if i == 1:
                g[(block, "1x1_proj")] = (inp, out)
            g[(block, "1x1_reduce")] = (inp, f"{block}_reduce")
            g[(block, "3x3")] = (f"{block}_reduce", f"{block}_3x3")
            g[(block, "1x1_increase")] = (f"{block}_3x3", out)
        previous = out
    g.update({
        ("conv5_4_k1",): ("stage5", "conv5_4"),  # after the (summing) pyramid pooling
        ("conv6_sub4",): ("conv5_4", CLASSES),
        ("conv_sub4",): ("conv5_4", "cff1"),
        ("conv3_1_sub2_proj",): ("stage3", "cff1"),
        ("conv6_sub2",): ("cff1", CLASSES),
        ("conv1_sub1",): (IMAGE, "sub1_1"),
        ("conv2_sub1",): ("sub1_1", "sub1_2"),
        ("conv3_sub1",): ("sub1_2", "sub1_3"),
        ("conv_sub2",): ("cff1", "cff2"),
        ("conv3_sub1_proj",): ("sub1_3", "cff2"),
        ("conv6_cls",): ("cff2", CLASSES),
    })  # fmt: skip
    return g


def _layer_paths(params: Mapping[str, Any], path: Path = ()) -> list[Path]:
    out = []
    for name, value in params.items():
        if isinstance(value, Mapping):
            if "conv" in value or "kernel" in value:
                out.append((*path, name))
            else:
                out += _layer_paths(value, (*path, name))
    return out


def _kernel(params: Mapping[str, Any], path: Path) -> np.ndarray:
    node = trees.node(params, path)
    return np.asarray(node["conv"]["kernel"] if "conv" in node else node["kernel"])


def filter_l1_norms(kernel: np.ndarray) -> np.ndarray:
    """Sum of |w| over each filter of an `[kh, kw, in, out]` kernel: `[out]`."""
    return np.abs(np.asarray(kernel, np.float64)).sum(axis=tuple(range(kernel.ndim - 1)))


def select_channels(
    params: Mapping[str, Any], keep: float, *, width: float = 1.0, stem: str = "release"
) -> dict[str, np.ndarray]:
    """`{channel group: sorted indices of the kept channels}` (every group but image/classes).

    Args:
      params: parameters of `ICNet(width=width)` (BN unfolded or folded).
      keep: the kernel keeping rate (paper Table 1: 0.5, 0.25).
      width: the width of `params`' model; the result is that of width * keep.
      stem: the model's `config.model.stem`.
    """
    check_keep(keep)
    graph = icnet_channel_graph(stem)
    present = set(_layer_paths(params))
    unknown = sorted("/".join(p) for p in present - set(graph))
    absent = sorted("/".join(p) for p in set(graph) - present)
    if unknown or absent:
        raise PruneError(
            "not the parameters of ICNet with bilinear CFF as this tool knows it: "
            f"unknown layers {unknown}, missing layers {absent}"
        )
    scores: dict[str, np.ndarray] = {}
    for path, (_, out) in graph.items():
        if out == CLASSES:
            continue
        norms = filter_l1_norms(_kernel(params, path))
        if out in scores and scores[out].shape != norms.shape:
            raise ValueError(
                f"{'/'.join(path)}: {norms.shape[0]} filters, its group {out} has "
                f"{scores[out].shape[0]}"
            )
        scores[out] = scores.get(out, 0.0) + norms
    selected = {}
    for group, score in scores.items():
        base = round(score.shape[0] / width)
        count = channels(base, width * keep)
        order = np.argsort(-score, kind="stable")  # descending; ties: the lower index
        selected[group] = np.sort(order[:count])
    return selected


def prune_variables(
    variables: Mapping[str, Any],
    keep: float,
    *,
    width: float = 1.0,
    selected: Mapping[str, np.ndarray] | None = None,
    stem: str = "release",
) -> dict[str, Any]:
    """The variables of `ICNet(width=width * keep)` cut out of those of `ICNet(width=width)`.

    Args:
      variables: `{'params': ..., 'batch_stats': ...}` (`batch_stats` absent for fold_bn models).
      keep: the kernel keeping rate.
      width: the width of `variables`' model.
      selected: kept channels per group (default: `select_channels` by the filters' L1 norms).
      stem: the model's `config.model.stem`.
    Returns:
      numpy variables of the same structure with fewer channels.
    """
    params = variables["params"]
    if selected is None:
        selected = select_channels(params, keep, width=width, stem=stem)
    graph = icnet_channel_graph(stem)

    def cut(tree: Any, path: Path, inp, out) -> Any:
        if not isinstance(tree, Mapping):
            return tree
        result = {}
        for name, value in tree.items():
            if isinstance(value, Mapping):
                result[name] = cut(value, path, inp, out)
                continue
            value = np.asarray(value)
            if name == "kernel":
                if inp is not None:
                    value = np.take(value, inp, axis=-2)
                if out is not None:
                    value = np.take(value, out, axis=-1)
            elif out is not None:  # bias, BN scale / bias / mean / var: per output channel
                value = np.take(value, out, axis=-1)
            result[name] = value
        return result

    def prune_tree(tree: Mapping[str, Any], path: Path = ()) -> dict[str, Any]:
        out_tree = {}
        for name, value in tree.items():
            here = (*path, name)
            if here in graph:
                inp, out = graph[here]
                out_tree[name] = cut(value, here, selected.get(inp), selected.get(out))
            elif isinstance(value, Mapping):
                out_tree[name] = prune_tree(value, here)
            else:
                out_tree[name] = np.asarray(value)
        return out_tree

    return {collection: prune_tree(tree) for collection, tree in variables.items()}


def param_count(tree: Any) -> int:
    if isinstance(tree, Mapping):
        return sum(param_count(v) for v in tree.values())
    return int(np.prod(np.shape(tree)))


def prune_checkpoint(checkpoint, keep: float, output, *, seed: int = 0, verbose: bool = True):
    """Prunes an ICNet training checkpoint into `output/checkpoints/0` (see the module doc)."""
    import ml_collections

    from icnet_jax.weights.finetune import restore_checkpoint
    from icnet_jax.weights.release import write_training_checkpoint

    check_keep(keep)
    state, config_dict, num_classes, step = restore_checkpoint(existing_checkpoint(checkpoint))
    config = ml_collections.ConfigDict(json.loads(json.dumps(config_dict)))
    if config.model.name != "icnet" or config.model.cff_upsampling != "bilinear":
        raise PruneError(
            f"{checkpoint}: a {config.model.name} model with {config.model.cff_upsampling} CFF; "
            "prune supports ICNet with the bilinear CFF (the released architecture)"
        )
    width = float(config.model.width)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    variables = {k: trees.to_numpy(v) for k, v in variables.items()}
    pruned = prune_variables(variables, keep, width=width, stem=config.model.stem)
    config.model.width = width * keep
    new_state = write_training_checkpoint(output, config, pruned, num_classes, seed=seed)
    if verbose:
        before, after = param_count(variables["params"]), param_count(pruned["params"])
        _log.info(
            f"pruned {checkpoint} (step {step}, width {width:g}) to width {width * keep:g} by "
            f"the L1 norm of each filter: {before:,} -> {after:,} parameters "
            f"-> {pathlib.Path(output) / 'checkpoints' / '0'} (fine-tune it next)"
        )
    return new_state
