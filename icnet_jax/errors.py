"""Failures a user causes and can fix, and the checks that raise them before any work.

The library raises `UserError("what, where, what to do")`; the entry points (`icnet_jax.cli`)
print it as one `error: ...` line with exit status 2 and no traceback. A JAX platform that does
not start is turned into such a line too (`unavailable_platform`).
"""

from __future__ import annotations

import os
import pathlib
import tempfile
import traceback
from collections.abc import Mapping


class UserError(Exception):
    """A failure the user can fix; its message says what, where, and what to do."""


def check_writable(path: str | os.PathLike, what: str) -> None:
    """Raises UserError unless `path` (a folder, existing or not) can be created and written.

    The rule of every output: the nearest existing folder at or above it is a folder in which
    something can be created; the writer creates the missing folders (with their parents).
    """
    path = pathlib.Path(path).absolute()
    _check_folder(path, path, what)


def check_writable_file(path: str | os.PathLike, what: str) -> None:
    """Raises UserError unless the file `path` can be written: not an existing folder, not a
    read-only file, and its folder passes `check_writable` (the writer creates that folder)."""
    path = pathlib.Path(path).absolute()
    if path.is_dir():
        raise UserError(
            f"{what} {path}: is a folder, not a file; give a file name, e.g. {path / 'out.json'}"
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{what} {path}: the file is not writable; choose another path")
    _check_folder(path.parent, path, what)


def check_outputs(outputs: Mapping[str, tuple[str | os.PathLike | None, str]]) -> None:
    """`{flag: (path, 'folder' | 'file')}`: raises UserError for the first given path that
    cannot be written (`check_writable`, `check_writable_file`); None or '' paths are skipped."""
    for flag, (path, kind) in outputs.items():
        if path:
            (check_writable_file if kind == "file" else check_writable)(path, flag)


def _check_folder(folder: pathlib.Path, path: pathlib.Path, what: str) -> None:
    """`check_writable` of `folder`, its errors naming `what` `path`."""
    existing = folder
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


def error_chain(error: BaseException | None) -> list[BaseException]:
    """`error`, its cause or context, theirs, ... (at most 20)."""
    chain: list[BaseException] = []
    while error is not None and len(chain) < 20:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


# The install lines of https://docs.jax.dev/en/latest/installation.html, by platform.
_NVIDIA = 'an NVIDIA GPU: pip install -U "jax[cuda13]" ("jax[cuda12]" with CUDA 12 drivers)'
_JAX_INSTALL = {
    "cuda": _NVIDIA,
    "gpu": _NVIDIA,
    "rocm": 'an AMD GPU: pip install -U "jax[rocm7-local]"',
    "tpu": 'a TPU: pip install -U "jax[tpu]"',
}


def unavailable_platform(error: BaseException) -> str | None:
    """One line for a requested JAX platform that did not start (JAX_PLATFORMS=cuda on a
    machine or install without CUDA: jax raises a bare AssertionError or a RuntimeError); None
    for any other error."""
    import jax

    requested = os.environ.get("JAX_PLATFORMS", "")
    from_backends = any(
        "Unable to initialize backend" in str(link)
        or any(
            frame.filename.endswith(os.path.join("jax", "_src", "xla_bridge.py"))
            for frame in traceback.extract_tb(link.__traceback__)[-1:]
        )
        for link in error_chain(error)
    )
    if not requested or not from_backends:
        return None
    platforms = [p.strip() for p in requested.split(",")]
    installs = dict.fromkeys(_JAX_INSTALL[p] for p in platforms if p in _JAX_INSTALL)
    install = "; ".join(f"for {i}" for i in installs) or (
        "see https://docs.jax.dev/en/latest/installation.html"
    )
    return (
        f"JAX platform {requested!r} (JAX_PLATFORMS={requested}) is not available to the "
        f"installed jax {jax.__version__}; {install}; or unset JAX_PLATFORMS to run on the CPU"
    )
