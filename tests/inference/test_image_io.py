"""Image and video reading/writing on small files made here."""

import pickle

import cv2
import numpy as np
import pytest
from PIL import Image

from icnet_jax.inference.image_io import (
    ImageReadError,
    VideoError,
    VideoWriter,
    iter_video_frames,
    list_images,
    read_image,
    write_png,
)


def _pattern(height=4, width=6):
    """uint8 RGB image whose every pixel is distinct."""
    values = np.arange(height * width * 3, dtype=np.uint8).reshape(height, width, 3)
    return values * 3


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    return exif


def test_rgb_png_round_trip(tmp_path):
    image = _pattern()
    path = write_png(tmp_path / "sub" / "x.png", image)
    got = read_image(path)
    assert got.dtype == np.uint8 and got.shape == (4, 6, 3)
    np.testing.assert_array_equal(got, image)


def test_rgba_alpha_dropped(tmp_path):
    rgba = np.zeros((3, 5, 4), np.uint8)
    rgba[..., :3] = _pattern(3, 5)
    rgba[..., 3] = np.arange(15).reshape(3, 5) * 17  # alpha 0..238, including fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba[..., :3])


def test_grayscale_replicated(tmp_path):
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 12
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    got = read_image(tmp_path / "g.png")
    assert got.shape == (4, 5, 3)
    for channel in range(3):
        np.testing.assert_array_equal(got[..., channel], gray)


def test_16_bit_gray_scaled_by_high_byte(tmp_path):
    values = np.array([[0, 255, 256, 4660], [32768, 65280, 65535, 1000]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")  # mode I;16
    got = read_image(tmp_path / "g16.png")
    expected = np.array([[0, 0, 1, 18], [128, 255, 255, 3]], np.uint8)
    for channel in range(3):
        np.testing.assert_array_equal(got[..., channel], expected)


def test_16_bit_rgb_scaled_by_high_byte(tmp_path):
    bgr = np.zeros((2, 3, 3), np.uint16)
    bgr[...] = [1000, 30000, 65535]  # OpenCV writes BGR
    assert cv2.imwrite(str(tmp_path / "c16.png"), bgr)
    got = read_image(tmp_path / "c16.png")
    assert (got == np.array([65535 >> 8, 30000 >> 8, 1000 >> 8], np.uint8)).all()


def test_palette_png(tmp_path):
    indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette([10, 20, 30, 200, 100, 0, 0, 255, 7] + [0] * (256 * 3 - 9))
    image.save(tmp_path / "p.png")
    colours = np.array([[10, 20, 30], [200, 100, 0], [0, 255, 7]], np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), colours[indices])

    image.info["transparency"] = 1  # palette entry 1 transparent: colour kept, alpha dropped
    image.save(tmp_path / "pt.png", transparency=1)
    np.testing.assert_array_equal(read_image(tmp_path / "pt.png"), colours[indices])


@pytest.mark.parametrize(("orientation", "rotation"), [(6, -1), (8, 1), (3, 2), (1, 0)])
def test_exif_orientation_applied_png(tmp_path, orientation, rotation):
    # 6: stored image must be turned 90 degrees clockwise for display (phone held upright);
    # 8: 90 degrees counter-clockwise; 3: 180 degrees.
    stored = _pattern(4, 6)
    path = tmp_path / f"o{orientation}.png"
    Image.fromarray(stored).save(path, exif=_exif(orientation))
    got = read_image(path)
    np.testing.assert_array_equal(got, np.rot90(stored, k=rotation))


def test_exif_orientation_applied_jpeg(tmp_path):
    # A phone-like JPEG: stored landscape 32x64, top half red, bottom half blue; orientation 6
    # turns it clockwise, so red ends on the right.
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:16] = (255, 0, 0)
    stored[16:] = (0, 0, 255)
    Image.fromarray(stored).save(tmp_path / "phone.jpg", quality=95, exif=_exif(6))
    got = read_image(tmp_path / "phone.jpg").astype(int)
    assert got.shape == (64, 32, 3)
    assert np.abs(got[:, 20:] - (255, 0, 0)).max() < 40
    assert np.abs(got[:, :12] - (0, 0, 255)).max() < 40


def test_unreadable_files_name_the_file(tmp_path):
    corrupt = tmp_path / "corrupt_image.png"
    corrupt.write_bytes(b"this is not an image at all")
    with pytest.raises(ImageReadError, match="corrupt_image.png") as info:
        read_image(corrupt)
    assert info.value.path == str(corrupt)
    assert isinstance(info.value, OSError)

    good = tmp_path / "good.png"
    write_png(good, np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:2000])  # of ~12 KB
    with pytest.raises(ImageReadError, match="truncated.png"):
        read_image(truncated)

    with pytest.raises(ImageReadError, match="missing.png.*no such file"):
        read_image(tmp_path / "missing.png")

    error = pickle.loads(pickle.dumps(ImageReadError("a.png", "broken")))
    assert (error.path, error.reason) == ("a.png", "broken") and "a.png" in str(error)


def test_write_png_labels(tmp_path):
    labels = np.array([[0, 1, 18], [255, 7, 3]], np.int64)
    path = write_png(tmp_path / "l.png", labels)
    with Image.open(path) as image:
        assert image.mode == "L"
        np.testing.assert_array_equal(np.asarray(image), labels)
    with pytest.raises(ValueError, match="outside"):
        write_png(tmp_path / "bad.png", np.array([[0, 256]]))
    with pytest.raises(ValueError, match="integer"):
        write_png(tmp_path / "bad.png", np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="expected"):
        write_png(tmp_path / "bad.png", np.zeros((2, 2, 4), np.uint8))


def test_list_images(tmp_path):
    for name in ("b.jpg", "a.PNG", "c.txt", ".hidden.png", "sub/d.png", "e.jpeg"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["a.PNG", "b.jpg", "e.jpeg"]
    listed = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, recursive=True)]
    assert listed == ["a.PNG", "b.jpg", "e.jpeg", "sub/d.png"]
    with pytest.raises(NotADirectoryError, match="nowhere"):
        list_images(tmp_path / "nowhere")


def test_video_round_trip(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    path = tmp_path / "out" / "v.mp4"
    with VideoWriter(path, fps=10, size=(48, 32)) as writer:  # (width, height)
        for colour in colours:
            writer.write(np.full((32, 48, 3), colour, np.uint8))
        with pytest.raises(ValueError, match="width=48, height=32"):
            writer.write(np.zeros((48, 32, 3), np.uint8))
    assert writer.frames_written == 3
    with pytest.raises(VideoError, match="after close"):
        writer.write(np.zeros((32, 48, 3), np.uint8))

    fps, frames = iter_video_frames(path)
    frames = list(frames)
    assert fps == pytest.approx(10.0)
    assert len(frames) == 3
    for frame, colour in zip(frames, colours):
        assert frame.shape == (32, 48, 3) and frame.dtype == np.uint8
        # Lossy codec: the mean colour is close to the written one (RGB order kept).
        assert np.abs(frame.reshape(-1, 3).mean(0) - colour).max() < 30


def test_video_errors(tmp_path):
    with pytest.raises(VideoError, match="missing.mp4"):
        iter_video_frames(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(VideoError, match="junk.mp4"):
        iter_video_frames(junk)
