"""The one way a checkpoint is read for a job on a run (`icnet_jax.load`, `evaluate.py`,
`predict.py`): the run's config saved with it, the command line's changes to it, the model's
classes and palette (test-time augmentation: `test_time.py`; the evaluation loop:
`evaluation/loop.py`).

The run's record (the config saved with the checkpoint, with `spec.RECORD`: classes and palette)
is the job's config; the command line only changes it:

- the settings that describe the weights (`spec.INFERENCE_KEYS`: the `WeightsSpec`'s config
  entries, `model.branch`, `input.eval_size`, `ignore_label`) are the run's; a converted release
  checkpoint, for instance, records BGR, the ImageNet mean and 1025x2049. A `--config` file's
  other values of them are listed (`describe_settings`); `--command_line_wins` keeps the file's
  value of an entry that is not a weights-spec key, and an explicit `--config.KEY=VALUE` wins.
  A weights-spec key (`spec.KEYS`) taken from the command line is a `errors.UserError`;
- a `--config` file's dataset, input and model entries that differ from the run's, and every
  explicit override, are taken and listed as `Change`s (`key: run=A, now=B`).

A checkpoint saved without a config (or a record) falls back to the command line's config (and
to the dataset's table of classes, `dataset_info_for`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import ml_collections

from icnet_jax import errors
from icnet_jax.data import taxonomy
from icnet_jax.default import get_config
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


# Sections of the config a job on a run reads (the rest: the training schedule, losses, ...).
JOB_SECTIONS = ("dataset.", "input.", "model.", "ignore_label")


@dataclasses.dataclass(frozen=True)
class CommandLine:
    """What a command line says about the job on a run.

    Attributes:
      config: the command line's config (`--config` with its overrides); used whole when the
        checkpoint saved no config. None: the defaults (`default.get_config`).
      file_given: `--config` was given: its dataset, input and model entries that differ from
        the run's are taken. Otherwise only `overrides` change the run's config.
      overrides: `--config.KEY=VALUE` as given (dotted keys).
      wins: `--command_line_wins` keys (no weights-spec key).
    """

    config: ml_collections.ConfigDict | None = None
    file_given: bool = True
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    wins: Sequence[str] = ()


@dataclasses.dataclass(frozen=True)
class Change:
    """A value of the run's config the command line changed: `key: run=A, now=B`."""

    key: str
    run: Any
    now: Any

    def __str__(self) -> str:
        return f"{self.key}: run={self.run!r}, now={self.now!r}"


def describe_changes(changes: Sequence[Change]) -> str:
    """The header lines of the command line's changes to the run ('' when none)."""
    if not changes:
        return ""
    return "\n".join(["changed from the run's settings:", *(f"  {c}" for c in changes)])


# Entries compared and taken whole: a builder's keyword arguments belong together (another
# dataset's builder does not take the run's).
WHOLE = ("dataset.builder_kwargs",)


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value and f"{prefix}{key}" not in WHOLE:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _weights_key(key: str) -> bool:
    return any(key == k or k.startswith(key + ".") for k in spec.CONFIG_KEYS)


def _refuse_weights_keys(keys: Sequence[str], flag: str) -> None:
    if keys:
        raise errors.UserError(
            f"{flag}: {', '.join(keys)} describe{'s' if len(keys) == 1 else ''} the saved "
            "weights and cannot change at load time (the network would read the same tensors "
            "differently); leave it to the run's record, or train a run with that setting"
        )


def run_config(
    saved: Mapping[str, Any], command_line: CommandLine
) -> tuple[ml_collections.ConfigDict, list[Setting], list[Change]]:
    """The job's config: the run's saved config with the command line's changes (module doc).

    Returns:
      The config (a new, unlocked ConfigDict), the weights settings taken from the run (with the
      `--config` file's values) and the changes the command line made.
    Raises:
      errors.UserError: a weights-spec key in `command_line.wins`, or an override of one that
        differs from the run's.
    """
    cl = command_line
    _refuse_weights_keys([k for k in cl.wins if _weights_key(k)], "--command_line_wins")
    config = cl.config if cl.config is not None else get_config()
    if not saved:
        return ml_collections.ConfigDict(config.to_dict()), [], []
    run_saved = spec.without_record(saved)
    merged = _tuples(_deep_update(get_config().to_dict(), spec.upgrade(run_saved)))
    overrides = {k: _tuples(v) for k, v in cl.overrides.items()}
    refused = [
        k
        for k, v in overrides.items()
        if _weights_key(k) and not spec.same_value(_find(merged, k), v)
    ]
    _refuse_weights_keys(refused, " ".join(f"--config.{k}={overrides[k]}" for k in refused))
    settings = [
        Setting(k, _tuples(_get(run_saved, k)), _tuples(_get(run_saved, k)))
        for k in _checkpoint_keys(run_saved)
    ]
    changes: list[Change] = []
    if cl.file_given:
        # The file's config with the run's weights settings put in (except `wins`): what
        # differs from the run in the sections a job reads is the file's change.
        given, settings = merge_checkpoint_config(config, run_saved, cl.wins)
        for key, now in _flat(given.to_dict()).items():
            if not key.startswith(JOB_SECTIONS) or key in overrides or _weights_key(key):
                continue  # the weights' own settings stay the run's
            run, now = _find(merged, key), _tuples(now)
            if not spec.same_value(run, now):
                _set(merged, key, now)
                changes.append(Change(key, run, now))
    for key, now in overrides.items():
        run = _find(merged, key)
        if not spec.same_value(run, now):
            _set(merged, key, now)
            changes.append(Change(key, run, now))
    return ml_collections.ConfigDict(merged), settings, changes


