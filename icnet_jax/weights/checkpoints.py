"""Every checkpoint read and write: training resume, evaluation, prediction, fine-tuning, pruning,
export and conversion all go through this module.

Layout: `workdir/checkpoints/<step>/{state,data,config}` (orbax): the train state, the data
iterator's position and the resolved config. Rules:

- A step that cannot be read (partial or corrupt) is reported once, with a one-line reason, and the
  previous one is used. Training moves it aside to `workdir/unreadable_checkpoints/<step>` so that
  the run can save that step again and train past it.
- A workdir whose checkpoints hold another model than the config builds (another width, number of
  classes or architecture) is refused with `CheckpointMismatchError` before anything is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from icnet_jax import errors
from icnet_jax.weights import saving, spec

_log = logging.getLogger(__name__)

ITEMS = ("state", "data", "config")
# The layers whose kernel's last axis is the number of classes (ICNet's output, PSPNet's).
OUTPUT_LAYERS = ("conv6_cls", "conv6")
# Every classifier head (outputs and the training-only guidance and auxiliary heads): fine-tuning
# re-initialises them when their shape differs (another number of classes).
CLASSIFIER_LAYERS = (*OUTPUT_LAYERS, "conv6_sub4", "conv6_sub2", "conv6_aux")
UNREADABLE = "unreadable_checkpoints"
_REASON_CHARS = 160


class CheckpointMismatchError(errors.UserError):
    """The workdir's checkpoints hold another model than the config describes."""


class NoCheckpointError(errors.UserError, FileNotFoundError):
    """No (readable) checkpoint where one was asked for."""


DiskFullError = saving.DiskFullError  # what save, write and finish raise on a full disk


def create_manager(
    workdir: str | pathlib.Path, *, max_to_keep: int = 3, asynchronous: bool = True
) -> ocp.CheckpointManager:
    """A manager of `workdir/checkpoints/<step>/{state,data,config}` keeping the last few.

    The leftovers of saves a crash or a full disk interrupted are removed first (and reported).
    """
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, enable_async_checkpointing=asynchronous, create=True
    )
    directory = pathlib.Path(workdir).absolute() / "checkpoints"
    saving.prepare(directory)
    return ocp.CheckpointManager(directory, options=options, item_names=ITEMS)


def finish(manager: ocp.CheckpointManager) -> None:
    """Waits for the manager's asynchronous save and closes it (a full disk: DiskFullError)."""
    with saving.saving(manager.directory, manager.latest_step()):
        manager.wait_until_finished()
    manager.close()


def _as_global(x: Any) -> Any:
    if isinstance(x, jax.Array) and x.is_fully_addressable:
        return ocp.utils.fully_replicated_host_local_array_to_global_array(x)
    return x


def save(
    manager: ocp.CheckpointManager,
    step: int,
    state: Any,
    data_state: dict | None,
    config: dict,
) -> None:
    """Saves asynchronously (returns once the arrays are copied off the devices).

    With several processes, the pmapped step's state is replicated over each process's own
    devices; orbax saves only global arrays, so it is viewed as one replicated global array.
    """
    if jax.process_count() > 1:
        state = jax.tree.map(_as_global, state)
    # The previous asynchronous save's errors (its full disk) come out of this wait.
    with saving.saving(manager.directory, manager.latest_step()):
        manager.wait_until_finished()
    with saving.saving(manager.directory, step):
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state or {}),
                config=ocp.args.JsonSave(config),
            ),
            force=True,
        )


def write(workdir: str | pathlib.Path, step: int, state: Any, config: dict) -> None:
    """Writes one checkpoint synchronously (conversion, pruning: no data iterator position)."""
    manager = create_manager(workdir, asynchronous=False)
    save(manager, step, state, {}, config)
    finish(manager)


# --- Reading ----------------------------------------------------------------------------------


def _reason(error: BaseException) -> str:
    """One short line for an error (orbax/tensorstore errors can run to a megabyte)."""
    text = str(error).strip().splitlines()
    first = text[0].strip() if text else ""
    if len(first) > _REASON_CHARS:
        first = first[: _REASON_CHARS - 3] + "..."
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


