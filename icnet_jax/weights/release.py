"""The authors' released ICNet weights as variables of this package's model, written as a
training checkpoint (the library half of `python -m icnet_jax.tools.convert_weights`).

`convert` writes `DIR/checkpoints/0/{state,data,config}`: a full `TrainState` at step 0 (params
and BatchNorm statistics from the release, a fresh optimizer state), so that `--checkpoint=DIR`
works for evaluation and prediction and `config.init_checkpoint=DIR` for fine-tuning. The saved
config records the release's preprocessing: BGR, minus the ImageNet mean, no scaling, evaluation
at 1025x2049, align-corners resizing, width 0.5, and whether BatchNorm was folded.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from icnet_jax import errors
from icnet_jax.data import taxonomy
from icnet_jax.models.layers import BN_EPSILON
from icnet_jax.weights import trees
from icnet_jax.weights.files import (  # noqa: F401 - WeightsError, load_release: this tool's API
    WeightsError,
    flatten_tensors,
    load_release,
    mismatch_summary,
)

_log = logging.getLogger(__name__)


class OutputExistsError(FileExistsError, errors.UserError):
    """The output folder already holds checkpoints (never overwritten)."""


_INIT_SIZE = (9, 9)  # parameter shapes do not depend on the image size
_BN_ALIASES = {
    "scale": "scale", "gamma": "scale",
    "offset": "offset", "beta": "offset",
    "mean": "mean", "moving_mean": "mean",
    "variance": "variance", "moving_variance": "variance",
}  # fmt: skip
_SLOT_SUFFIXES = ("Momentum", "Adam", "Adam_1", "RMSProp", "RMSProp_1", "ExponentialMovingAverage")


def _is_bookkeeping(name: str) -> bool:
    last = name.rsplit("/", 1)[-1]
    return (
        name == "global_step"
        or last in _SLOT_SUFFIXES
        or last.startswith(("beta1_power", "beta2_power"))
    )


def _layers(params: Mapping[str, Any], path: tuple[str, ...] = ()):
    """(release name, module path, kind) of every layer: 'convbn' or 'classifier'."""
    for name, value in params.items():
        if not isinstance(value, Mapping):
            continue
        if "conv" in value:
            yield "_".join((*path, name)), (*path, name), "convbn"
        elif "kernel" in value:
            yield "_".join((*path, name)), (*path, name), "classifier"
        else:
            yield from _layers(value, (*path, name))


def release_variables(
    tensors: Mapping[str, np.ndarray],
    template: Mapping[str, Any],
    *,
    skip: tuple[str, ...] = ("conv6_sub4", "conv6_sub2"),
) -> tuple[dict[str, Any], list[str], list[str]]:
    """The released tensors as `{'params', 'batch_stats'}` of our unfolded model.

    Args:
      tensors: flat `{'layer/param': array}` (folded, BN kept, or a mix, layer by layer).
      template: variables (or their shapes, `jax.eval_shape`) of the model to fill.
      skip: layers absent from the release (left out of the result: keep their initialisation).
    Returns:
      `(variables, ignored, absent)`: the variables of every layer but `skip`; the tensors ignored
      as training bookkeeping; the `skip` layers (to initialise randomly).
    Raises:
      ValueError listing every missing, extra and mis-shaped tensor.
    """
    ignored = sorted(n for n in tensors if _is_bookkeeping(n))
    reader = _Reader({n: v for n, v in tensors.items() if not _is_bookkeeping(n)})
    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    absent = []
    for name, path, kind in _layers(template["params"]):
        if name in skip:
            absent.append(name)
            continue
        shapes = template["params"]
        for part in path:
            shapes = shapes[part]
        if kind == "classifier":
            layer_params, layer_stats = _classifier(reader, name, shapes), None
        else:
            kshape = tuple(shapes["conv"]["kernel"].shape)
            layer_params, layer_stats = _conv_bn(reader, name, kshape)
        if layer_params is not None:
            trees.put(params, path, layer_params)
        if layer_stats is not None:
            trees.put(stats, path, layer_stats)
    reader.check()
    return {"params": params, "batch_stats": stats}, ignored, absent


class _Reader:
    """Takes released tensors by canonical name (BN aliases resolved), recording what is
    missing, mis-shaped and left over for one error listing them all."""

    def __init__(self, tensors: Mapping[str, np.ndarray]):
        self.tensors = tensors
        self.canonical = {}  # BN-kept names -> `layer_bn/<canonical>`
        for name in tensors:
            layer, _, param = name.rpartition("/")
            if layer.endswith("_bn") and param in _BN_ALIASES:
                self.canonical[f"{layer}/{_BN_ALIASES[param]}"] = name
            else:
                self.canonical[name] = name
        self.used: set[str] = set()
        self.missing: list[str] = []
        self.misshaped: list[str] = []

    def __contains__(self, key: str) -> bool:
        return key in self.canonical

    def take(self, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
        if key not in self.canonical:
            self.missing.append(f"{key} {list(shape)}")
            return None
        name = self.canonical[key]
        self.used.add(name)
        array = np.asarray(self.tensors[name])
        if tuple(array.shape) != tuple(shape):
            self.misshaped.append(f"{name}: file {list(array.shape)}, model expects {list(shape)}")
            return None
        return array.astype(np.float32)

    def check(self) -> None:
        extra = sorted(
            f"{n} {list(np.shape(v))}" for n, v in self.tensors.items() if n not in self.used
        )
        if self.missing or extra or self.misshaped:
            raise WeightsError(
                "the weights do not match the ICNet release: "
                + mismatch_summary(self.missing, extra, self.misshaped)
            )


def _classifier(reader: _Reader, name: str, shapes: Mapping[str, Any]) -> dict | None:
    kernel = reader.take(f"{name}/weights", shapes["kernel"].shape)
    bias = reader.take(f"{name}/biases", shapes["bias"].shape)
    return None if kernel is None or bias is None else {"kernel": kernel, "bias": bias}


def _conv_bn(reader: _Reader, name: str, kshape: tuple[int, ...]) -> tuple[Any, Any]:
    """`(params, batch_stats)` of one convolution + BatchNorm, BN kept or folded (None, None
    when a tensor is missing or mis-shaped: the reader lists it)."""
    n = kshape[-1]
    kernel = reader.take(f"{name}/weights", kshape)
    if f"{name}_bn/scale" in reader or f"{name}_bn/mean" in reader:  # BN kept
        bn = {
            k: reader.take(f"{name}_bn/{k}", (n,)) for k in ("scale", "offset", "mean", "variance")
        }
        conv_bias = None
        if f"{name}/biases" in reader:  # a conv bias before BN: shifts the mean
            conv_bias = reader.take(f"{name}/biases", (n,))
        scale, offset, mean, variance = bn.values()
        if kernel is None or scale is None or offset is None or mean is None or variance is None:
            return None, None
        if conv_bias is not None:
            mean = mean - conv_bias
        params = {"conv": {"kernel": kernel}, "bn": {"scale": scale, "bias": offset}}
        return params, {"bn": {"mean": mean.astype(np.float32), "var": variance}}
    bias = reader.take(f"{name}/biases", (n,))  # BN folded into the convolution
    if kernel is None or bias is None:
        return None, None
    params = {"conv": {"kernel": kernel}, "bn": {"scale": np.ones(n, np.float32), "bias": bias}}
    # var = 1 - eps: BatchNorm's var + eps is then exactly 1.
    stats = {"mean": np.zeros(n, np.float32), "var": np.full(n, 1.0 - BN_EPSILON, np.float32)}
    return params, {"bn": stats}


def infer_release_geometry(
    tensors: Mapping[str, np.ndarray], expected_classes: int | None = None
) -> tuple[float, int]:
    """(width, num_classes) of released tensors (from conv1_1 and the classifier).

    Raises `WeightsError` when they are not ICNet's, when the classifier's weights and biases
    disagree, or when it has another number of classes than `expected_classes` (if given).
    """
    shapes = {name: np.shape(array) for name, array in tensors.items()}
    for name in ("conv1_1_3x3_s2/weights", "conv6_cls/weights"):
        if name not in shapes or len(shapes[name]) != 4:
            found = ", ".join(sorted(shapes)[:3]) or "nothing"
            raise WeightsError(
                f"not ICNet weights: no 4-d tensor {name} ({len(shapes)} tensors: {found}, ...)"
            )
    width = shapes["conv1_1_3x3_s2/weights"][-1] / 64
    num_classes = int(shapes["conv6_cls/weights"][-1])
    biases = shapes.get("conv6_cls/biases")
    if biases is not None and tuple(biases) != (num_classes,):
        raise WeightsError(
            f"the classifier is inconsistent: conv6_cls/weights has {num_classes} classes but "
            f"conv6_cls/biases has shape {list(biases)} (a cut or edited file?)"
        )
    if expected_classes is not None and num_classes != expected_classes:
        raise WeightsError(
            f"the classifier conv6_cls has {num_classes} classes where the config says "
            f"{expected_classes}: to convert a model trained on {num_classes} classes, set "
            f"--num_classes={num_classes} (and --config.dataset.name to its dataset)"
        )
    return width, num_classes


def expected_classes(config, num_classes: int | None = None) -> int | None:
    """`num_classes` if given, else that of `config.dataset.name` (None if it has no fixed one)."""
    info = taxonomy.DATASETS.get(config.dataset.name)
    return num_classes or (info.num_classes if info is not None else None)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def release_config(config, *, width: float = 0.5, num_classes: int = 19):
    """`config` set to the release's preprocessing and model (in place; returned)."""
    from icnet_jax.default import IMAGENET_MEAN_RGB

    config.model.name = "icnet"
    config.model.width = float(width)
    config.model.align_corners = True
    config.model.cff_upsampling = "bilinear"
    config.input.bgr = True
    config.input.mean = tuple(IMAGENET_MEAN_RGB)  # RGB order, subtracted after BGR swap
    config.input.std = (1.0, 1.0, 1.0)
    if num_classes == 19:
        config.dataset.name = "cityscapes"
        config.input.eval_size = (1025, 2049)
    return config


