"""ImageNet ResNet-50 trunks for ICNet and PSPNet50 (`config.init_backbone=FILE`).

`load_backbone` copies a ResNet-50 into the
trunk (stem, conv2_1 ... conv5_3) of ICNet at width 1.0 or of PSPNet50, from:
- torchvision `resnet50` (`.pth`: IMAGENET1K_V1/V2; timm `resnet50` has the same names),
- a deep-stem ResNet-50: timm `resnet50c`/`resnet50d` or mmseg `ResNetV1c`/`ResNetV1d` (`.pth`
  or `.safetensors`; a whole mmseg segmentor's `backbone.*`),
- the authors' PSPNet50 release as the ports pass it (`.npy` dict with the Caffe names our trunk
  uses, BN kept or folded).
The file's names say which (`detect_source`); the model must have that source's architecture
(`backbone.Trunk`: stem, stride placement, shortcut) and the config its preprocessing, otherwise
the error names the flags to set. Every tensor is used or listed as skipped (the ImageNet
classifier, BatchNorm's `num_batches_tracked`, layers outside the trunk); shapes are checked per
tensor; values become float32. Files are read by `files` (`.safetensors` without torch;
`.pth` needs torch, `requirements-pretrained.txt`). A BN-folded trunk needs frozen BatchNorm
statistics (`finetune.check_folded_start`).

What users get: the trunk's layers hold the source's weights exactly, and with the model's
output stride 32 (PSPNet `output_stride=32`) the trunk is the source network. ICNet and
PSPNet50 at output stride 8 (or 16) dilate conv4 (2) and conv5 (4) in every block, as the
release does, where torchvision's `replace_stride_with_dilation` keeps the previous dilation in
each stage's first block: the same weights, a differently dilated network, as in any dilated
segmentation trunk initialised from ImageNet.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from icnet_jax.default import IMAGENET_MEAN_RGB, TORCH_MEAN, TORCH_STD
from icnet_jax.errors import UserError
from icnet_jax.models.backbone import STAGE_BLOCKS, STEM_LAYERS, Trunk
from icnet_jax.weights import trees
from icnet_jax.weights.files import mismatch_summary, read_weights
from icnet_jax.weights.finetune import check_folded_start, merge_variables
from icnet_jax.weights.spec import WeightsSpec

_log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------
# Sources: which names, architecture and preprocessing a file has
# ----------------------------------------------------------------------------------------------

# Preprocessing of the PyTorch libraries' ImageNet weights (RGB, 0-255 scale) and of the Caffe
# release (BGR, minus the mean, no scaling).
CAFFE_MEAN, CAFFE_STD = IMAGENET_MEAN_RGB, (1.0, 1.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Source:
    """A kind of ResNet-50 file: its names, the trunk it needs and the input it expects."""

    name: str
    trunk: Trunk
    bgr: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    stem_names: tuple[tuple[str, str], ...] = ()  # (conv, bn) per stem conv; torch sources
    prefix: str = ""  # stripped from the file's names before matching


def _torch_source(name: str, stem: str, stem_names, shortcut: str, prefix: str = "") -> Source:
    return Source(
        name, Trunk(stem, "3x3", shortcut), False, TORCH_MEAN, TORCH_STD, stem_names, prefix
    )


_TIMM_DEEP_STEM = (("conv1.0", "conv1.1"), ("conv1.3", "conv1.4"), ("conv1.6", "bn1"))
_MMSEG_DEEP_STEM = (("stem.0", "stem.1"), ("stem.3", "stem.4"), ("stem.6", "stem.7"))


def detect_source(names: set[str], path: str = "") -> Source:
    """The source of a file from its tensor names (module docstring); a clear error otherwise."""
    prefix = ""
    if not any(n.startswith(("conv1", "stem.", "layer1.")) for n in names):
        for candidate in ("backbone.", "module.", "module.backbone."):
            if any(n.startswith(candidate) for n in names):
                stripped = {n[len(candidate) :] for n in names if n.startswith(candidate)}
                if any(n.startswith(("conv1", "stem.")) for n in stripped):
                    prefix, names = candidate, stripped
    if "conv1_1_3x3_s2/weights" in names:
        return Source("PSPNet50 release (Caffe names)", Trunk(), True, CAFFE_MEAN, CAFFE_STD)
    deep = _TIMM_DEEP_STEM if "conv1.0.weight" in names else None
    deep = _MMSEG_DEEP_STEM if "stem.0.weight" in names else deep
    if deep is not None:
        avg = "layer1.0.downsample.2.weight" in names  # [pool, conv, bn] rather than [conv, bn]
        library = "timm" if deep is _TIMM_DEEP_STEM else "mmseg"
        model = {"timm": ("resnet50c", "resnet50d"), "mmseg": ("ResNetV1c", "ResNetV1d")}[library]
        title = f"{library} {model[avg]} (deep stem{', average-pool shortcut' if avg else ''})"
        return _torch_source(title, "deep", deep, "avgpool" if avg else "conv", prefix)
    if "conv1.weight" in names and "bn1.weight" in names:
        stem = (("conv1", "bn1"),)
        return _torch_source("torchvision resnet50 (7x7 stem)", "resnet", stem, "conv", prefix)
    example = ", ".join(sorted(names)[:4])
    raise UserError(
        f"{path}: not a ResNet-50 this loader knows (names such as {example}); expected "
        "torchvision's (conv1.weight, layer1.0.conv1.weight), timm resnet50c/d (conv1.0.weight), "
        "mmseg ResNetV1c/d (stem.0.weight) or the PSPNet50 release's (conv1_1_3x3_s2/weights)"
    )


def source_spec(source: Source, config) -> WeightsSpec:
    """The `WeightsSpec` a model needs to hold `source`'s trunk: the config's, with the source's
    trunk switches and input, at width 1.0 (a ResNet-50's channels)."""
    ours = WeightsSpec.from_config(config)
    trunk = source.trunk._asdict()
    return dataclasses.replace(
        ours, width=1.0, bgr=source.bgr, mean=source.mean, std=source.std, **trunk
    )


def required_settings(source: Source, config) -> list[str]:
    """The flags the config needs for `source` (empty when it already fits)."""
    needed = source_spec(source, config)
    flags = []
    for key, _, want in WeightsSpec.from_config(config).differences(needed):
        if key == "model.width":
            flags.append("--config.model.width=1.0 (configs/cityscapes.py:width1 or :pspnet50)")
        elif isinstance(want, tuple):
            flags.append(f"'--config.{key}=({', '.join(f'{v:g}' for v in want)})'")
        else:
            flags.append(f"--config.{key}={want}")
    return flags


# ----------------------------------------------------------------------------------------------
# Mapping a file into the trunk
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class BackboneReport:
    """What `trunk_variables` did; tensor names are the file's."""

    path: str
    source: str
    loaded: list[str]  # file tensors copied into the model
    skipped: dict[str, list[str]]  # reason -> file tensors not used
    untouched: list[str]  # model layers outside the trunk: their fresh initialisation is kept

    def summary(self) -> str:
        lines = [
            f"initialised the trunk from {self.path} ({self.source}): {len(self.loaded)} tensors "
            f"loaded"
        ]
        for reason, names in self.skipped.items():
            shown = ", ".join(names[:6]) + (
                f", ... ({len(names)} in all)" if len(names) > 6 else ""
            )
            lines.append(f"  skipped, {reason}: {shown}")
        lines.append(
            f"  kept freshly initialised (not in a ResNet-50): {', '.join(self.untouched)}"
        )
        return "\n".join(lines)


def trunk_layers(params: Mapping[str, Any], trunk: Trunk) -> list[tuple[str, ...]]:
    """Module paths of the trunk's ConvBN layers in `params` (stem, then each bottleneck's
    1x1_reduce, 3x3, 1x1_increase and, in a stage's first block, 1x1_proj)."""
    paths: list[tuple[str, ...]] = [(name,) for name, _, _ in STEM_LAYERS[trunk.stem]]
    for stage, blocks in STAGE_BLOCKS.items():
        for i in range(1, blocks + 1):
            for conv in ("1x1_reduce", "3x3", "1x1_increase", "1x1_proj"):
                if conv in params.get(f"conv{stage}_{i}", {}):
                    paths.append((f"conv{stage}_{i}", conv))
    missing = [p for p in paths[: len(STEM_LAYERS[trunk.stem])] if p[0] not in params]
    if missing or len(paths) != len(STEM_LAYERS[trunk.stem]) + 52:  # 16 blocks x 3 + 4 proj
        raise ValueError("the model has no complete ResNet-50 trunk (stem, conv2_1 ... conv5_3)")
    return paths


def _torch_names(source: Source, path: tuple[str, ...]) -> tuple[str, str]:
    """(conv, bn) name prefixes of one of our trunk layers in a torch-style file."""
    if len(path) == 1:
        index = [name for name, _, _ in STEM_LAYERS[source.trunk.stem]].index(path[0])
        return source.stem_names[index]
    stage, block = (int(n) for n in path[0].removeprefix("conv").split("_"))
    base = f"layer{stage - 1}.{block - 1}."
    if path[1] == "1x1_proj":
        first = 1 if source.trunk.shortcut == "avgpool" else 0
        return f"{base}downsample.{first}", f"{base}downsample.{first + 1}"
    n = {"1x1_reduce": 1, "3x3": 2, "1x1_increase": 3}[path[1]]
    return f"{base}conv{n}", f"{base}bn{n}"


def _float32(name: str, array: np.ndarray) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.floating) and array.dtype != ml_dtypes.bfloat16:
        raise ValueError(f"{name}: dtype {array.dtype}, expected floating point weights")
    return np.asarray(array).astype(np.float32)


