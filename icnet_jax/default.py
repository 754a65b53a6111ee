"""Defaults shared by every config: the paper's recipe (Sec. 5.1) for ICNet on Cityscapes.

The files in the repository's `configs/` start from `get_config()` and apply named variants
(`ABLATIONS`, `RECIPES` and their own recipes) with `apply_variant`; the package itself never
imports `configs/`, so it works installed (`pip install -e .`) from any directory. Every field can
be overridden on the command line, e.g. `--config.batch_size=8`.
"""

from collections.abc import Mapping
from typing import Any

import ml_collections
from ml_collections import config_dict

# ImageNet mean in RGB order, on the 0-255 scale (the release subtracts it, BGR, no scaling).
IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)
# What the PyTorch libraries' ImageNet weights expect: RGB minus this mean, divided by this std.
TORCH_MEAN, TORCH_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)

# PSPNet50 at full width with its auxiliary head on conv4 (weight 0.4, as in PSPNet).
_PSPNET50 = {"model.name": "pspnet", "model.width": 1.0, "loss_weights": {"psp": 1.0, "aux": 0.4}}

# The paper's compression recipe (Sec. 5.2) from a torchvision / timm `resnet50` trunk: train at
# full width (`config.init_backbone=FILE`), `tools.prune --keep=0.5`, fine-tune the half width
# (`config.init_checkpoint=PRUNED`). Both stages keep the trunk's architecture and input.
_TORCH_TRUNK = {
    "model.stem": "resnet",
    "model.stride_on": "3x3",
    "input.bgr": False,
    "input.mean": TORCH_MEAN,
    "input.std": TORCH_STD,
}

# Named variants: `--config=configs/cityscapes.py:<variant>`; join several with '+'
# (`configs/camvid.py:cpu+compress_full`), applied left to right. Ablations are paper Tables 1-3
# (and the ports' loss weights); recipes are ways to train (and each config file's own).
ABLATIONS: dict[str, dict[str, Any]] = {
    "sub4": {"model.branch": "sub4"},
    "sub24": {"model.branch": "sub24"},
    "sub124": {"model.branch": "sub124"},
    "width1": {"model.width": 1.0},
    "width025": {"model.width": 0.25},
    "deconv3": {"model.cff_upsampling": "deconv3"},
    "deconv5": {"model.cff_upsampling": "deconv5"},
    "deconv7": {"model.cff_upsampling": "deconv7"},
    "no_clg": {"loss_weights": {"sub124": 1.0}},
    "pspnet50": _PSPNET50,
    "pspnet50_half": {**_PSPNET50, "model.width": 0.5},
    "pspnet50_os16": {**_PSPNET50, "model.output_stride": 16},
    "pspnet50_os32": {**_PSPNET50, "model.output_stride": 32},
    "ports_weights": {"loss_weights": {"sub4": 0.16, "sub24": 0.4, "sub124": 1.0}},
}
RECIPES: dict[str, dict[str, Any]] = {
    "compress_full": {**_TORCH_TRUNK, "model.width": 1.0},
    "compress_half": {**_TORCH_TRUNK, "model.width": 0.5},
}


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.model = _model_config()
    config.dataset = _dataset_config()
    config.input = _input_config()

    config.batch_size = 16  # global, across devices and hosts
    config.num_steps = 30_000
    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 0.01
    config.optim.power = 0.9  # 'poly' decay
    config.optim.momentum = 0.9
    config.optim.weight_decay = 1e-4  # kernels only
    config.optim.freeze_bn_affine = False  # True: frozen-statistics layers keep BN scale/offset
    config.loss_weights = ml_collections.ConfigDict({"sub4": 0.4, "sub24": 0.4, "sub124": 1.0})
    config.ignore_label = 255
    # Options against class imbalance (docs/camvid.md); both off in the paper's recipe.
    config.loss = ml_collections.ConfigDict()
    # '' | 'median_frequency' (SegNet) | 'enet' (1 / ln(1.02 + p)), from the training split's
    # pixel counts | one weight per class, e.g. '1,1,4,1,2,2,5,5,1,5,8'.
    config.loss.class_weights = ""
    config.loss.ohem = False  # online hard pixel mining, on every branch (docs/training.md)
    config.loss.ohem_thresh = 0.7  # keep pixels whose probability of the true class is below
    config.loss.ohem_min_kept = 100_000  # ... but at least this many per image (label resolution)
    # 'image': min_kept in each image | 'batch': min_kept * batch size in the batch (mmseg's)
    config.loss.ohem_scope = "image"
    # Denominator: 'kept' pixels' class weights (ports) | count of 'labelled' | all 'pixels' (mmseg)
    config.loss.ohem_normalize = "kept"

    # Start from this checkpoint when the workdir has none (fine-tuning; see README).
    config.init_checkpoint = ""
    # Or only the trunk from an ImageNet ResNet-50 file (.pth, .safetensors, .npy; see README).
    config.init_backbone = ""

    config.log_every = 20
    config.checkpoint_every = 1000
    config.keep_checkpoints = 3
    config.eval_every = 0  # 0: only at the end
    return config


