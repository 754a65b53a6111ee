"""Shared by `evaluate.py` and `predict.py`: loading a checkpoint with the settings saved with it,
test-time augmentation (flip, multi-scale), jitted steps that return argmax maps, and the
evaluation loop over a split (several local devices, several hosts).

Settings that describe the weights (`CHECKPOINT_KEYS`: `model.*`, the input normalisation,
`input.eval_size`, `ignore_label`) are taken from the config saved with the checkpoint; a
converted release checkpoint, for instance, records BGR, the ImageNet mean and 1025x2049.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import pathlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from icnet_jax import checkpoints, eval_lib, train_lib
from icnet_jax.data import labels as L
from icnet_jax.metrics import confusion_matrix, segmentation_metrics
from icnet_jax.models.icnet import ALL_BRANCHES, BRANCHES
from icnet_jax.region_analysis import RegionAccuracy

Array = jax.Array
_log = logging.getLogger(__name__)

# Config entries that describe the weights: the checkpoint's saved values win over the command
# line's. "model" stands for every field of config.model.
CHECKPOINT_KEYS: tuple[str, ...] = (
    "model",
    "input.mean",
    "input.std",
    "input.bgr",
    "input.eval_size",
    "ignore_label",
)
# Built-in datasets' class names and palettes, by config.dataset.name.
DATASET_INFOS: dict[str, L.DatasetInfo] = {
    "cityscapes": L.CITYSCAPES,
    "camvid": L.CAMVID,
    "coco_stuff": L.COCO_STUFF,
    "street": L.STREET,
}


# --- Config and checkpoint ---------------------------------------------------------------------


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples the configs use (recursively, dicts too)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _get(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _checkpoint_keys(saved: Mapping[str, Any]) -> list[str]:
    keys = []
    for key in CHECKPOINT_KEYS:
        try:
            value = _get(saved, key)
        except KeyError:
            continue
        if isinstance(value, Mapping):  # "model": each of its fields
            keys.extend(f"{key}.{k}" for k in value)
        else:
            keys.append(key)
    return keys


@dataclasses.dataclass(frozen=True)
class Setting:
    """A config entry taken from the checkpoint: its value and the command line's."""

    key: str
    value: Any
    command_line: Any

    @property
    def differs(self) -> bool:
        return self.value != self.command_line


def merge_checkpoint_config(
    config: ml_collections.ConfigDict,
    saved: Mapping[str, Any],
    command_line_wins: Iterable[str] = (),
) -> tuple[ml_collections.ConfigDict, list[Setting]]:
    """`config` (the command line's) with the `CHECKPOINT_KEYS` entries of `saved` put in.

    Args:
      config: the command-line config (left unchanged; may be locked).
      saved: the config saved with the checkpoint (`checkpoints.read_config`).
      command_line_wins: dotted keys (e.g. `input.eval_size`, or `model` for all of it) whose
        command-line value is kept even though the checkpoint has one.
    Returns:
      The merged config (a new, unlocked ConfigDict) and the entries taken from the checkpoint.
    """
    wins = tuple(command_line_wins)
    merged = config.to_dict()
    taken = []
    for key in _checkpoint_keys(saved):
        if any(key == w or key.startswith(w + ".") for w in wins):
            continue
        value = _tuples(_get(saved, key))
        try:
            current = _get(merged, key)
        except KeyError:
            current = None
        _set(merged, key, value)
        taken.append(Setting(key, value, _tuples(current)))
    return ml_collections.ConfigDict(merged), taken


def describe_settings(settings: Sequence[Setting]) -> str:
    """Lines naming the settings taken from a checkpoint (and the command line's, if different)."""
    if not settings:
        return "no settings saved with the checkpoint; all come from the command line"
    lines = ["settings from the checkpoint (they describe its weights):"]
    for s in settings:
        note = f"   (command line: {s.command_line!r})" if s.differs else ""
        lines.append(f"  {s.key} = {s.value!r}{note}")
    return "\n".join(lines)