def _torch_variables(tensors, source, params, stats, layers):
    """Our `{'params', 'batch_stats'}` of `layers` from a torch-style state dict."""
    out_params, out_stats, used, missing, misshaped = {}, {}, set(), [], []

    def take(name: str, shape: tuple[int, ...], transpose: bool = False):
        key = source.prefix + name
        if key not in tensors:
            missing.append(f"{key} {list(shape)}")
            return None
        used.add(key)
        array = tensors[key]
        file_shape = tuple(array.shape)
        if transpose:  # torch [out, in, kh, kw] -> ours [kh, kw, in, out]
            if array.ndim != 4:
                misshaped.append(f"{key}: file {list(file_shape)}, model expects a 4-D kernel")
                return None
            array = np.transpose(array, (2, 3, 1, 0))
        if tuple(array.shape) != tuple(shape):
            want = (shape[3], shape[2], shape[0], shape[1]) if transpose else shape
            misshaped.append(f"{key}: file {list(file_shape)}, model expects {list(want)}")
            return None
        return _float32(key, array)

    for path in layers:
        conv, bn = _torch_names(source, path)
        p, s = trees.node(params, path), trees.node(stats, path)
        n = p["bn"]["scale"].shape
        values = {
            "kernel": take(f"{conv}.weight", p["conv"]["kernel"].shape, transpose=True),
            "scale": take(f"{bn}.weight", n),
            "bias": take(f"{bn}.bias", n),
            "mean": take(f"{bn}.running_mean", s["bn"]["mean"].shape),
            "var": take(f"{bn}.running_var", s["bn"]["var"].shape),
        }
        used.add(source.prefix + f"{bn}.num_batches_tracked")
        if any(v is None for v in values.values()):
            continue
        trees.put(out_params, path, {"conv": {"kernel": values["kernel"]}})
        out_params_node = trees.node(out_params, path)
        out_params_node["bn"] = {"scale": values["scale"], "bias": values["bias"]}
        trees.put(out_stats, path, {"bn": {"mean": values["mean"], "var": values["var"]}})
    return {"params": out_params, "batch_stats": out_stats}, used, missing, misshaped


