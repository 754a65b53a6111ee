"""A checkpoint save that a full disk or a crash interrupted: one error line instead of orbax's
tracebacks, and the unfinished save's temporary folder removed (at once, and at the next start).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pathlib
import re
import shutil
from collections.abc import Iterator

import jax

from icnet_jax import errors

_log = logging.getLogger(__name__)

TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's unfinished save: `<step>.orbax-checkpoint-tmp-<t>`


class DiskFullError(errors.UserError):
    """No space left while saving a checkpoint; the previous checkpoints are intact."""


class _NoSpaceRecords(logging.Filter):
    """Drops orbax's logged tracebacks of a full disk (one per writing thread): the DiskFullError
    that `saving` raises says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (no_space_text(record.getMessage()) or (error and no_space(error)))


_FILTER = _NoSpaceRecords()


def quiet_full_disk_logs() -> None:
    """Installs the filter on the loggers orbax's background threads log to (idempotent); the
    command line does (`cli.quiet_libraries`), a library user may."""
    for name in ("absl", "orbax"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def no_space_text(text: str) -> bool:
    return "no space left on device" in text.lower() or "os_error_code='28'" in text


def prepare(directory: pathlib.Path) -> None:
    """Before a manager opens `directory`: process 0 creates the folder (one error line where it
    cannot be, where orbax's makedirs ends in a traceback) and removes the unfinished saves of an
    interrupted run, saying so."""
    if jax.process_index() != 0:
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise errors.UserError(
            f"cannot create {directory} ({error.strerror or error}); choose another folder"
        ) from None
    for leftover in remove_interrupted_saves(directory):
        _log.warning(f"removed {leftover}: the leftover of a checkpoint save that was interrupted")


def remove_interrupted_saves(directory: pathlib.Path) -> list[pathlib.Path]:
    """Deletes orbax's temporary folders (`<step>.orbax-checkpoint-tmp*`) in `directory`: an
    unfinished save is never read, and on a full disk it holds the space a new save needs.

    Not orbax's `CheckpointManagerOptions(cleanup_tmp_directories=True)` (orbax 0.12.8): it
    removes them in a background thread that only the first save waits for, so a run that ends
    before saving (a full disk at its first save, Ctrl-C) ends with that thread's traceback
    ("cannot schedule new futures after shutdown"); it cannot free a failed save's space at once
    either, nor say what it removed."""
    leftovers = sorted(directory.glob(f"*{TMP_SUFFIX}*"))
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return leftovers


def no_space(error: BaseException | None) -> bool:
    """True when `error` (or what caused it) is ENOSPC; tensorstore says it in words only."""
    seen = 0
    while error is not None and seen < 20:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if no_space_text(str(error)):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


@contextlib.contextmanager
def saving(directory: str | os.PathLike, step: int | None) -> Iterator[None]:
    """Turns a full disk during a save into one DiskFullError line (and frees the unfinished
    save's space); every other error passes unchanged.

    `step`: the step being saved (when waiting for an asynchronous save: the manager's latest);
    the unfinished save's temporary folder, where there is one, names the step that failed.
    """
    try:
        yield
    except Exception as error:
        if not no_space(error):
            raise
        directory = pathlib.Path(directory)
        names = [p.name for p in directory.iterdir()] if directory.is_dir() else []
        unfinished = [int(m.group(1)) for n in names if (m := re.match(rf"(\d+){TMP_SUFFIX}", n))]
        if jax.process_index() == 0 and unfinished:
            remove_interrupted_saves(directory)
        failed = max(unfinished, default=step)
        finished = [int(n) for n in names if n.isdigit()]
        good = max((s for s in finished if s != failed), default=None)
        last = f"the last good checkpoint is step {good}" if good is not None else "no checkpoint"
        raise DiskFullError(
            f"no space left on {device_of(directory)} while saving step "
            f"{failed if failed is not None else '?'}; {last} (in {directory}); free some space "
            "and run the same command again"
        ) from None


def device_of(directory: pathlib.Path) -> str:
    """'the file system mounted on /data': the mount point holding `directory`."""
    path = directory.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return f"the file system mounted on {path}"
