"""`icnet_jax.load`: a trained run (or any checkpoint) as one Python object that segments images.

    import icnet_jax
    model = icnet_jax.load("runs/quickstart")              # a workdir or one checkpoint step
    labels = model.segment(image)                          # uint8 RGB [H, W, 3] -> [H, W] ids
    model.class_names, model.palette, model.num_classes    # from the run's record

Everything the run recorded is applied (preprocessing, evaluation size, ICNet branch); the
test-time options, the backend and the changes to the run's config are arguments. The object
is what `predict.py` runs (the same `predict.Segmenter`), so its labels are `predict.py`'s.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from icnet_jax.data.augment import normalize
from icnet_jax.inference import onnx_backend, saved_run, sliding_window, test_time
from icnet_jax.inference.predict import Segmenter


@dataclasses.dataclass
class Model:
    """A run's network ready to segment images (`load`).

    Attributes:
      config: the run's config (with the changes asked for; `loaded.changes`).
      variables: `{'params', 'batch_stats'}`, for `module.apply(variables, images)`.
      module: the Flax module of the chosen branch: `module.apply(variables, x)` takes normalised
        float32 `[N, H, W, 3]` images and gives logits `[N, H, W, num_classes]` (upsampled to
        the input); an `onnx_backend.OnnxModel` with the onnxruntime backend.
      num_classes, class_names, palette: the classes (palette: uint8 `[num_classes, 3]` RGB).
      step, path: the checkpoint's step and step folder.
      loaded: the whole `saved_run.LoadedCheckpoint` (settings taken, changes, saved config).
    """

    config: ml_collections.ConfigDict
    variables: dict[str, Any]
    module: Any
    num_classes: int
    class_names: tuple[str, ...]
    palette: np.ndarray
    step: int
    path: pathlib.Path
    loaded: saved_run.LoadedCheckpoint
    segmenter: Segmenter = dataclasses.field(repr=False)
    _probabilities: Any = dataclasses.field(repr=False, default=None)

    def segment(self, image: np.ndarray) -> np.ndarray:
        """Class ids uint8 (int32 above 256 classes) `[H, W]` of a uint8 RGB `[H, W, 3]` image,
        as `predict.py` writes them (large images in windows)."""
        return self.segmenter(_rgb(image))

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """Class probabilities float32 `[H, W, num_classes]` of a uint8 RGB `[H, W, 3]` image
        (whole image, the run's evaluation size, the test-time options of `load`)."""
        c = self.config.input
        x = normalize(_rgb(image), c.mean, c.std, c.bgr)[None]
        self.segmenter.make_ready(x.shape[1:3])
        (p,) = self._probabilities(self.segmenter.variables, x).values()
        return np.asarray(p)[0]


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")
    return image


def load(
    run: str | os.PathLike,
    *,
    backend: str = "jax",
    dtype: str = "float32",
    branch: str = "sub124",
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    tiles: sliding_window.TilePolicy | None = None,
    overrides: Mapping[str, Any] | None = None,
    command_line: saved_run.CommandLine | None = None,
    calibration_images: int = 32,
) -> Model:
    """Loads a run (a workdir, its `checkpoints/` or one `checkpoints/<step>` folder).

    Args:
      backend, dtype: 'jax' or 'onnxruntime' (the export extras); 'float32', or 'int8' on
        onnxruntime (calibrated on `calibration_images` training images of the run's dataset).
      branch: ICNet's output (sub4, sub24, sub124). flip, scales: test-time averaging.
      tiles: when to segment in windows (default: images above `sliding_window.MAX_PIXELS`).
      overrides: changes to the run's config (`{'input.eval_size': (513, 1025)}`); a key that
        describes the weights (`spec.CONFIG_KEYS`) is refused.
      command_line: what a script's command line says instead (`saved_run.CommandLine`).
    Raises:
      checkpoints.NoCheckpointError: nothing readable at `run`.
      errors.UserError: a refused override, a backend that cannot run.
    """
    choice = onnx_backend.Backend(backend, dtype, calibration_images)
    choice.check()
    if command_line is None:
        command_line = saved_run.CommandLine(
            None, file_given=False, overrides=dict(overrides or {})
        )
    loaded = saved_run.load_checkpoint(run, command_line)
    return from_loaded(loaded, branch=branch, flip=flip, scales=scales, tiles=tiles, backend=choice)


def from_loaded(
    loaded: saved_run.LoadedCheckpoint,
    *,
    branch: str = "sub124",
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    tiles: sliding_window.TilePolicy | None = None,
    backend: onnx_backend.Backend = onnx_backend.JAX,
) -> Model:
    """The `Model` of a loaded checkpoint (`load`'s second half)."""
    segmenter = Segmenter(
        loaded, branch=branch, flip=flip, scales=tuple(scales), tiles=tiles, backend=backend
    )
    info = loaded.info
    cfg = loaded.config
    tta = dict(
        eval_size=tuple(cfg.input.eval_size) if cfg.input.eval_size else None,
        align_corners=cfg.model.align_corners,
        scales=tuple(scales),
        flip=flip,
    )
    probabilities = jax.jit(
        functools.partial(test_time.average_probabilities, segmenter.network, **tta)
    )
    return Model(
        config=loaded.config,
        variables=loaded.variables,
        module=segmenter.network,
        num_classes=loaded.num_classes,
        class_names=info.class_names,
        palette=info.palette,
        step=loaded.step,
        path=loaded.path,
        loaded=loaded,
        segmenter=segmenter,
        _probabilities=probabilities,
    )
