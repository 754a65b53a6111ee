"""Writers the evaluation loop hands each prediction to (`loop.PredictionWriter`): region accuracy
by region size and pictures of the first predictions (`submission.SubmissionWriter` writes the
benchmark server's files)."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from icnet_jax.data import augment
from icnet_jax.data.input_spec import InputSpec
from icnet_jax.evaluation import loop
from icnet_jax.evaluation.regions import RegionAccuracy
from icnet_jax.inference import visualize
from icnet_jax.inference.image_io import write_png


def prediction_stem(file_name: str, index: int) -> str:
    """A relative output name for an example: its file name without extension (sub-folders kept,
    `..` and absolute parts dropped), or `image_<index>` when it has none."""
    path = pathlib.PurePosixPath(str(file_name).replace("\\", "/"))
    parts = [p for p in path.with_suffix("").parts if p not in ("", ".", "..", "/")]
    if not parts or file_name == "<unnamed>":
        return f"image_{index:05d}"
    return "/".join(parts)


class RegionWriter:
    """Accuracy of ground-truth regions by size, per branch (paper Fig. 8):
    `region_accuracy.json` and `region_accuracy.png`."""

    def __init__(
        self,
        branches: Sequence[str],
        *,
        ignore_label: int,
        size_scale: float,
        step: int,
        split: str,
    ):
        self.accumulator = RegionAccuracy(
            ignore_label=ignore_label, branches=branches, size_scale=size_scale
        )
        self.step, self.split = step, split
        self.result: dict[str, Any] = {}

    def add(self, example: Mapping[str, Any], predictions: Mapping[str, np.ndarray]) -> None:
        self.accumulator.update(example["label"], predictions)

    def close(self) -> dict[str, Any]:
        """Sums every host's regions (all hosts call it) and returns the JSON's content."""
        self.accumulator = loop.region_accuracy_over_hosts(self.accumulator)
        self.result = {"step": self.step, "split": self.split, **self.accumulator.result()}
        return self.result

    @property
    def num_images(self) -> int:
        return self.accumulator.num_images

    def write(self, out: pathlib.Path) -> str:
        """Writes the JSON and the plot into `out` (after `close`); returns a line to print."""
        (out / "region_accuracy.json").write_text(json.dumps(self.result, indent=1))
        visualize.plot_region_accuracy(
            self.result,
            out / "region_accuracy.png",
            bin_size=self.accumulator.bin_size,
            title=f"Region accuracy difference between branches ({self.split}, step {self.step})",
        )
        overall = self.result["overall_accuracy"]
        return f"region accuracy over {self.result['num_regions']} regions: " + ", ".join(
            f"{b} {100 * v:.2f}" for b, v in overall.items() if v is not None
        )


class PictureWriter:
    """The first `limit` predictions of `branch` as pictures in `folder`:
    `<stem>_{labels,color,overlay,gt}.png` (`visualize.save_prediction`)."""

    def __init__(
        self,
        folder: pathlib.Path,
        limit: int,
        *,
        branch: str,
        spec: InputSpec,
        palette: np.ndarray,
    ):
        self.folder, self.limit, self.branch = folder, limit, branch
        self.spec, self.palette = spec, palette
        self.saved: list[str] = []
        self.seen = 0

    def add(self, example: Mapping[str, Any], predictions: Mapping[str, np.ndarray]) -> None:
        index, self.seen = self.seen, self.seen + 1
        if len(self.saved) >= self.limit:
            return
        spec = self.spec
        stem = prediction_stem(example.get("file_name", "<unnamed>"), index)
        image = augment.denormalize(example["image"], spec.mean, spec.std, spec.bgr)
        visualize.save_prediction(
            self.folder, stem, image, predictions[self.branch], self.palette, spec.ignore_label
        )
        gt = visualize.colorize(example["label"], self.palette, ignore_label=spec.ignore_label)
        write_png(self.folder / f"{stem}_gt.png", gt)
        self.saved.append(stem)

    def close(self) -> str | None:
        """A line to print (None when nothing was saved)."""
        if not self.saved:
            return None
        return f"{len(self.saved)} predictions ({self.branch}) in {self.folder}"
