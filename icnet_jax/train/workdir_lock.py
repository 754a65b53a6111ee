"""One training run per workdir: a lock file that train.py takes before it writes anything.

`workdir/train.lock` holds `{"pid", "host", "since", "process"}` of the run that holds it. It
appears whole and only if absent (a hard link), so that of two runs started together exactly one
gets it. A second run is refused with one line naming the first; a lock whose process is gone
(killed on this host, or before a reboot) is taken over with a line saying so. With several
processes only process 0 takes it: the workdir is shared.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import socket
import sys
from collections.abc import Iterator

import jax

from icnet_jax import errors

LOCK_NAME = "train.lock"


def _identity(pid: int | str) -> str | None:
    """'<boot id>/<start time>' of a process on this host (None without /proc): tells a live
    holder from a later process that got its pid (after a reboot, or many processes later)."""
    try:
        boot = pathlib.Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after the command name: state, ppid, ...
    return "exited" if fields[0] == "Z" else f"{boot}/{fields[19]}"


def _alive(holder: dict) -> bool:
    pid = holder["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    identity = _identity(pid)
    if identity == "exited":  # killed, not yet reaped by its parent
        return False
    recorded = holder.get("process")
    return recorded is None or identity is None or identity == recorded


def _read(path: pathlib.Path) -> dict:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):  # half-written by a run killed while creating it
        return {}
    return holder if isinstance(holder, dict) else {}


def _create(path: pathlib.Path) -> bool:
    """Creates the lock file holding this process's record; False if it exists.

    The record is written to a file of its own, then hard-linked as the lock: the lock appears
    whole, so a run never reads another's half-written lock as stale.
    """
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "process": _identity("self"),
    }
    draft = path.with_name(f"{LOCK_NAME}.{os.getpid()}.new")
    draft.write_text(json.dumps(record))
    try:
        os.link(draft, path)
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: exclusive creation
        try:
            with open(path, "x") as file:
                file.write(json.dumps(record))
        except FileExistsError:
            return False
    finally:
        draft.unlink()
    return True


def _describe(holder: dict) -> str:
    return (
        f"process {holder.get('pid', '?')} on {holder.get('host', '?')} "
        f"(since {holder.get('since', '?')})"
    )


def _stale(holder: dict) -> bool:
    """True when the holder is known to be gone: its pid is not running on this host."""
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return True
    return holder.get("host") == socket.gethostname() and not _alive(holder)


def _acquire(workdir: pathlib.Path) -> pathlib.Path:
    path = workdir / LOCK_NAME
    for _ in range(3):  # a stale lock taken over by another starting run: look again
        if _create(path):
            return path
        holder = _read(path)
        if not _stale(holder):
            raise errors.UserError(
                f"--workdir {workdir} is in use by another training run: {_describe(holder)}; "
                f"wait for it to end or choose another --workdir (if that process is gone, "
                f"delete {path})"
            )
        # Renamed, not deleted, so that of two runs taking over at once one loses the rename.
        aside = path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
        try:
            path.rename(aside)
        except FileNotFoundError:
            continue
        aside.unlink()
        print(
            f"taking over {path}: it was left by {_describe(holder)}, which is no longer running",
            file=sys.stderr,
            flush=True,
        )
    raise errors.UserError(f"could not take {path}: other runs keep taking it; try again")


def _make(workdir: pathlib.Path) -> list[pathlib.Path]:
    """Creates `workdir` (and missing parents); returns the folders created, deepest first."""
    created = []
    folder = workdir
    while not folder.exists():
        created.append(folder)
        folder = folder.parent
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise errors.UserError(
            f"--workdir {workdir}: cannot create it ({error.strerror or error}); choose another "
            "path"
        ) from None
    return created


@contextlib.contextmanager
def hold(workdir: str | os.PathLike) -> Iterator[None]:
    """Holds the workdir's lock for the duration of the block (process 0 only).

    Raises:
      errors.UserError: the workdir cannot be created or another live run holds it.
    """
    if jax.process_index() != 0:
        yield
        return
    workdir = pathlib.Path(workdir).absolute()
    errors.check_writable(workdir, "--workdir")
    created = _make(workdir)
    try:
        path = _acquire(workdir)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        _remove_empty(created)


def _remove_empty(created: list[pathlib.Path]) -> None:
    """Removes the folders the lock created if the run left them empty (a refused run)."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:  # not empty: the run wrote there
            return
