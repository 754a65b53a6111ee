"""Orbax checkpoints: the train state, the data iterator's position, and the resolved config."""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

_log = logging.getLogger(__name__)


def create_manager(
    workdir: str | pathlib.Path, *, max_to_keep: int = 3, asynchronous: bool = True
) -> ocp.CheckpointManager:
    """A manager of `workdir/checkpoints/<step>/{state,data,config}` keeping the last few."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, enable_async_checkpointing=asynchronous, create=True
    )
    directory = pathlib.Path(workdir).absolute() / "checkpoints"
    return ocp.CheckpointManager(directory, options=options, item_names=("state", "data", "config"))


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
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state or {}),
            config=ocp.args.JsonSave(config),
        ),
        force=True,
    )


def restore_latest(
    manager: ocp.CheckpointManager, abstract_state: Any, *, with_data: bool = True
) -> tuple[int, Any, dict | None] | None:
    """Restores the newest readable checkpoint: `(step, state, data_state)`, or None if none.

    A latest checkpoint that cannot be read (partial or corrupt) is reported and the previous one
    is used. `abstract_state` (from `jax.eval_shape`) fixes the structure and the device layout.
    """
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            items = {"state": ocp.args.StandardRestore(abstract_state)}
            if with_data:
                items["data"] = ocp.args.JsonRestore()
            restored = manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as error:  # noqa: BLE001 - any unreadable checkpoint: fall back
            _log.error(
                "checkpoint %s is unreadable (%s: %s); trying the previous one",
                manager.directory / str(step),
                type(error).__name__,
                error,
            )
            continue
        data = restored["data"] if with_data else None
        return step, restored["state"], (data or None)
    return None


def checkpoint_manager_for(path: str | pathlib.Path) -> tuple[ocp.CheckpointManager, int | None]:
    """Opens a workdir, its `checkpoints/` folder, or one step folder for reading.

    Returns the manager and the step named by `path` (None: the latest).
    """
    path = pathlib.Path(path).absolute()
    step = None
    if path.name.isdigit() and (path / "state").exists():
        step, path = int(path.name), path.parent
    elif (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoints at {path}")
    manager = ocp.CheckpointManager(
        path,
        options=ocp.CheckpointManagerOptions(read_only=True),
        item_names=("state", "data", "config"),
    )
    if not manager.all_steps():
        raise FileNotFoundError(f"no checkpoints at {path}")
    return manager, step


def read_config(manager: ocp.CheckpointManager, step: int) -> dict:
    """The resolved config saved with a checkpoint."""
    restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return json.loads(json.dumps(restored["config"]))
