"""Leftovers of a killed preparation: tfds writes a dataset into an ``incomplete.*`` folder next to
its version folder and renames it when done, so a preparation killed (SIGKILL, power cut) leaves
that folder behind for ever. ``preparing`` removes such leftovers at the next preparation, but only
when no other process is preparing into the same folder.

Each preparation holds an operating-system lock (``filelock``) on a marker file
``.preparing.<host>.<pid>`` of its own while it runs; the name only says whose it is. A marker
whose lock can be taken belongs to a process that is gone (the system released its lock when it
ended) and is removed with the leftovers. Across hosts sharing the folder this is as reliable as
the file system's ``flock`` (NFS emulates it; some network file systems do not lock across hosts).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import shutil
import socket
from collections.abc import Iterator

import filelock

_log = logging.getLogger(__name__)

MARKER_PREFIX = ".preparing."


def _take_if_dead(marker: pathlib.Path) -> bool:
    """True (and the marker removed) when no process holds `marker`'s lock."""
    lock = filelock.FileLock(marker)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return False
    try:
        marker.unlink(missing_ok=True)  # while held: a process just starting on it looks again
    finally:
        lock.release()
    return True


@contextlib.contextmanager
def preparing(folder: pathlib.Path) -> Iterator[None]:
    """Registers this process as preparing into ``folder`` (a dataset's config folder, parent of
    its version folders) for the block's duration; first removes the ``incomplete.*`` leftovers
    there when no other live process is registered."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"{MARKER_PREFIX}{socket.gethostname()}.{os.getpid()}"
    lock = filelock.FileLock(marker)
    lock.acquire()  # before looking at the others: two starting together both see a live one
    try:
        others = [m for m in folder.glob(MARKER_PREFIX + "*") if m != marker]
        live = [m for m in others if not _take_if_dead(m)]
        if not live:
            for leftover in sorted(p for p in folder.glob("incomplete.*") if p.is_dir()):
                shutil.rmtree(leftover, ignore_errors=True)
                _log.info(f"removed {leftover}, left by an interrupted preparation")
        yield
    finally:
        marker.unlink(missing_ok=True)
        lock.release()
