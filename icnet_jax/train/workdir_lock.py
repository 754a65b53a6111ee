"""One training run per workdir: an operating-system file lock that train.py takes before it
writes anything.

`workdir/train.lock` is locked with `filelock` (`flock` on Unix): the operating system releases it
when its process ends, killed or not, so a killed run's lock never blocks the next (its empty file
stays and the next run takes it; a run that ends normally removes it). Next to it,
`workdir/train.lock.json` records `{"pid", "host", "since"}` of the holder, only to name it: a
second run is refused with one line naming the first, and a record left by a killed run is
replaced with a line saying so. With several processes only process 0 takes it: the workdir is
shared. Across hosts the lock is as good as the file system's `flock` (NFS emulates it with byte
range locks; other network file systems may not lock across hosts at all).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import pathlib
import socket
from collections.abc import Iterator

import filelock
import jax

from icnet_jax import errors

_log = logging.getLogger(__name__)

LOCK_NAME = "train.lock"
HOLDER_NAME = "train.lock.json"  # who holds the lock: information only, never liveness


def _read(path: pathlib.Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # half-written by a run killed while writing it
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict | None) -> str:
    if not holder:
        return "a process that has not said which yet"
    return (
        f"process {holder.get('pid', '?')} on {holder.get('host', '?')} "
        f"(since {holder.get('since', '?')})"
    )


def _acquire(workdir: pathlib.Path) -> filelock.FileLock:
    """Takes the lock without waiting and records this process as its holder."""
    lock = filelock.FileLock(workdir / LOCK_NAME)
    record = workdir / HOLDER_NAME
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise errors.UserError(
            f"--workdir {workdir} is in use by another training run: {_describe(_read(record))}; "
            "wait for it to end or choose another --workdir"
        ) from None
    left = _read(record)
    if left is not None:  # its run ended without removing it: killed
        _log.warning(
            f"taking over {workdir / LOCK_NAME}: it was left by {_describe(left)}, which is no "
            "longer running"
        )
    since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
    record.write_text(json.dumps(me))
    return lock


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
        lock = _acquire(workdir)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield
    finally:
        (workdir / HOLDER_NAME).unlink(missing_ok=True)
        # Removed while held, so that a run that opened this file meanwhile finds it unlinked
        # (filelock checks) and looks again, rather than holding a lock nobody else can see.
        (workdir / LOCK_NAME).unlink(missing_ok=True)
        lock.release()
        _remove_empty(created)


def _remove_empty(created: list[pathlib.Path]) -> None:
    """Removes the folders the lock created if the run left them empty (a refused run)."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:  # not empty: the run wrote there
            return