@contextlib.contextmanager
def _quiet():
    """Silences what reading logs besides raising: asyncio's 'Event loop is closed' tracebacks of
    the other reads of a failed restore, orbax's warnings on read-only folders without metadata."""
    loggers = [logging.getLogger(n) for n in ("asyncio", "absl", "orbax")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _report(message: str) -> None:
    if jax.process_index() == 0:
        _log.warning(message)


def saved_shapes(state_dir: str | pathlib.Path) -> dict[str, tuple[int, ...]]:
    """`{'params/conv1/kernel': shape, ...}` of a saved state (`params`, `batch_stats`), read from
    its metadata (no array is read)."""
    with _quiet():
        metadata = ocp.StandardCheckpointer().metadata(pathlib.Path(state_dir).absolute())
    tree = getattr(metadata, "item_metadata", metadata)
    tree = getattr(tree, "tree", tree)
    flat = traverse_util.flatten_dict(
        {k: dict(tree.get(k) or {}) for k in ("params", "batch_stats")}, sep="/"
    )
    return {k: tuple(v.shape) for k, v in flat.items() if hasattr(v, "shape")}


def model_shapes(state: Any) -> dict[str, tuple[int, ...]]:
    """The same mapping for a (possibly abstract) TrainState."""
    get = state.get if isinstance(state, Mapping) else lambda k: getattr(state, k, None)
    tree = {k: get(k) or {} for k in ("params", "batch_stats")}
    flat = traverse_util.flatten_dict(tree, sep="/")
    return {k: tuple(np.shape(v)) for k, v in flat.items()}


def num_classes_of(state_dir: str | pathlib.Path) -> int:
    """Number of classes of a saved state, from its classifier kernel's shape (no array read)."""
    shapes = saved_shapes(state_dir)
    for name in OUTPUT_LAYERS:
        if f"params/{name}/kernel" in shapes:
            return int(shapes[f"params/{name}/kernel"][-1])
    raise ValueError(
        f"{state_dir}: no classifier layer ({', '.join(OUTPUT_LAYERS)}) among the saved params"
    )


def read_config(manager: ocp.CheckpointManager, step: int) -> dict:
    """The resolved config saved with a checkpoint, upgraded (`spec.upgrade`)."""
    restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return spec.upgrade(json.loads(json.dumps(restored["config"])))


def saved_config_or_empty(manager: ocp.CheckpointManager, step: int) -> dict:
    try:
        with _quiet():
            return read_config(manager, step)
    except Exception:  # noqa: BLE001 - a checkpoint without a readable config item
        return {}


def _move_aside(manager: ocp.CheckpointManager, step: int) -> pathlib.Path:
    """Renames an unreadable step folder to `<workdir>/unreadable_checkpoints/<step>[.n]`."""
    source = pathlib.Path(manager.directory) / str(step)
    target = pathlib.Path(manager.directory).parent / UNREADABLE / str(step)
    n = 1
    while target.exists():
        target = target.with_name(f"{step}.{n}")
        n += 1
    if jax.process_index() == 0:
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"moved aside checkpoint {step}")
    manager.reload()
    return target


def _set_aside(manager: ocp.CheckpointManager, step: int, error: BaseException) -> None:
    target = _move_aside(manager, step)
    _report(
        f"checkpoint {step} is unreadable ({_reason(error)}); moved to {target}, "
        "using the previous one"
    )


def _refuse(
    manager: ocp.CheckpointManager, step: int, saved: dict, ours: dict, expected: str
) -> None:
    """Raises CheckpointMismatchError unless the saved shapes are the model's."""
    if saved == ours:
        return
    state_dir = pathlib.Path(manager.directory) / str(step) / "state"
    try:
        classes = num_classes_of(state_dir)
    except ValueError:
        classes = None
    theirs = spec.WeightsSpec.from_config(saved_config_or_empty(manager, step), classes).describe()
    workdir = pathlib.Path(manager.directory).parent
    raise CheckpointMismatchError(
        f"{workdir} holds checkpoints of another model ({theirs}, step {step}) than the config "
        f"({expected}); train in a new --workdir, or start a new workdir from those weights with "
        f"--config.init_checkpoint={pathlib.Path(manager.directory) / str(step)}; nothing was "
        "written"
    )


def restore_latest(
    manager: ocp.CheckpointManager,
    abstract_state: Any,
    *,
    with_data: bool = True,
    expected: str = "the config's model",
) -> tuple[int, Any, dict | None] | None:
    """Restores the newest readable checkpoint for training: `(step, state, data_state)`, or None.

    An unreadable step is reported and moved aside (see the module docstring); a step of another
    model raises `CheckpointMismatchError` (`expected` describes the config's model in its
    message). `abstract_state` (from `jax.eval_shape`) fixes the structure and device layout.
    """
    ours = model_shapes(abstract_state)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if with_data:
        items["data"] = ocp.args.JsonRestore()
    for step in sorted(manager.all_steps(), reverse=True):
        state_dir = pathlib.Path(manager.directory) / str(step) / "state"
        try:
            saved = saved_shapes(state_dir)
        except Exception as error:  # noqa: BLE001 - unreadable metadata: move it aside
            _set_aside(manager, step, error)
            continue
        _refuse(manager, step, saved, ours, expected)  # before anything is written
        try:
            with _quiet():
                restored = manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as error:  # noqa: BLE001 - unreadable arrays: move it aside
            _set_aside(manager, step, error)
            continue
        data = restored["data"] if with_data else None
        return step, restored["state"], (data or None)
    return None


