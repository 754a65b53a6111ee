"""Leftovers of a killed preparation: tfds writes a dataset into an ``incomplete.*`` folder next to
its version folder and renames it when done, so a preparation killed (SIGKILL, power cut) leaves
that folder behind for ever. ``preparing`` removes such leftovers at the next preparation, but only
when no other process is preparing into the same folder.

Each preparation registers itself with a marker file ``.preparing.<host>.<pid>`` while it runs. A
marker is live if its process runs (same host), or, from another host sharing the folder, if it
is younger than ``OTHER_HOST_STALE_S``; a dead one (its process killed) is removed with the
leftovers.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import socket
import time
from collections.abc import Iterator

MARKER_PREFIX = ".preparing."
OTHER_HOST_STALE_S = 24 * 3600  # no preparation of ours takes a day


def _is_live(marker: pathlib.Path) -> bool:
    host, _, pid = marker.name.removeprefix(MARKER_PREFIX).rpartition(".")
    if host != socket.gethostname():
        try:
            return time.time() - marker.stat().st_mtime < OTHER_HOST_STALE_S
        except FileNotFoundError:
            return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):  # another user's process, or not our marker: keep it
        return True
    return True


@contextlib.contextmanager
def preparing(folder: pathlib.Path) -> Iterator[None]:
    """Registers this process as preparing into ``folder`` (a dataset's config folder, parent of
    its version folders) for the block's duration; first removes the ``incomplete.*`` leftovers
    there when no other live process is registered."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"{MARKER_PREFIX}{socket.gethostname()}.{os.getpid()}"
    marker.touch()  # before looking at the others: two starting together both see a live one
    try:
        others = [m for m in folder.glob(MARKER_PREFIX + "*") if m != marker]
        dead = [m for m in others if not _is_live(m)]
        if len(dead) == len(others):
            for leftover in sorted(p for p in folder.glob("incomplete.*") if p.is_dir()):
                shutil.rmtree(leftover, ignore_errors=True)
                print(f"removed {leftover}, left by an interrupted preparation")
            for m in dead:
                m.unlink(missing_ok=True)
        yield
    finally:
        marker.unlink(missing_ok=True)
