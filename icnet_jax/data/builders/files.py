"""A manual dir's files, in folders or zip archives, and the errors about them.

``MissingDataError``: the manual dir lacks an archive or folder a builder needs; ``BadFileError``:
an image or label file is unreadable or inconsistent. Both are ``errors.UserError``s: a
command-line tool prints them as one ``error:`` line.
"""

from __future__ import annotations

import abc
import dataclasses
import pathlib
import zipfile

from icnet_jax.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MANUAL_DIR_FLAG = "--config.dataset.manual_dir"


class MissingDataError(FileNotFoundError, UserError):
    """The manual dir lacks the archives or folders a builder needs."""


class BadFileError(ValueError, UserError):
    """An image or label file is unreadable or inconsistent; the message names it (or all)."""


class Tree(abc.ABC):
    """Read-only files addressed by '/'-separated paths, in a folder or a zip archive."""

    @abc.abstractmethod
    def paths(self) -> list[str]: ...

    @abc.abstractmethod
    def read(self, path: str) -> bytes: ...

    @abc.abstractmethod
    def describe(self, path: str) -> str: ...


class DirTree(Tree):
    def __init__(self, root: pathlib.Path, subdir: str = "") -> None:
        self.root, self.subdir = root, subdir

    def paths(self) -> list[str]:
        base = self.root / self.subdir
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def describe(self, path: str) -> str:
        return str(self.root / path)


class ZipTree(Tree):
    def __init__(self, archive: pathlib.Path) -> None:
        self.archive = archive
        self._zip = zipfile.ZipFile(archive)

    def paths(self) -> list[str]:
        return sorted(n for n in self._zip.namelist() if not n.endswith("/"))

    def read(self, path: str) -> bytes:
        return self._zip.read(path)

    def describe(self, path: str) -> str:
        return f"{self.archive}:{path}"


def tree_paths(root: pathlib.Path, subdir: str) -> list[str]:
    """Files below ``root/subdir`` as paths relative to ``root`` (empty if it does not exist)."""
    return DirTree(root, subdir).paths() if (root / subdir).is_dir() else []


@dataclasses.dataclass(frozen=True)
class File:
    """One file of a tree (or one that should exist, for a better message when it does not)."""

    tree: Tree
    path: str

    def read(self) -> bytes:
        try:
            return self.tree.read(self.path)
        except (OSError, KeyError) as e:
            raise BadFileError(f"{self}: cannot read ({e})") from e

    def __str__(self) -> str:
        return self.tree.describe(self.path)


@dataclasses.dataclass(frozen=True)
class Pair:
    """An image and the label file that goes with it; ``key`` is the stored file name."""

    key: str
    image: File
    label: File | None


def by_stem(tree: Tree, paths: list[str], suffixes=IMAGE_SUFFIXES) -> dict[str, str]:
    return {
        pathlib.PurePosixPath(p).stem: p
        for p in paths
        if pathlib.PurePosixPath(p).suffix.lower() in suffixes
    }