@dataclasses.dataclass
class LoadedCheckpoint:
    """A checkpoint ready for inference.

    Attributes:
      config: the command-line config with the checkpoint's settings put in.
      variables: `{'params', 'batch_stats'}`.
      step: the checkpoint's step.
      num_classes: from the classifier's shape.
      path: the step folder.
      workdir: the folder holding `checkpoints/` (default place of evaluation outputs).
      settings: entries taken from the checkpoint (see `describe_settings`).
      saved_config: the config saved with the checkpoint, as a dict ({} if none).
    """

    config: ml_collections.ConfigDict
    variables: dict[str, Any]
    step: int
    num_classes: int
    path: pathlib.Path
    workdir: pathlib.Path
    settings: list[Setting]
    saved_config: dict[str, Any]


def _abstract_state(config: ml_collections.ConfigDict, saved: Mapping[str, Any], num_classes):
    """The restore target of a saved TrainState for the (merged) config's model."""
    model = train_lib.create_model(config, num_classes)
    # The optimiser state is restored too (it is part of the saved TrainState): its structure
    # follows the optimiser settings the checkpoint was trained with.
    optim_config = ml_collections.ConfigDict(config.to_dict())
    if "optim" in saved:
        optim_config.optim = ml_collections.ConfigDict(_tuples(saved["optim"]))
    if "num_steps" in saved:
        optim_config.num_steps = saved["num_steps"]
    tx = train_lib.create_optimizer(optim_config)
    return jax.eval_shape(
        functools.partial(
            train_lib.create_train_state,
            model=model,
            tx=tx,
            image_size=tuple(config.input.crop_size),
        ),
        jax.random.PRNGKey(0),
    )


def load_checkpoint(
    path: str | pathlib.Path,
    config: ml_collections.ConfigDict,
    *,
    command_line_wins: Iterable[str] = (),
) -> LoadedCheckpoint:
    """Restores the weights at `path` (a workdir, its `checkpoints/` or one step folder).

    Without a step folder the newest readable checkpoint is used (an unreadable newest one is
    reported and the previous one tried, as in training). The model is built from the merged
    config (see `merge_checkpoint_config`), with as many classes as the saved classifier has.

    Raises:
      checkpoints.NoCheckpointError: no checkpoint at `path`, or none readable.
    """

    def make_abstract(saved, num_classes):
        if not saved:
            _log.warning("checkpoint at %s has no readable config; using the command line's", path)
        merged, settings = merge_checkpoint_config(config, saved, command_line_wins)
        return _abstract_state(merged, saved, num_classes), (merged, settings)

    restored = checkpoints.restore(path, make_abstract)
    merged, settings = restored.extra
    state = restored.state
    return LoadedCheckpoint(
        config=merged,
        variables={"params": state.params, "batch_stats": state.batch_stats},
        step=restored.step,
        num_classes=restored.num_classes,
        path=restored.path,
        workdir=restored.workdir,
        settings=settings,
        saved_config=restored.saved_config,
    )


def dataset_info_for(name: str, num_classes: int) -> L.DatasetInfo:
    """Class names and palette of a built-in dataset without preparing it.

    Falls back to numbered classes and `labels.generated_palette` for other datasets (custom) or
    when the checkpoint's number of classes differs from the dataset's.
    """
    info = DATASET_INFOS.get(name)
    if info is not None and info.num_classes == num_classes:
        return info
    if info is not None:
        _log.warning(
            "dataset %r has %d classes but the checkpoint %d; using a generated palette",
            name,
            info.num_classes,
            num_classes,
        )
    return L.custom_info(name or "unknown", [f"class_{i}" for i in range(num_classes)])


data_source = train_lib.data_source
inference_model = train_lib.inference_model


def branch_names(model: nn.Module) -> tuple[str, ...]:
    """Keys of the probability dicts of `average_probabilities` for `model`."""
    if getattr(model, "branch", None) == ALL_BRANCHES:
        return BRANCHES
    return ("output",)


def parse_scales(text: str) -> tuple[float, ...]:
    """'0.75,1,1.25' -> (0.75, 1.0, 1.25); each must be positive."""
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"scales must be comma-separated numbers, got {text!r}") from None
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be positive numbers, got {text!r}")
    return scales


# --- Test-time augmentation --------------------------------------------------------------------


