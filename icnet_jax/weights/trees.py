"""Nested variable trees as plain dicts: walking, filling and converting them (shared by the
readers of weight files, the release converter, pruning, fine-tuning and export)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np


def node(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """`tree[path[0]][path[1]]...`."""
    for part in path:
        tree = tree[part]
    return tree


def put(tree: dict, path: tuple[str, ...], value: Any) -> None:
    """Sets `tree[path[0]]...[path[-1]] = value`, creating the dicts on the way."""
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value


def to_numpy(tree: Any) -> Any:
    """Nested mappings of arrays (on any device) as nested dicts of numpy arrays."""
    if isinstance(tree, Mapping):
        return {k: to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)


def plain_dict(tree: Any) -> Any:
    """Nested mappings (orbax metadata trees, FrozenDicts, TrainStates) as plain dicts."""
    if hasattr(tree, "tree"):  # orbax TreeMetadata
        tree = tree.tree
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        tree = {f.name: getattr(tree, f.name) for f in dataclasses.fields(tree)}
    if isinstance(tree, Mapping):
        return {k: plain_dict(v) for k, v in tree.items()}
    return tree
