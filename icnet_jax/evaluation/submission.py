"""Predictions in a benchmark server's format (`evaluate.py --submission_dir=DIR`).

Cityscapes (https://www.cityscapes-dataset.com/submit/): one 8-bit PNG per image holding
*labelIds* (7 = road ... 33 = bicycle, not the train ids the model predicts), at the image's own
resolution, named `<city>_<sequence>_<frame>*.png`. We write
`DIR/<city>_<sequence>_<frame>_leftImg8bit.png` in one flat folder; zipping the folder's contents
gives the file to upload. `cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling` reads the
same folder (`CITYSCAPES_RESULTS=DIR`), which is how the tests check agreement with our metrics.

Other datasets have no server: their PNGs hold train ids, named after the image's file name.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from icnet_jax.data import taxonomy
from icnet_jax.errors import UserError
from icnet_jax.inference.image_io import write_png

# The stem cityscapesScripts matches a prediction to its ground truth by.
_CITYSCAPES_STEM = re.compile(r"^([A-Za-z-]+)_(\d+)_(\d+)$")


class SubmissionWriter:
    """Writes one label PNG per image into `out_dir`, in `dataset`'s server format; handed to the
    evaluation loop, it writes the predictions of `branch`."""

    def __init__(self, dataset: str, out_dir: str | pathlib.Path, *, branch: str = "sub124"):
        self.dataset = dataset
        self.out_dir = pathlib.Path(out_dir)
        self.branch = branch
        self.written: dict[str, str] = {}  # output name -> the example it came from
        try:  # now, not at the first image after compiling
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(
                f"cannot create the submission folder {out_dir}: {error.strerror}; choose "
                "another --submission_dir"
            ) from None

    @property
    def label_encoding(self) -> str:
        return "labelIds" if self.dataset == "cityscapes" else "train ids"

    def output_name(self, file_name: str) -> str:
        """`'test/berlin/berlin_000000_000019'` -> `'berlin_000000_000019_leftImg8bit.png'`."""
        stem = pathlib.PurePosixPath(file_name.replace("\\", "/")).name
        if self.dataset != "cityscapes":
            return f"{pathlib.PurePosixPath(stem).stem}.png"
        if not _CITYSCAPES_STEM.match(stem):
            raise UserError(
                f"example {file_name!r}: not a Cityscapes name <city>_<sequence>_<frame>, which "
                "the server matches predictions by; prepare the data from the official "
                "leftImg8bit/ folders or zip"
            )
        return f"{stem}_leftImg8bit.png"

    def write(self, file_name: str, prediction: np.ndarray) -> pathlib.Path:
        """Writes `prediction` (train ids `[H, W]`) for the example named `file_name`."""
        name = self.output_name(file_name)
        if name in self.written:
            raise UserError(
                f"examples {self.written[name]!r} and {file_name!r} would both be written as "
                f"{self.out_dir / name}: their file names must differ"
            )
        self.written[name] = file_name
        ids = np.asarray(prediction)
        if self.dataset == "cityscapes":
            ids = taxonomy.CITYSCAPES_TRAIN_TO_LABEL_ID[ids]
        return write_png(self.out_dir / name, ids)

    def add(self, example: Mapping[str, Any], predictions: Mapping[str, np.ndarray]) -> None:
        """Writes the prediction of `branch` for `example` (`loop.PredictionWriter`)."""
        self.write(example.get("file_name", "<unnamed>"), predictions[self.branch])

    def close(self) -> str:
        """A line to print: how many predictions were written where."""
        zip_hint = ": zip its contents to submit" * (self.dataset == "cityscapes")
        return (
            f"{len(self.written)} predictions ({self.branch}, {self.label_encoding}) "
            f"in {self.out_dir}{zip_hint}"
        )
