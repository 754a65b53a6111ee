"""Starting training from a checkpoint: the released weights (converted), a pruned model, or a run
of our own, possibly with another number of classes.

`load_pretrained(state, path, config=config)` restores the checkpoint with an abstract target
built from the checkpoint's OWN saved config (its model, width and optimizer), copies every
parameter and BatchNorm statistic whose path and shape match into `state`, and keeps the fresh
initialisation of `state` for the classifiers whose shapes differ (another number of classes).
Any other mismatch is an error naming the tensors. The optimizer state and the step of `state`
are kept (fine-tuning starts at step 0 with a fresh momentum).

Before anything is compiled, `check_fits` compares the checkpoint's `WeightsSpec` with the
config's (the trunk switches and the input must agree; `spec.START_FREE` may change), and
`check_resume` refuses to resume a workdir whose saved spec differs from the config's at all.

Frozen-statistics BatchNorm. The release's BN-folded weights load into our unfolded model as
kernel = folded kernel, BN scale 1, offset = folded bias, mean 0, variance 1 - eps: exact with
running statistics, but BatchNorm in training normalises with the batch's statistics and would
make every layer's output differ from the release's. Training from such weights therefore needs
`config.model.freeze_bn_stats=True`: the layers whose statistics were loaded (the whole network
from `init_checkpoint`, the trunk from `init_backbone`: `build.frozen_bn`) use and keep their
running statistics (mmseg's `norm_eval`), fresh layers learn theirs; optionally with
`config.optim.freeze_bn_affine=True` (scales and offsets are not trained either).
`check_folded_start` refuses the other case: a checkpoint is BN-folded when its config says so
(`bn_folded`, written by `tools/convert_weights.py`) or when any of its BatchNorm layers holds the
placeholder statistics (which also catches runs fine-tuned from such weights).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import traverse_util

from icnet_jax import errors
from icnet_jax.errors import UserError
from icnet_jax.models.layers import BN_EPSILON
from icnet_jax.weights import checkpoints, spec
from icnet_jax.weights.trees import plain_dict

_log = logging.getLogger(__name__)

# Pytree paths of the checkpointed TrainState that hold the model (the rest: step, opt_state).
_COLLECTIONS = ("params", "batch_stats")


class CheckpointDoesNotFitError(errors.UserError, ValueError):
    """Tensors other than the classifiers differ in shape (another width or architecture)."""


@dataclasses.dataclass
class PretrainedReport:
    """What `load_pretrained` did. Paths are '/'-joined, prefixed by the collection."""

    checkpoint: str
    step: int
    loaded: list[str]
    reinitialised: list[str]  # classifier tensors whose shapes differ: fresh init kept
    missing: list[str]  # in the model, absent from the checkpoint: fresh init kept
    unused: list[str]  # in the checkpoint, absent from the model: ignored

    @property
    def skipped(self) -> list[str]:
        return self.reinitialised + self.missing

    def summary(self) -> str:
        lines = [
            f"initialised from {self.checkpoint} (step {self.step}): "
            f"{len(self.loaded)} tensors loaded, {len(self.skipped)} kept freshly initialised"
        ]
        if self.reinitialised:
            lines.append(
                "  classifiers re-initialised (shape differs, e.g. another number of classes):"
            )
            lines += [f"    {p}" for p in self.reinitialised]
        if self.missing:
            lines.append("  absent from the checkpoint, freshly initialised:")
            lines += [f"    {p}" for p in self.missing]
        if self.unused:
            lines.append("  in the checkpoint but not in the model, ignored:")
            lines += [f"    {p}" for p in self.unused]
        return "\n".join(lines)


def restore_checkpoint(
    path: str | pathlib.Path, *, step: int | None = None
) -> tuple[Any, dict, int, int]:
    """Restores a training checkpoint with the target its own saved config describes.

    Args:
      path: a workdir, its `checkpoints/` folder or one step folder (`.../checkpoints/<step>`).
      step: the step to read (default: the one `path` names, else the newest readable one).
    Returns:
      `(state, config_dict, num_classes, step)`: the restored `TrainState` (arrays on one local
      device), the checkpoint's saved config (upgraded, `spec.upgrade`), its number of classes,
      the step.
    """
    restored = checkpoints.restore(
        path, lambda saved, n: (spec.restore_target(saved, n), None), step=step
    )
    return restored.state, restored.saved_config, restored.num_classes, restored.step


def _newest_config(path: str | pathlib.Path) -> tuple[dict, int | None]:
    """The config saved with the newest checkpoint at `path` that has one ({} if none), and the
    number of classes of its state (None if unreadable); reads no arrays, writes nothing."""
    manager, step = checkpoints.open_for_reading(path)
    try:
        steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
        for candidate in steps:
            saved = checkpoints.saved_config_or_empty(manager, candidate)
            if saved:
                state_dir = pathlib.Path(manager.directory) / str(candidate) / "state"
                try:
                    return saved, checkpoints.num_classes_of(state_dir)
                except Exception:  # noqa: BLE001 - unreadable: the shape checks report it
                    return saved, None
    finally:
        manager.close()
    return {}, None


def check_resume(workdir: str | pathlib.Path, config: ml_collections.ConfigDict) -> None:
    """Refuses to resume training in `workdir` with a config whose `WeightsSpec` differs from the
    one saved with its newest checkpoint: one line naming each setting with both values (reads
    configs and metadata only, writes nothing). Settings outside the spec stay free."""
    if not (pathlib.Path(workdir) / "checkpoints").is_dir():
        return
    try:
        saved, num_classes = _newest_config(pathlib.Path(workdir) / "checkpoints")
    except checkpoints.NoCheckpointError:
        return
    if not saved:
        return
    theirs = spec.WeightsSpec.from_config(saved, num_classes)
    ours = spec.WeightsSpec.from_config(config)
    rows = theirs.differences(ours)
    if rows:
        raise checkpoints.CheckpointMismatchError(
            f"{workdir} holds a run of {theirs.describe()} trained with other weights settings "
            f"than the config's ({ours.describe()}): "
            + spec.format_differences(rows, "saved", "new")
            + "; resume with the saved values, train in a new --workdir, or start a new run from "
            f"these weights with --config.init_checkpoint={workdir} and a new --workdir; nothing "
            "was written"
        )


def check_fits(abstract_state: Any, checkpoint_path: str | pathlib.Path, config=None) -> None:
    """Raises CheckpointDoesNotFitError when the newest checkpoint at `checkpoint_path` differs
    from `abstract_state`'s model outside the classifiers, or (given `config`) has another
    `WeightsSpec` outside `spec.START_FREE` (reads configs and metadata only, no arrays)."""
    manager, step = checkpoints.open_for_reading(checkpoint_path)
    step = step if step is not None else manager.latest_step()
    state_dir = pathlib.Path(manager.directory) / str(step) / "state"
    manager.close()
    try:
        saved = checkpoints.saved_shapes(state_dir)
    except Exception:  # noqa: BLE001 - unreadable: restoring reports it (and falls back)
        saved = {}
    ours = checkpoints.model_shapes(abstract_state)
    errors = [
        f"{k}: checkpoint {saved[k]}, model {shape}"
        for k, shape in ours.items()
        if k in saved
        and saved[k] != shape
        and not any(part in checkpoints.CLASSIFIER_LAYERS for part in k.split("/"))
    ]
    if errors:
        more = f" and {len(errors) - 2} more" if len(errors) > 2 else ""
        raise CheckpointDoesNotFitError(
            f"init_checkpoint {checkpoint_path} does not fit the config's model "
            f"({_describe(config)}) outside the classifiers ({'; '.join(errors[:2])}{more}); "
            "give a checkpoint of the same model.name and model.width"
        )
    saved_config, _ = _newest_config(checkpoint_path)
    if config is None or not saved_config:
        return
    theirs = spec.WeightsSpec.from_config(saved_config)
    rows = theirs.differences(spec.WeightsSpec.from_config(config), spec.START_FREE)
    if rows:
        raise CheckpointDoesNotFitError(
            f"init_checkpoint {checkpoint_path} holds weights of other settings than the "
            f"config ({spec.format_differences(rows, 'checkpoint', 'config')}): set "
            + " ".join(f"'--config.{key}={value}'" for key, value, _ in rows)
            + " (the network and input its weights expect)"
        )


def _describe(config) -> str:
    return "the model" if config is None else spec.WeightsSpec.from_config(config).describe()


def merge_variables(
    target: Mapping[str, Any], source: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """`target` (`{'params':..., 'batch_stats':...}`) with every tensor of `source` whose path and
    shape match copied in; classifiers of another shape keep `target`'s values.

    Returns the merged variables and `{'loaded', 'reinitialised', 'missing', 'unused'}` path lists.
    Raises ValueError naming every non-classifier tensor whose shape differs.
    """
    flat_target = traverse_util.flatten_dict(plain_dict(target))
    flat_source = traverse_util.flatten_dict(plain_dict(source))
    merged: dict = {}
    report: dict[str, list] = {"loaded": [], "reinitialised": [], "missing": [], "unused": []}
    errors: list[str] = []
    for path, value in flat_target.items():
        name = "/".join(path)
        if path not in flat_source:
            report["missing"].append(name)
            merged[path] = value
            continue
        loaded = flat_source[path]
        if tuple(np.shape(loaded)) == tuple(np.shape(value)):
            merged[path] = np.asarray(loaded).astype(np.asarray(value).dtype)
            report["loaded"].append(name)
        elif any(part in checkpoints.CLASSIFIER_LAYERS for part in path):
            report["reinitialised"].append(
                f"{name} (checkpoint {tuple(np.shape(loaded))}, model {tuple(np.shape(value))})"
            )
            merged[path] = value
        else:
            errors.append(
                f"{name}: checkpoint {tuple(np.shape(loaded))}, model {tuple(np.shape(value))}"
            )
    report["unused"] = ["/".join(p) for p in flat_source if p not in flat_target]
    if errors:
        more = f" and {len(errors) - 2} more" if len(errors) > 2 else ""
        raise CheckpointDoesNotFitError(
            "the checkpoint does not fit the model outside the classifiers ("
            + "; ".join(errors[:2])
            + more
            + ")"
        )
    return traverse_util.unflatten_dict(merged), report


def load_pretrained(
    state: Any,
    checkpoint_path: str | pathlib.Path,
    *,
    config: ml_collections.ConfigDict | None = None,
    verbose: bool = True,
) -> tuple[Any, PretrainedReport]:
    """Initialises `state`'s params and batch_stats from a checkpoint (see the module docstring).

    Args:
      state: a freshly created `TrainState` of the model to train.
      checkpoint_path: a workdir, its `checkpoints/` folder or one step folder.
      config: the training config (for the message only; the checkpoint is read with its own).
      verbose: print the report.
    Returns:
      `(state, report)`: `state` with the loaded tensors (opt_state and step unchanged).
    """
    restored, ckpt_config, ckpt_classes, step = restore_checkpoint(checkpoint_path)
    if config is not None:  # BN-folded weights train only with frozen BatchNorm statistics
        check_folded_start(restored.batch_stats, ckpt_config, config, checkpoint_path)
    source = {c: getattr(restored, c) for c in _COLLECTIONS}
    target = {c: getattr(state, c) for c in _COLLECTIONS}
    try:
        merged, lists = merge_variables(target, source)
    except CheckpointDoesNotFitError as error:
        theirs = spec.WeightsSpec.from_config(ckpt_config, ckpt_classes).describe()
        raise CheckpointDoesNotFitError(
            f"init_checkpoint {checkpoint_path} holds {theirs}, the config builds "
            f"{_describe(config)}: {error}; "
            "give a checkpoint of the same model.width and model.name"
        ) from None
    report = PretrainedReport(checkpoint=str(checkpoint_path), step=int(step), **lists)
    if verbose:
        _log.info(report.summary())
    new_state = state.replace(
        params=jax.tree.map(jax.numpy.asarray, merged["params"]),
        batch_stats=jax.tree.map(jax.numpy.asarray, merged.get("batch_stats", {})),
    )
    return new_state, report


# BN-folded weights train only with frozen BatchNorm statistics (README "Pretrained starts").

FREEZE_FLAG = "--config.model.freeze_bn_stats=True"


def folded_layers(batch_stats: Mapping[str, Any]) -> list[str]:
    """Layers whose BatchNorm holds the placeholder statistics of BN-folded weights (mean 0,
    variance 1 - eps, exactly in float32), '/'-joined. A fresh initialisation has variance 1."""
    placeholder = np.float32(1.0 - BN_EPSILON)
    flat = traverse_util.flatten_dict(plain_dict(batch_stats))
    out = []
    for path, mean in flat.items():
        if path[-1] != "mean":
            continue
        var = np.asarray(flat.get((*path[:-1], "var"), 1.0))
        if not np.any(np.asarray(mean)) and np.all(var.astype(np.float32) == placeholder):
            out.append("/".join(path[:-2] if path[-2] == "bn" else path[:-1]))
    return out


def check_folded_start(
    batch_stats: Mapping[str, Any],
    saved_config: Mapping[str, Any] | None,
    config,
    source: str | os.PathLike,
) -> None:
    """Refuses to train from BN-folded weights with BatchNorm on batch statistics.

    Args:
      batch_stats: the statistics about to be loaded.
      saved_config: the config saved with them (its `bn_folded` is the converter's record).
      config: the training config.
      source: the checkpoint or file, for the message.
    Raises:
      UserError naming `--config.model.freeze_bn_stats=True` when the weights are BN-folded and
      `config.model.freeze_bn_stats` is off.
    """
    if config.model.get("freeze_bn_stats", False):
        return
    recorded = bool((saved_config or {}).get("bn_folded", False))
    layers = folded_layers(batch_stats)
    if not (recorded or layers):
        return
    where = f" ({len(layers)} layers, e.g. {layers[0]})" if layers else ""
    raise UserError(
        f"{source} holds BN-folded weights{where}: their BatchNorm statistics are placeholders "
        "(mean 0, variance 1 - eps), exact only when BatchNorm uses running statistics, so "
        "training with batch statistics would start from a different network; set "
        f"{FREEZE_FLAG} (and --config.optim.freeze_bn_affine=True to keep the BN scales and "
        "offsets too)"
    )