def _find(tree: Mapping[str, Any], dotted: str) -> Any:
    try:
        return _get(tree, dotted)
    except KeyError:
        return None


def _deep_update(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


@dataclasses.dataclass
class LoadedCheckpoint:
    """A checkpoint ready for inference.

    Attributes:
      config: the run's config with the command line's changes (`run_config`).
      variables: `{'params', 'batch_stats'}`.
      step: the checkpoint's step.
      num_classes: from the classifier's shape.
      path: the step folder.
      workdir: the folder holding `checkpoints/` (default place of evaluation outputs).
      settings: entries taken from the checkpoint (see `describe_settings`).
      saved_config: the config saved with the checkpoint, as a dict ({} if none).
      changes: the command line's changes to the run's config (`describe_changes`).
      info: the classes and palette: the run's record, else the dataset's table.
    """

    config: ml_collections.ConfigDict
    variables: dict[str, Any]
    step: int
    num_classes: int
    path: pathlib.Path
    workdir: pathlib.Path
    settings: list[Setting]
    saved_config: dict[str, Any]
    info: taxonomy.DatasetInfo
    changes: list[Change] = dataclasses.field(default_factory=list)

    def header(self) -> str:
        """What a job prints first: the checkpoint, the weights settings, the changes."""
        lines = [
            f"checkpoint {self.path} (step {self.step}, {self.num_classes} classes)",
            describe_settings(self.settings),
            describe_changes(self.changes),
        ]
        return "\n".join(line for line in lines if line)


def load_checkpoint(
    path: str | os.PathLike,
    config: ml_collections.ConfigDict | CommandLine | None = None,
    *,
    command_line_wins: Iterable[str] = (),
    before_restore: Callable[[ml_collections.ConfigDict], None] | None = None,
) -> LoadedCheckpoint:
    """Restores the weights at `path` (a workdir, its `checkpoints/` or one step folder).

    Without a step folder the newest readable checkpoint is used (an unreadable newest one is
    reported and the previous one tried; one deleted while read, by a run still training, is
    skipped silently). The model is built from `run_config` (a bare ConfigDict `config` counts
    as a given `--config` file), with as many classes as the saved classifier has.

    Args:
      before_restore: called with the job's config before any array is read (checks of the
        split, of output folders: a mistake costs no restore).
    Raises:
      checkpoints.NoCheckpointError: no checkpoint at `path`, or none readable.
      errors.UserError: a weights-spec key from the command line (`run_config`).
    """
    command_line = (
        config
        if isinstance(config, CommandLine)
        else CommandLine(config, config is not None, wins=tuple(command_line_wins))
    )

    def make_abstract(saved, num_classes):
        if not saved:
            _log.warning("checkpoint at %s has no readable config; using the command line's", path)
        merged, settings, changes = run_config(saved, command_line)
        if before_restore is not None:
            before_restore(merged)
        target = spec.restore_target(saved or merged.to_dict(), num_classes)
        return target, (merged, settings, changes)

    restored = checkpoints.restore(pathlib.Path(path), make_abstract)
    merged, settings, changes = restored.extra
    state = restored.state
    name = restored.saved_config.get("dataset", {}).get("name") or merged.dataset.name
    return LoadedCheckpoint(
        config=merged,
        variables={"params": state.params, "batch_stats": state.batch_stats},
        step=restored.step,
        num_classes=restored.num_classes,
        path=restored.path,
        workdir=restored.workdir,
        settings=settings,
        saved_config=restored.saved_config,
        changes=changes,
        info=spec.record_info(restored.saved_config, restored.num_classes)
        or dataset_info_for(name, restored.num_classes),
    )


def read_run(path: str | pathlib.Path) -> tuple[ml_collections.ConfigDict, int, int]:
    """The run's config (`run_config` without a command line), number of classes and step of
    the checkpoint at `path` (its newest step unless a step folder), read without any array."""
    manager, step = checkpoints.open_for_reading(path)
    try:
        step = step if step is not None else manager.latest_step()
        saved = checkpoints.saved_config_or_empty(manager, step)
        num_classes = checkpoints.num_classes_of(
            pathlib.Path(manager.directory) / str(step) / "state"
        )
    finally:
        manager.close()
    config, _, _ = run_config(saved, CommandLine(None, file_given=False))
    return config, num_classes, int(step)


def dataset_info_for(name: str, num_classes: int) -> taxonomy.DatasetInfo:
    """Class names and palette of a built-in dataset without preparing it.

    Falls back to numbered classes and `taxonomy.generated_palette` for other datasets (custom) or
    when the checkpoint's number of classes differs from the dataset's.
    """
    info = taxonomy.DATASETS.get(name)
    if info is not None and info.num_classes == num_classes:
        return info
    if info is not None:
        _log.warning(
            "dataset %r has %d classes but the checkpoint %d; using a generated palette",
            name,
            info.num_classes,
            num_classes,
        )
    return taxonomy.custom_info(name or "unknown", [f"class_{i}" for i in range(num_classes)])