def write_training_checkpoint(
    output: str | pathlib.Path,
    config,
    variables: Mapping[str, Any],
    num_classes: int,
    *,
    seed: int = 0,
    step: int = 0,
) -> Any:
    """Writes `output/checkpoints/<step>/{state,data,config}` with a fresh `TrainState` of the model
    `config` describes, whose params and batch_stats are replaced by `variables` wherever given
    (layers absent from `variables` keep their random initialisation). Returns the state."""
    import jax
    import jax.numpy as jnp

    from icnet_jax import build
    from icnet_jax.weights import checkpoints, finetune

    output = pathlib.Path(output)
    existing = output / "checkpoints"
    if existing.is_dir() and any(p.name.isdigit() for p in existing.iterdir()):
        raise OutputExistsError(f"{existing} already holds checkpoints; choose another --output")
    model = build.create_model(config, num_classes)
    tx = build.create_optimizer(config)
    # Eager init on a tiny image: jit-compiling the whole network costs far more on a CPU.
    init = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, *_INIT_SIZE, 3), jnp.float32))
    fresh = build.TrainState.create(
        apply_fn=model.apply, params=init["params"], tx=tx, batch_stats=init.get("batch_stats", {})
    )
    target = {"params": fresh.params, "batch_stats": fresh.batch_stats}
    source = {c: variables.get(c, {}) for c in ("params", "batch_stats")}
    merged, _ = finetune.merge_variables(jax.device_get(target), source)
    params = jax.tree.map(jnp.asarray, merged["params"])
    state = fresh.replace(
        params=params,
        batch_stats=jax.tree.map(jnp.asarray, merged.get("batch_stats", {})),
        opt_state=tx.init(params),
        step=jnp.asarray(step, jnp.int32),
    )
    config_dict = _json_dict(config)
    checkpoints.write(output, step, state, config_dict)
    return state


