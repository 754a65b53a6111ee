"""Reading and writing images and videos for evaluation and prediction.

Conventions:

* Images are numpy ``uint8 [H, W, 3]`` **RGB** arrays (OpenCV's BGR order never leaks out).
* ``read_image`` accepts whatever a user may point the predictor at and normalises it with
  ``data.image_decode.decode_image``, the decoder dataset preparation uses too: EXIF orientation
  applied (upright, as viewers show it), alpha dropped, grayscale replicated, 16-bit scaled by
  ``>> 8``, palette expanded, first frame of multi-frame files.
* Failures raise ``ImageReadError`` / ``VideoError`` (both ``OSError``) naming the file.
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
from collections.abc import Generator, Iterable, Sequence

import cv2
import numpy as np
from PIL import Image

from icnet_jax.data.image_decode import decode_image

PathLike = str | os.PathLike

# Extensions ``list_images`` picks up (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif",
)  # fmt: skip


class ImageReadError(OSError):
    """An image file could not be read; the message names the file and the reason.

    Attributes:
      path: the file, as given.
      reason: why it could not be read.
    """

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path!r}: {reason}")

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.path, self.reason))


class VideoError(OSError):
    """A video file could not be opened, decoded or written; the message names the file."""

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"video {self.path!r}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


# --- Images ----------------------------------------------------------------------------------


def read_image(path: PathLike) -> np.ndarray:
    """Reads an image file as uint8 ``[H, W, 3]`` RGB, upright per its EXIF orientation.

    See the module docstring for how alpha, grayscale, 16-bit and palette images are handled.

    Raises:
      ImageReadError: the file is missing, not an image, truncated or otherwise undecodable.
    """
    path_str = os.fspath(path)
    if not os.path.exists(path_str):
        raise ImageReadError(path, "no such file")
    if os.path.isdir(path_str):
        raise ImageReadError(path, "is a directory")
    try:
        with open(path_str, "rb") as f:
            data = f.read()
        return decode_image(data).pixels
    except OSError as error:
        raise ImageReadError(path, f"{type(error).__name__}: {error}") from error
    except ValueError as error:
        raise ImageReadError(path, str(error)) from error


def write_png(path: PathLike, array: np.ndarray) -> pathlib.Path:
    """Writes a label map or an RGB image as a lossless PNG; creates missing parent folders.

    Args:
      path: output file (conventionally ending in ``.png``).
      array: ``[H, W]`` integer label map with values in ``[0, 255]`` (written as 8-bit
        grayscale, so pixel values are the class ids), or uint8 ``[H, W, 3]`` RGB.
        ``[H, W, 1]`` is treated as ``[H, W]``; bool as 0/1.

    Returns:
      The written path.

    Raises:
      ValueError: wrong shape, non-integer dtype, or values outside ``[0, 255]``.
    """
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(
            f"write_png({os.fspath(path)!r}): expected [H, W] or [H, W, 3], got {array.shape}"
        )
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"write_png({os.fspath(path)!r}): expected an integer array, got {array.dtype}"
        )
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(
                f"write_png({os.fspath(path)!r}): values span [{array.min()}, {array.max()}], "
                "outside [0, 255]"
            )
        array = array.astype(np.uint8)
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array), mode="L" if array.ndim == 2 else "RGB").save(
        out, format="PNG"
    )
    return out


def list_images(
    folder: PathLike, extensions: Iterable[str] = IMAGE_EXTENSIONS, recursive: bool = False
) -> list[pathlib.Path]:
    """Image files in ``folder``, sorted by path.

    Files are picked by extension (case-insensitive); hidden files (names starting with ``.``,
    e.g. macOS ``._x.jpg`` resource forks) are skipped.

    Args:
      folder: the folder to list.
      extensions: extensions with the leading dot.
      recursive: also list sub-folders (sorted by relative path).

    Raises:
      NotADirectoryError: ``folder`` does not exist or is not a folder.
    """
    root = pathlib.Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(
            f"image folder {os.fspath(folder)!r} does not exist or is not a folder"
        )
    wanted = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    candidates = root.rglob("*") if recursive else root.iterdir()
    found = [
        p
        for p in candidates
        if p.suffix.lower() in wanted and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


# --- Videos ----------------------------------------------------------------------------------


def iter_video_frames(
    path: PathLike, default_fps: float = 30.0
) -> tuple[float, Generator[np.ndarray]]:
    """Opens a video and returns ``(fps, frames)``, frames being uint8 ``[H, W, 3]`` RGB.

    The file is opened and its first frame decoded before returning, so a missing, unreadable
    or empty video fails here rather than in the middle of a loop. The capture is released when
    the iterator is exhausted or closed.

    Args:
      path: video file.
      default_fps: returned when the container reports no usable frame rate.

    Raises:
      VideoError: the file is missing, cannot be opened, or no frame can be decoded.
    """
    path_str = os.fspath(path)
    if not os.path.isfile(path_str):
        raise VideoError(path, "no such file")
    capture = cv2.VideoCapture(path_str)
    if not capture.isOpened():
        capture.release()
        raise VideoError(path, "cannot be opened (not a video, or no decoder for its codec)")
    ok, first = capture.read()
    if not ok or first is None:
        capture.release()
        raise VideoError(path, "no frame could be decoded")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    if not math.isfinite(fps) or fps <= 0:
        fps = float(default_fps)

    def frames() -> Generator[np.ndarray]:
        try:
            frame = first
            while frame is not None:
                yield bgr_to_rgb(frame)
                ok, frame = capture.read()
                if not ok:
                    break
        finally:
            capture.release()

    return fps, frames()


def bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    """An OpenCV frame (BGR, BGRA or grayscale `[H, W]`) as uint8 RGB `[H, W, 3]`."""
    if frame.ndim == 2:
        return np.repeat(frame[:, :, None], 3, axis=2)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


class VideoWriter:
    """Writes uint8 RGB frames to a video file (``mp4v`` codec) through ``cv2.VideoWriter``.

    Use as a context manager::

        fps, frames = iter_video_frames("in.mp4")
        with VideoWriter("out.mp4", fps, (width, height)) as writer:
            for frame in frames:
                writer.write(frame)

    Args:
      path: output file, normally ``.mp4`` (parent folders are created).
      fps: frames per second.
      size: ``(width, height)`` in pixels, OpenCV's order. Every frame must be
        ``[height, width, 3]`` (or ``[height, width]`` grayscale): OpenCV silently drops frames of
        another size, so ``write`` raises instead.
      fourcc: four-character codec code.

    Raises:
      VideoError: the writer cannot be opened (codec unavailable, folder not writable).
    """

    def __init__(
        self, path: PathLike, fps: float, size: Sequence[int], fourcc: str = "mp4v"
    ) -> None:
        self.path = pathlib.Path(path)
        if len(size) != 2 or min(int(s) for s in size) <= 0:
            raise ValueError(
                f"video {os.fspath(path)!r}: size must be (width, height) > 0, got {size}"
            )
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"video {os.fspath(path)!r}: fps must be positive, got {fps}")
        self.width, self.height = int(size[0]), int(size[1])
        self.fps = float(fps)
        self.frames_written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer: cv2.VideoWriter | None = cv2.VideoWriter(
            os.fspath(self.path),
            cv2.VideoWriter.fourcc(*fourcc),
            self.fps,
            (self.width, self.height),
        )
        if not self._writer.isOpened():
            self._writer.release()
            self._writer = None
            raise VideoError(path, f"cannot open for writing with codec {fourcc!r}")

    def write(self, frame: np.ndarray) -> None:
        """Appends one uint8 RGB ``[height, width, 3]`` (or grayscale ``[height, width]``) frame."""
        if self._writer is None:
            raise VideoError(self.path, "write after close")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8:
            raise ValueError(
                f"video {os.fspath(self.path)!r}: frames must be uint8, got {frame.dtype}"
            )
        if frame.ndim == 2:
            frame = np.repeat(frame[:, :, None], 3, axis=2)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(
                f"video {os.fspath(self.path)!r}: frames must be [H, W, 3] RGB, got {frame.shape}"
            )
        if frame.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"video {os.fspath(self.path)!r}: frame is {frame.shape[0]}x{frame.shape[1]} "
                f"(HxW) but the writer was opened for width={self.width}, height={self.height}"
            )
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
        self.frames_written += 1

    def close(self) -> None:
        """Finalises the file; further writes raise. Safe to call twice."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # e.g. at interpreter shutdown
            self.close()