def _caffe_variables(tensors, params, layers):
    """Our `{'params', 'batch_stats'}` of `layers` from the release's Caffe names (BN kept or
    folded, through the release converter)."""
    from icnet_jax.weights import release

    template: dict[str, Any] = {}
    for path in layers:
        trees.put(template, path, trees.node(params, path))
    names = {"_".join(path) for path in layers}
    ours, used = {}, set()
    for name, value in tensors.items():
        # Caffe's `<conv>/bn` as some ports write it -> the converter's `<conv>_bn`.
        canonical = name.replace("/bn/", "_bn/")
        layer = canonical.rpartition("/")[0]
        if layer in names or layer.removesuffix("_bn") in names:
            ours[canonical] = value
            used.add(name)
    try:
        variables, _, _ = release.release_variables(ours, {"params": template}, skip=())
    except ValueError as error:  # its message lists the tensors on several lines: make it one
        raise ValueError("; ".join(line.strip() for line in str(error).splitlines())) from None
    return variables, used, [], []


def trunk_variables(
    tensors: Mapping[str, np.ndarray],
    variables: Mapping[str, Any],
    trunk: Trunk,
    *,
    path: str = "",
) -> tuple[dict[str, Any], BackboneReport]:
    """`variables` (`{'params', 'batch_stats'}` of ICNet or PSPNet, arrays or shapes) with the
    trunk replaced by the ResNet-50 in `tensors` (a file's flat tensors).

    Raises UserError when the source does not fit `trunk` or when tensors are missing, extra
    (other than those skipped by design) or mis-shaped, naming them.
    """
    source = detect_source(set(tensors), path)
    if source.trunk != trunk:
        raise UserError(
            f"{path}: {source.name} needs the trunk {source.trunk._asdict()}, the model has "
            f"{trunk._asdict()}"
        )
    params, stats = (
        trees.plain_dict(variables["params"]),
        trees.plain_dict(variables.get("batch_stats", {})),
    )
    layers = trunk_layers(params, trunk)
    try:
        if source.stem_names:
            loaded, used, missing, misshaped = _torch_variables(
                tensors, source, params, stats, layers
            )
        else:
            loaded, used, missing, misshaped = _caffe_variables(tensors, params, layers)
    except ValueError as error:
        raise UserError(f"{path}: {error}") from None
    skipped: dict[str, list[str]] = {}
    extra = []
    for name in sorted(tensors):
        if name in used and not name.endswith("num_batches_tracked"):
            continue
        short = name.removeprefix(source.prefix)
        if name.endswith("num_batches_tracked"):
            reason = "BatchNorm bookkeeping"
        elif short.startswith("fc.") or (not name.startswith(source.prefix)):
            reason = "the ImageNet classifier" if short.startswith("fc.") else "outside the trunk"
        elif not source.stem_names:  # the release's head: pyramid pooling, conv5_4, classifiers
            reason = "not part of the trunk (PSPNet's head)"
        else:
            extra.append(f"{name} {list(np.shape(tensors[name]))}")
            continue
        skipped.setdefault(reason, []).append(name)
    if missing or extra or misshaped:
        raise UserError(
            f"{path}: does not fit a ResNet-50 trunk ({source.name}): "
            + mismatch_summary(missing, extra, misshaped)
        )
    merged, _ = merge_variables({"params": params, "batch_stats": stats}, loaded)
    untouched = sorted({k for k in params if (k,) not in layers and not k.startswith(_BLOCKS)})
    loaded_names = sorted(n for n in used if n in tensors and not n.endswith("num_batches_tracked"))
    report = BackboneReport(str(path), source.name, loaded_names, skipped, untouched)
    return merged, report


