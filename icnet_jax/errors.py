"""Failures a user causes and can fix, and the checks that raise them before any work.

The library raises `UserError("what, where, what to do")`; the entry points (`icnet_jax.cli`)
print it as one `error: ...` line with exit status 2 and no traceback.
"""

from __future__ import annotations

import os
import pathlib
import tempfile


class UserError(Exception):
    """A failure the user can fix; its message says what, where, and what to do."""


def check_writable(path: str | os.PathLike, what: str) -> None:
    """Raises UserError unless `path` (a folder, existing or not) can be created and written."""
    path = pathlib.Path(path).absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{what} {path}: {existing} is a file, not a folder; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}: {existing} is not writable; choose another path")
    # os.access says yes to root everywhere, also where nothing can be created (a read-only
    # mount, /proc): a folder made and removed at once settles it.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write_check_", dir=existing))
    except OSError as error:
        raise UserError(
            f"{what} {path}: cannot create anything in {existing} ({error.strerror or error}); "
            "choose another path"
        ) from None
