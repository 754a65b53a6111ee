"""Shared by `evaluate.py` and `predict.py`: loading a checkpoint for inference with the settings
saved with it, the model and class names it needs (test-time augmentation: `test_time.py`; the
evaluation loop: `eval_lib.py`).

The settings that describe the weights (`spec.INFERENCE_KEYS`: the `WeightsSpec`'s config
entries, `model.branch`, `input.eval_size`, `ignore_label`) are taken from the config saved with
the checkpoint; a converted release checkpoint, for instance, records BGR, the ImageNet mean and
1025x2049.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from icnet_jax.data import labels as L
from icnet_jax.weights import checkpoints, spec

Array = jax.Array
_log = logging.getLogger(__name__)


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
    for key in spec.INFERENCE_KEYS:
        try:
            _get(saved, key)
        except KeyError:
            continue
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
    """`config` (the command line's) with the `spec.INFERENCE_KEYS` entries of `saved` put in.

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
        target = spec.restore_target(saved or merged.to_dict(), num_classes)
        return target, (merged, settings)

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
    info = L.DATASETS.get(name)
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


def denormalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float], bgr: bool):
    """Inverse of `augment.normalize`: the uint8 RGB image back (for overlays)."""
    image = np.asarray(image, np.float32)
    if bgr:
        image = image[..., ::-1]
    image = image * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# --- Evaluation loop ---------------------------------------------------------------------------