_BLOCKS = tuple(f"conv{stage}_{i}" for stage, n in STAGE_BLOCKS.items() for i in range(1, n + 1))


def load_backbone(state: Any, path: str | pathlib.Path, config, *, verbose: bool = True):
    """`state` (a fresh `TrainState`) with its trunk from an ImageNet ResNet-50 file.

    Checks that the config fits the file (architecture switches, width 1.0, preprocessing) and
    names the flags to set when it does not; refuses BN-folded trunks unless statistics are
    frozen; prints the report. Returns `(state, BackboneReport)`.
    """
    if config.get("init_checkpoint"):
        raise UserError(
            "set config.init_backbone or config.init_checkpoint, not both (a checkpoint "
            "already holds a whole network)"
        )
    tensors = read_weights(path)
    source = detect_source(set(tensors), str(path))
    flags = required_settings(source, config)
    if flags:
        raise UserError(
            f"{path} holds {source.name} weights, which need: {' '.join(flags)} (README, "
            "'Pretrained starts')"
        )
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    trunk = Trunk(config.model.stem, config.model.stride_on, config.model.shortcut)
    merged, report = trunk_variables(tensors, variables, trunk, path=str(path))
    check_folded_start(merged["batch_stats"], None, config, str(path))
    if verbose:
        _log.info(report.summary())
    state = state.replace(
        params=jax.tree.map(jnp.asarray, merged["params"]),
        batch_stats=jax.tree.map(jnp.asarray, merged["batch_stats"]),
    )
    return state, report
