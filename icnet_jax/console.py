"""The console scripts that `pip install` puts on the PATH (`pyproject.toml`, `[project.scripts]`):
each runs its entry script or tool as `python train.py ...` or `python -m icnet_jax.tools.export
...` does, from any folder; the shipped configs are found by name (`--config=camvid:cpu`)."""

from __future__ import annotations

import runpy


def _run(module: str) -> None:
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def train() -> None:
    """`icnet-train`: train.py."""
    _run("icnet_jax.scripts.train")


def evaluate() -> None:
    """`icnet-evaluate`: evaluate.py."""
    _run("icnet_jax.scripts.evaluate")


def predict() -> None:
    """`icnet-predict`: predict.py."""
    _run("icnet_jax.scripts.predict")


def benchmark() -> None:
    """`icnet-benchmark`: benchmark.py."""
    _run("icnet_jax.scripts.benchmark")


def export() -> None:
    """`icnet-export`: icnet_jax/tools/export.py."""
    _run("icnet_jax.tools.export")


def convert_weights() -> None:
    """`icnet-convert-weights`: icnet_jax/tools/convert_weights.py."""
    _run("icnet_jax.tools.convert_weights")


def prune() -> None:
    """`icnet-prune`: icnet_jax/tools/prune.py."""
    _run("icnet_jax.tools.prune")