def _model_config() -> ml_collections.ConfigDict:
    """The network: `models/icnet.py`, `models/pspnet.py`, `models/backbone.py`."""
    model = ml_collections.ConfigDict()
    model.name = "icnet"  # icnet | pspnet
    model.width = 0.5  # the released network; 1.0 is the full width it was pruned from
    model.branch = "sub124"  # inference output (Table 2); training uses every branch
    model.cff_upsampling = "bilinear"  # or deconv3 / deconv5 / deconv7 (Table 3)
    model.output_stride = 8  # PSPNet only (Table 1 left)
    model.align_corners = True
    # Decay of BatchNorm's running averages: the release's (its prototxt's bn_param momentum).
    model.bn_momentum = 0.95
    model.dtype = "float32"  # computation; parameters stay float32
    # BatchNorm uses and keeps its running statistics in training (needed from BN-folded weights).
    model.freeze_bn_stats = False
    # Trunk architecture (icnet_jax/models/backbone.py); the defaults are the release's. Other
    # values load ImageNet ResNet-50s exactly (config.init_backbone, README "Pretrained starts").
    model.stem = "release"  # release | resnet (7x7, torchvision) | deep (resnet50c/d, V1c)
    model.stride_on = "1x1"  # 1x1 (Caffe, the release) | 3x3 (torchvision, timm, mmseg)
    model.shortcut = "conv"  # conv | avgpool (timm resnet50d, mmseg ResNetV1d)
    return model


def _dataset_config() -> ml_collections.ConfigDict:
    """The tfds dataset and its splits (`data/datasets.py`)."""
    dataset = ml_collections.ConfigDict()
    dataset.name = "cityscapes"
    dataset.data_dir = "data/tfds"  # where prepared array_record files go
    dataset.manual_dir = ""  # where the downloaded archives are
    dataset.train_split = "train"
    dataset.eval_split = "val"
    dataset.builder_kwargs = ml_collections.ConfigDict()
    return dataset


def _input_config() -> ml_collections.ConfigDict:
    """Augmentation, normalisation and evaluation size (`data/input_spec.py`)."""
    inputs = ml_collections.ConfigDict()
    # 32k+1 crops keep the release geometry: every x2 zoom and shrink is exact (the 1/8 map of the
    # medium branch meets the high one's), labels shrink exactly to 1/4, 1/8, 1/16.
    inputs.crop_size = (1025, 1025)
    inputs.scale_range = (0.5, 2.0)
    inputs.mirror = True
    # Random brightness, contrast, saturation and hue (mmseg's PhotoMetricDistortion); not in
    # the paper's recipe.
    inputs.photometric = False
    inputs.mean = IMAGENET_MEAN_RGB
    inputs.std = (1.0, 1.0, 1.0)
    inputs.bgr = True  # as the release
    inputs.worker_count = 0
    # Evaluation: None = native resolution; Cityscapes' release protocol resizes to 1025x2049.
    # A typed placeholder (reads None), so that `--config.input.eval_size=(H,W)` can set it.
    inputs.eval_size = config_dict.placeholder(tuple)
    return inputs


def override(config: ml_collections.ConfigDict, updates: dict) -> ml_collections.ConfigDict:
    """Sets `{'dotted.key': value}` fields of `config` (dicts become ConfigDicts)."""
    for key, value in updates.items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value
    return config


def apply_variant(
    config: ml_collections.ConfigDict,
    variant: str | None,
    recipes: Mapping[str, dict] | None = None,
) -> ml_collections.ConfigDict:
    """Applies named variants (`'a'` or `'a+b'`, left to right) of `ABLATIONS`, `RECIPES` and a
    config file's own `recipes` (dotted keys) to `config`.

    Raises:
      ValueError: (one line) a name that is none of them, or two joined variants that set one key
        to different values.
    """
    own = dict(recipes or {})
    known = {**ABLATIONS, **RECIPES, **own}
    names = [name for name in (variant or "").split("+") if name]
    for name in names:
        if name not in known:
            raise ValueError(
                f"unknown variant {name!r}; ablations: {', '.join(sorted(ABLATIONS))}; "
                f"recipes: {', '.join(sorted({**RECIPES, **own}))}"
            )
    _check_agree(names, known)
    for name in names:
        override(config, known[name])
    return config


def _check_agree(names: list[str], known: Mapping[str, dict]) -> None:
    """Raises ValueError when two of the variants `names` set one key to different values."""
    first: dict[str, tuple[str, object]] = {}
    for name in names:
        for key, value in known[name].items():
            other, theirs = first.setdefault(key, (name, value))
            if theirs != value:
                raise ValueError(
                    f"variants {other!r} and {name!r} both set {key} ({theirs!r} and {value!r}): "
                    f"join variants that agree, or set --config.{key} on the command line"
                )