def scaled_size(size: Sequence[int], scale: float, align_corners: bool = True) -> tuple[int, int]:
    """`size` times `scale`; with align corners `(n - 1) * s + 1`, which keeps 8k+1 sizes 8k+1
    for scales like 0.75 and 1.25 (1025 -> 769, 1281)."""
    if align_corners:
        return tuple(max(1, round((n - 1) * scale) + 1) for n in size)  # type: ignore[return-value]
    return tuple(max(1, round(n * scale)) for n in size)  # type: ignore[return-value]


def average_probabilities(
    model: nn.Module,
    variables: Any,
    images: Array,
    *,
    eval_size: Sequence[int] | None = None,
    align_corners: bool = True,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> dict[str, Array]:
    """Class probabilities per branch at the images' resolution, averaged over scales and flips.

    Each scale `s` runs `eval_lib.predict_probabilities` with the network input resized to
    `scaled_size(eval_size or image size, s)` (scale 1 without `eval_size`: the image as is),
    and with `flip` also on the mirrored images, in the same batch (probabilities mirrored back);
    the probabilities, all at the images' own resolution, are averaged with equal weights.
    """
    if not scales:
        raise ValueError("scales is empty")
    h, w = images.shape[1:3]
    base = tuple(eval_size) if eval_size is not None else (h, w)
    total: dict[str, Array] | None = None
    count = 0
    for scale in scales:
        if scale <= 0:
            raise ValueError(f"scales must be positive, got {scale}")
        size = (
            None
            if (eval_size is None and scale == 1.0)
            else scaled_size(base, scale, align_corners)
        )
        # The mirrored images join the batch: one network pass (and one copy of it to compile)
        # per scale.
        n = images.shape[0]
        inputs = jnp.concatenate([images, images[:, :, ::-1]]) if flip else images
        p = eval_lib.predict_probabilities(
            model, variables, inputs, eval_size=size, align_corners=align_corners
        )
        if flip:
            p = {k: v[:n] + v[n:, :, ::-1] for k, v in p.items()}
        total = p if total is None else {k: total[k] + p[k] for k in total}
        count += 2 if flip else 1
    assert total is not None
    return {k: v / count for k, v in total.items()} if count > 1 else total


def _prediction_dtype(num_classes: int):
    return jnp.uint8 if num_classes <= 256 else jnp.int32


def make_step(
    model: nn.Module,
    num_classes: int,
    *,
    eval_size: Sequence[int] | None = None,
    align_corners: bool = True,
    ignore_label: int = 255,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> Callable[[Any, Array, Array], tuple[dict[str, Array], dict[str, Array]]]:
    """A jitted `(variables, images [N,H,W,3], labels [N,H,W]) -> (confusions, predictions)`.

    `confusions`: `{branch: int32 [C, C]}` (`metrics.confusion_matrix`); `predictions`:
    `{branch: [N, H, W]}` argmax class ids (uint8 up to 256 classes, else int32).
    """
    tta = dict(eval_size=eval_size, align_corners=align_corners, scales=tuple(scales), flip=flip)

    @jax.jit
    def step(variables, images, labels):
        probabilities = average_probabilities(model, variables, images, **tta)
        predictions = {
            k: jnp.argmax(p, axis=-1).astype(_prediction_dtype(num_classes))
            for k, p in probabilities.items()
        }
        confusions = {
            k: confusion_matrix(labels, p, num_classes, ignore_label)
            for k, p in predictions.items()
        }
        return confusions, predictions

    return step


def make_predict_fn(
    model: nn.Module,
    num_classes: int,
    *,
    eval_size: Sequence[int] | None = None,
    align_corners: bool = True,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> Callable[[Any, Array], dict[str, Array]]:
    """A jitted `(variables, images [N,H,W,3]) -> {branch: [N, H, W] class ids}` (no labels)."""
    tta = dict(eval_size=eval_size, align_corners=align_corners, scales=tuple(scales), flip=flip)

    @jax.jit
    def predict(variables, images):
        probabilities = average_probabilities(model, variables, images, **tta)
        return {
            k: jnp.argmax(p, axis=-1).astype(_prediction_dtype(num_classes))
            for k, p in probabilities.items()
        }

    return predict


def denormalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float], bgr: bool):
    """Inverse of `augment.normalize`: the uint8 RGB image back (for overlays)."""
    image = np.asarray(image, np.float32)
    if bgr:
        image = image[..., ::-1]
    image = image * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# --- Evaluation loop ---------------------------------------------------------------------------


def default_devices() -> list[jax.Device]:
    """This host's devices to spread evaluation over; one on CPU (simulated CPU devices share
    the same cores, and each would compile its own copy of the step)."""
    devices = jax.local_devices()
    return devices[:1] if devices[0].platform == "cpu" else devices


def sum_over_hosts(tree: Any) -> Any:
    """Sums numpy trees of identical structure over all processes (identity on one process)."""
    if jax.process_count() == 1:
        return tree
    gathered = multihost_utils.process_allgather(tree)
    return jax.tree.map(functools.partial(np.sum, axis=0), gathered)


def evaluate_examples(
    step: Callable[[Any, Array, Array], tuple[dict[str, Array], dict[str, Array]]],
    variables: Any,
    examples: Iterable[Mapping[str, Any]],
    class_names: Sequence[str],
    branches: Sequence[str],
    *,
    on_prediction: Callable[[Mapping[str, Any], dict[str, np.ndarray]], None] | None = None,
    devices: Sequence[jax.Device] | None = None,
    num_examples: int | None = None,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Runs `step` (from `make_step`) over this host's examples; confusions summed over hosts.

    Examples go round-robin to `devices` (default `default_devices()`), each with its own copy of
    the variables, one image at a time, so images of any size mix freely (one compilation per
    size and device); while a device computes, the host handles earlier results.

    Args:
      examples: `{'image': float32 [H, W, 3], 'label': int [H, W], ...}` (`pipeline.eval_dataset`).
      branches: the step's branch names; every host reports each (zeros where it had no example).
      on_prediction: called on this host, in order, with each example and its
        `{branch: [H, W] class ids}` (region analysis, saving predictions).
    Returns:
      `{branch: segmentation_metrics + 'confusion' (int64, summed over all hosts)}`.
    """
    devices = list(devices or default_devices())
    replicas = [jax.device_put(variables, d) for d in devices]
    num_classes = len(class_names)
    totals = {b: np.zeros((num_classes, num_classes), np.int64) for b in branches}
    in_flight: collections.deque = collections.deque()

    def finish():
        example, (confusions, predictions) = in_flight.popleft()
        confusions, predictions = jax.device_get((confusions, predictions))
        for name, confusion in confusions.items():
            if name not in totals:
                raise ValueError(f"the step gave branch {name!r}, not among {list(branches)}")
            totals[name] += np.asarray(confusion, np.int64)
        if on_prediction is not None:
            on_prediction(example, {k: np.asarray(v)[0] for k, v in predictions.items()})

    bar = tqdm(examples, total=num_examples, desc="evaluating", disable=not progress)
    for i, example in enumerate(bar):
        d = i % len(devices)
        image = jax.device_put(np.asarray(example["image"])[None], devices[d])
        label = jax.device_put(np.asarray(example["label"])[None], devices[d])
        in_flight.append((example, step(replicas[d], image, label)))
        if len(in_flight) > len(devices):
            finish()
    while in_flight:
        finish()
    bar.close()
    totals = sum_over_hosts(totals)
    return {
        name: {**segmentation_metrics(total, class_names), "confusion": total}
        for name, total in totals.items()
    }


def region_accuracy_over_hosts(accumulator: RegionAccuracy) -> RegionAccuracy:
    """A `RegionAccuracy` with the totals of every host's accumulator (created with the same
    settings and explicit `branches`, so that hosts without examples agree on the structure)."""
    if jax.process_count() == 1:
        return accumulator
    totals = sum_over_hosts(
        {
            "sums": accumulator.sums,
            "counts": accumulator.counts,
            "num_images": np.int64(accumulator.num_images),
            "too_large": np.int64(accumulator.num_regions_too_large),
        }
    )
    accumulator.sums = {b: np.asarray(v) for b, v in totals["sums"].items()}
    accumulator.counts = np.asarray(totals["counts"])
    accumulator.num_images = int(totals["num_images"])
    accumulator.num_regions_too_large = int(totals["too_large"])
    return accumulator