def _json_dict(config) -> dict:
    import json

    return json.loads(config.to_json())


def convert(
    input_path,
    output,
    config,
    *,
    num_classes: int | None = None,
    seed: int = 0,
    verbose: bool = True,
):
    """Converts released weights at `input_path` to a checkpoint in `output` (see module doc).

    `num_classes`: the classifier's expected number of classes (default: the config's dataset's).
    """
    import jax
    import jax.numpy as jnp

    from icnet_jax.models import ICNet
    from icnet_jax.weights import finetune

    tensors = load_release(input_path)
    width, num_classes = infer_release_geometry(tensors, expected_classes(config, num_classes))
    config = release_config(config, width=width, num_classes=num_classes)
    model = ICNet(num_classes=num_classes, width=config.model.width)
    template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 65, 65, 3))))
    variables, ignored, absent = release_variables(tensors, template)
    # Recorded for fine-tuning, which refuses BN-folded weights unless BatchNorm statistics are
    # frozen (icnet_jax.weights.finetune.check_folded_start).
    config.bn_folded = bool(finetune.folded_layers(variables["batch_stats"]))
    state = write_training_checkpoint(output, config, variables, num_classes, seed=seed)
    if verbose:
        count = len(tensors) - len(ignored)
        _log.info(
            f"converted {count} tensors of {input_path} (ICNet width {width:g}, "
            f"{num_classes} classes) -> {pathlib.Path(output) / 'checkpoints' / '0'}"
        )
        if ignored:
            _log.info(f"ignored training bookkeeping: {', '.join(ignored)}")
        if absent:
            _log.info(
                f"not in the release, initialised randomly (training-only heads for cascade label "
                f"guidance): {', '.join(absent)}"
            )
        _log.info(
            "preprocessing recorded in the config: BGR, minus mean (RGB) "
            f"{tuple(config.input.mean)}, std {tuple(config.input.std)}, eval size "
            f"{config.input.eval_size}, align_corners {config.model.align_corners}"
        )
    return state