def existing_checkpoint(path: str | pathlib.Path, flag: str = "--checkpoint") -> pathlib.Path:
    """`path` if it exists, else a `errors.UserError` naming `flag` (before any slow work)."""
    if not path or not pathlib.Path(path).exists():
        raise errors.UserError(
            f"{flag}={path}: no such checkpoint (a workdir, its checkpoints/ folder or a step)"
        )
    return pathlib.Path(path)


def open_for_reading(path: str | pathlib.Path) -> tuple[ocp.CheckpointManager, int | None]:
    """Opens a workdir, its `checkpoints/` folder, or one step folder for reading.

    Returns the manager and the step named by `path` (None: the latest).
    Raises NoCheckpointError when `path` holds no checkpoint.
    """
    given = path
    path = pathlib.Path(path).absolute()
    step = None
    if path.name.isdigit() and (path / "state").exists():
        step, path = int(path.name), path.parent
    elif (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    hint = "give a training workdir, its checkpoints/ folder or one checkpoints/<step> folder"
    if not path.is_dir():
        raise NoCheckpointError(f"no checkpoints at {given}: no such folder ({hint})")
    with _quiet():
        manager = ocp.CheckpointManager(
            path, options=ocp.CheckpointManagerOptions(read_only=True), item_names=ITEMS
        )
    if not manager.all_steps():
        manager.close()
        raise NoCheckpointError(f"no checkpoints at {given} ({hint})")
    return manager, step


@dataclasses.dataclass
class Restored:
    """A checkpoint read for inference or fine-tuning.

    Attributes:
      state: the restored TrainState (arrays on one local device).
      step: its step; path: the step folder; workdir: the folder holding `checkpoints/`.
      saved_config: the config saved with it ({} if none); num_classes: from the classifier.
      extra: whatever `make_abstract` returned besides the abstract state.
    """

    state: Any
    step: int
    path: pathlib.Path
    workdir: pathlib.Path
    saved_config: dict
    num_classes: int
    extra: Any = None


def restore(
    path: str | pathlib.Path,
    make_abstract: Callable[[dict, int], tuple[Any, Any]],
    *,
    step: int | None = None,
) -> Restored:
    """Restores the state at `path` (a workdir, its `checkpoints/` or one step folder).

    `make_abstract(saved_config, num_classes) -> (abstract_state, extra)` builds the restore
    target (from `jax.eval_shape`) of the model that reads it. Without a step the newest readable
    checkpoint is used; an unreadable one is reported in one line and the previous one tried (the
    folder is left in place: evaluating must not change a run's files). A step that disappears
    while it is read (a run still training deletes its old steps) is skipped without a report:
    the steps are listed again and the newest one not yet tried is read.

    Raises:
      NoCheckpointError: no checkpoint at `path`, or none readable.
    """
    manager, named = open_for_reading(path)
    step = step if step is not None else named
    reasons: list[str] = []
    tried: set[int] = set()
    try:
        while True:
            steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
            steps = [s for s in steps if s not in tried]
            if not steps:
                break
            restored, gone = _restore_first(manager, steps, make_abstract, reasons, tried)
            if restored is not None:
                return restored
            if not gone or step is not None:
                break
            manager.reload()  # training deleted what was listed: list what it kept
    finally:
        manager.close()
    raise NoCheckpointError(f"no readable checkpoint at {path} ({'; '.join(reasons)})")


def _restore_first(
    manager: ocp.CheckpointManager,
    steps: Sequence[int],
    make_abstract: Callable[[dict, int], tuple[Any, Any]],
    reasons: list[str],
    tried: set[int],
) -> tuple[Restored | None, bool]:
    """The first of `steps` that restores (None if none), and whether one vanished meanwhile."""
    directory = pathlib.Path(manager.directory)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    gone = False
    for candidate in steps:
        tried.add(candidate)
        try:
            saved = saved_config_or_empty(manager, candidate)
            num_classes = num_classes_of(directory / str(candidate) / "state")
            abstract, extra = make_abstract(saved, num_classes)
            abstract = jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract
            )
            with _quiet():
                restored = manager.restore(
                    candidate, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
                )
        except errors.UserError:
            raise
        except Exception as error:  # noqa: BLE001 - fall back to the previous checkpoint
            if not (directory / str(candidate)).exists():
                _log.info("checkpoint %s was deleted while read", candidate)
                gone = True
                continue
            reasons.append(f"{candidate}: {_reason(error)}")
            _report(f"checkpoint {directory / str(candidate)} is unreadable ({_reason(error)})")
            continue
        result = Restored(
            state=restored["state"],
            step=int(candidate),
            path=directory / str(candidate),
            workdir=directory.parent,
            saved_config=saved,
            num_classes=num_classes,
            extra=extra,
        )
        return result, gone
    return None, gone
