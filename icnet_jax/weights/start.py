"""Starting training from a checkpoint: the released weights (converted), a pruned model, or a run
of our own, possibly with another number of classes.

`load_pretrained(state, path, config=config)` restores the checkpoint with an abstract target
built from the checkpoint's OWN saved config (its model, width and optimizer), copies every
parameter and BatchNorm statistic whose path and shape match into `state`, and keeps the fresh
initialisation of `state` for the classifiers whose shapes differ (another number of classes).
Any other mismatch is an error naming the tensors. The optimizer state and the step of `state`
are kept (fine-tuning starts at step 0 with a fresh momentum).

Frozen-statistics BatchNorm. The release's BN-folded weights load into our unfolded model as
kernel = folded kernel, BN scale 1, offset = folded bias, mean 0, variance 1 - eps: exact with
running statistics, but BatchNorm in training normalises with the batch's statistics and would
make every layer's output differ from the release's. Training from such weights therefore needs
`config.model.freeze_bn_stats=True` (BatchNorm uses and keeps its running statistics; mmseg's
`norm_eval`), optionally with `config.optim.freeze_bn_affine=True` (scales and offsets are not
trained either). `check_folded_start` refuses the other case: a checkpoint is BN-folded when its
config says so (`bn_folded`, written by `tools/convert_weights.py`) or when any of its BatchNorm
layers holds the placeholder statistics (which also catches runs fine-tuned from such weights).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import traverse_util

from icnet_jax import errors
from icnet_jax import state as state_lib
from icnet_jax.config import get_config as default_config
from icnet_jax.errors import UserError
from icnet_jax.models.layers import BN_EPSILON
from icnet_jax.weights import checkpoints

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


def _to_config(config: Mapping | ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    if isinstance(config, ml_collections.ConfigDict):
        return config
    return ml_collections.ConfigDict(dict(config))


def plain_dict(tree: Any) -> Any:
    """Nested mappings (orbax metadata trees, FrozenDicts, TrainStates) as plain dicts."""
    if hasattr(tree, "tree"):  # orbax TreeMetadata
        tree = tree.tree
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        tree = {f.name: getattr(tree, f.name) for f in dataclasses.fields(tree)}
    if isinstance(tree, Mapping):
        return {k: plain_dict(v) for k, v in tree.items()}
    return tree


def restore_checkpoint(
    path: str | pathlib.Path, *, step: int | None = None
) -> tuple[Any, dict, int, int]:
    """Restores a training checkpoint with an abstract target built from its own config.

    Args:
      path: a workdir, its `checkpoints/` folder or one step folder (`.../checkpoints/<step>`).
      step: the step to read (default: the one `path` names, else the newest readable one).
    Returns:
      `(state, config_dict, num_classes, step)`: the restored `TrainState` (arrays on one local
      device), the checkpoint's resolved config, its number of classes, the step.
    """

    def make_abstract(saved: dict, num_classes: int):
        config = _to_config(saved)
        model = state_lib.create_model(config, num_classes)
        tx = state_lib.create_optimizer(config)
        abstract = jax.eval_shape(
            functools.partial(
                state_lib.create_train_state, model=model, tx=tx, image_size=(65, 65)
            ),
            jax.random.PRNGKey(0),
        )
        return abstract, None

    restored = checkpoints.restore(path, make_abstract, step=step)
    return restored.state, restored.saved_config, restored.num_classes, restored.step


# What the weights were trained with that no tensor shape shows: another trunk switch runs the
# same tensors as another network (stride_on), other input settings feed them other values.
TRAINED_WITH = ("model.stem", "model.stride_on", "model.shortcut", "input.bgr", "input.mean",
                "input.std")  # fmt: skip


def _trained_with(config: Mapping[str, Any]) -> dict[str, Any]:
    """`{key: value}` of `TRAINED_WITH` in a config dict; keys from before a setting existed get
    the default, the release's value."""
    defaults, out = default_config().to_dict(), {}
    for key in TRAINED_WITH:
        section, name = key.split(".")
        value = config.get(section, {}).get(name, defaults[section][name])
        out[key] = tuple(value) if isinstance(value, (list, tuple)) else value
    return out


def check_fits(abstract_state: Any, checkpoint_path: str | pathlib.Path, config=None) -> None:
    """Raises CheckpointDoesNotFitError when the newest checkpoint at `checkpoint_path` differs
    from `abstract_state`'s model outside the classifiers, or (given `config`) was trained with
    other `TRAINED_WITH` settings (reads metadata only, no arrays)."""
    manager, step = checkpoints.open_for_reading(checkpoint_path)
    step = step if step is not None else manager.latest_step()
    state_dir = pathlib.Path(manager.directory) / str(step) / "state"
    saved_config = checkpoints.saved_config_or_empty(manager, step)
    manager.close()
    try:
        saved = checkpoints.saved_shapes(state_dir)
    except Exception:  # noqa: BLE001 - unreadable: restoring reports it (and falls back)
        return
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
        ours_text = (
            "the model" if config is None else checkpoints.describe_model(config.to_dict(), None)
        )
        raise CheckpointDoesNotFitError(
            f"init_checkpoint {checkpoint_path} does not fit the config's model ({ours_text}) "
            f"outside the classifiers ({'; '.join(errors[:2])}{more}); give a checkpoint of the "
            "same model.name and model.width"
        )
    if config is not None and saved_config:
        theirs, ours = _trained_with(saved_config), _trained_with(config.to_dict())
        differ = [k for k in TRAINED_WITH if theirs[k] != ours[k]]
        if differ:
            raise CheckpointDoesNotFitError(
                f"init_checkpoint {checkpoint_path} was trained with "
                + ", ".join(f"{k}={theirs[k]}" for k in differ)
                + ", the config has "
                + ", ".join(f"{ours[k]}" for k in differ)
                + ": set "
                + " ".join(f"'--config.{k}={theirs[k]}'" for k in differ)
                + " (the trunk and input its weights expect)"
            )


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
    merged, report, errors = (
        {},
        {"loaded": [], "reinitialised": [], "missing": [], "unused": []},
        [],
    )
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
        ours = "the model" if config is None else checkpoints.describe_model(config.to_dict(), None)
        theirs = checkpoints.describe_model(ckpt_config, ckpt_classes)
        raise CheckpointDoesNotFitError(
            f"init_checkpoint {checkpoint_path} holds {theirs}, the config builds {ours}: {error}; "
            "give a checkpoint of the same model.width and model.name"
        ) from None
    report = PretrainedReport(checkpoint=str(checkpoint_path), step=int(step), **lists)
    if verbose:
        print(report.summary())
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
    batch_stats: Mapping[str, Any], saved_config: Mapping[str, Any] | None, config, source: str
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
