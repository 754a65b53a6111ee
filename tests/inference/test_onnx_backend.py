"""predict.py on onnxruntime as a user runs it: int8 (calibrated on the checkpoint's own training
images, made before anything is traced), float32 and the default (`--backend=auto`) on a real
CamVid frame, a folder and a video, against each other and against JAX. Skipped unless the extras
of requirements-export.txt are installed and ../shared/data/camvid is there; the tests of
`Backend.resolve` run everywhere (the extras' presence and the device simulated)."""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import pytest
from PIL import Image

from configs import camvid
from icnet_jax import errors
from icnet_jax.inference import image_io, onnx_backend
from tests.checkpoint_fakes import write_checkpoint
from tests.conftest import SHARED_DATA
from tests.scripts import run

CAMVID = SHARED_DATA / "camvid"
# A network input size unlike the frames' 360x480: the calibration images are resized to it
# (the resize that used to be traced into the prediction function and fail).
EVAL_SIZE = (181, 241)


def link(source: pathlib.Path, target: pathlib.Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source)


@pytest.fixture(scope="module")
def camvid_run(tmp_path_factory):
    """`(checkpoint workdir, input folder)`: a random-weight CamVid checkpoint (width 0.25, 11
    classes, eval size 181x241) whose training split is two real frames, and a folder with a
    real val frame and a two-frame video of val frames."""
    pytest.importorskip("jax2onnx")
    pytest.importorskip("onnxruntime")
    if not (CAMVID / "train.txt").is_file():
        pytest.skip(f"real-data test: {CAMVID} is absent (CI has it)")
    root = tmp_path_factory.mktemp("camvid_onnx")
    lines = (CAMVID / "train.txt").read_text().splitlines()[:2]
    for line in lines:
        for name in line.split():
            link(CAMVID / name, root / "camvid" / name)
    (root / "camvid" / "train.txt").write_text("\n".join(lines) + "\n")
    config = camvid.get_config()
    config.model.width = 0.25
    config.input.crop_size = (33, 65)
    config.input.eval_size = EVAL_SIZE
    config.dataset.data_dir = str(root / "tfds")
    config.dataset.manual_dir = str(root / "camvid")
    write_checkpoint(root / "run", config, num_classes=11)
    frames = sorted((CAMVID / "val").glob("*"))[:2]
    link(frames[0], root / "inputs" / f"frame{frames[0].suffix}")
    with image_io.VideoWriter(root / "inputs" / "clip.mp4", 5.0, (480, 360)) as writer:
        for frame in frames:
            writer.write(image_io.read_image(frame))
    return root / "run", root / "inputs"


def predict(workdir, inputs, output, *flags) -> np.ndarray:
    """Runs predict.py on the folder; checks its outputs and the line naming the backend;
    returns the frame's labels."""
    done = run(
        "predict.py", f"--checkpoint={workdir}", f"--input={inputs}", f"--output={output}",
        "--strict", *flags,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    expected = {
        (): "backend: onnxruntime float32 (auto: a CPU with onnxruntime)",
        ("--backend=jax",): "backend: jax (--backend=jax)",
        ("--backend=onnxruntime",): "backend: onnxruntime float32 (--backend=onnxruntime)",
    }.get(flags, "backend: onnxruntime int8")
    assert expected in done.stdout, done.stdout[-3000:]
    assert "2 of 2 inputs segmented" in done.stdout
    fps, video = image_io.iter_video_frames(output / "clip_overlay.mp4")
    assert len(list(video)) == 2
    labels = np.asarray(Image.open(output / "frame_labels.png"))
    assert labels.shape == (360, 480) and labels.max() < 11
    return labels


@pytest.mark.slow  # three runs of predict.py, two exports and a quantisation
@pytest.mark.shared_data
def test_predict_runs_int8_and_float32_onnxruntime_on_a_folder_and_a_video(camvid_run, tmp_path):
    workdir, inputs = camvid_run
    int8 = predict(
        workdir, inputs, tmp_path / "int8",
        "--backend=onnxruntime", "--dtype=int8", "--calibration_images=2",
    )  # fmt: skip
    float32 = predict(workdir, inputs, tmp_path / "float32", "--backend=onnxruntime")
    jax = predict(workdir, inputs, tmp_path / "jax", "--backend=jax")
    default = predict(workdir, inputs, tmp_path / "auto")  # the extras are installed here
    assert np.mean(default == jax) >= 0.999
    exported = {p.name for p in (workdir / "export").glob("*.onnx")}
    assert any(n.startswith("icnet_181x241_") and "_int8_" in n for n in exported), exported
    assert np.mean(float32 == jax) >= 0.999  # the same network: rounding only
    # Quantisation moves the logits a little, and a random-weight network has no margin to
    # spare (its classes are close wherever its logits are small): 94.5% of the pixels kept
    # their class on the machine that wrote this test (2 calibration frames), so the bound
    # leaves room for other CPUs' int8 kernels. No class covers 80% of the frame, so labels
    # that ignore the image (a NaN scale: one class everywhere) stay far below it.
    assert np.bincount(float32.ravel()).max() / float32.size < 0.8
    assert np.mean(int8 == float32) >= 0.9


def evaluate(workdir, *flags) -> dict:
    """Runs evaluate.py on the two training frames; returns its metrics.json."""
    done = run("evaluate.py", f"--workdir={workdir}", "--split=train", *flags)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    folder = re.search(r"outputs in (\S+)", done.stdout)
    assert folder, done.stdout[-3000:]
    return json.loads((pathlib.Path(folder[1]) / "metrics.json").read_text())


@pytest.mark.slow  # three runs of evaluate.py (the exports are those of the test above, if run)
@pytest.mark.shared_data
def test_evaluate_runs_the_export_beside_the_runs_own_evaluation(camvid_run):
    workdir, _ = camvid_run
    jax = evaluate(workdir)
    float32 = evaluate(workdir, "--backend=onnxruntime")
    int8 = evaluate(workdir, "--backend=auto", "--dtype=int8", "--calibration_images=2")
    assert jax["backend"] == "jax" and list(jax["branches"]) == ["sub124", "sub24", "sub4"]
    assert float32["backend"] == "onnxruntime float32" and int8["backend"] == "onnxruntime int8"
    assert list(float32["branches"]) == list(int8["branches"]) == ["sub124"]  # the export's
    folders = {p.name for p in (workdir / "eval").iterdir()}
    assert {"train", "train_onnxruntime-float32", "train_onnxruntime-int8"} <= folders
    # Same network, rounding only: the confusion matrices differ by a few pixels at most.
    reference = np.asarray(jax["branches"]["sub124"]["confusion"])
    moved = np.abs(np.asarray(float32["branches"]["sub124"]["confusion"]) - reference).sum()
    assert moved <= 0.002 * reference.sum()
    assert np.asarray(int8["branches"]["sub124"]["confusion"]).sum() == reference.sum()


@pytest.mark.shared_data
def test_a_loaded_model_on_onnxruntime_gives_probabilities_before_labels(camvid_run):
    """`icnet_jax.load(..., backend="onnxruntime")`: probabilities first (their sessions made
    before tracing), then labels: the labels are the probabilities' argmax."""
    import icnet_jax

    workdir, inputs = camvid_run
    model = icnet_jax.load(workdir, backend="onnxruntime")
    frame = image_io.read_image(next(p for p in inputs.iterdir() if p.suffix != ".mp4"))
    probabilities = model.probabilities(frame)
    assert probabilities.shape == (*frame.shape[:2], 11)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-4)
    assert np.mean(model.segment(frame) == probabilities.argmax(-1)) >= 0.999


@pytest.mark.parametrize(
    "platform, extras, dtype, expected",
    [
        ("cpu", True, "float32", ("onnxruntime", "auto: a CPU with onnxruntime")),
        ("cpu", False, "float32", ("jax", "auto: no export extras; onnxruntime is faster")),
        ("gpu", True, "float32", ("jax", "auto: JAX on the gpu")),
        ("tpu", False, "float32", ("jax", "auto: JAX on the tpu")),
        ("gpu", True, "int8", ("onnxruntime", "auto: int8 runs on onnxruntime")),
    ],
)
def test_auto_backend_is_onnxruntime_on_a_cpu_with_the_extras(
    monkeypatch, platform, extras, dtype, expected
):
    monkeypatch.setattr(onnx_backend.jax, "default_backend", lambda: platform)
    monkeypatch.setattr(onnx_backend, "extras_available", lambda: extras)
    backend, why = onnx_backend.Backend("auto", dtype).resolve()
    assert backend.name == expected[0] and why.startswith(expected[1])
    assert backend.dtype == dtype
    if platform == "cpu" and not extras:
        assert "requirements-export.txt" in why  # says how to get the faster one


def test_explicit_backends_stay_as_given(monkeypatch):
    monkeypatch.setattr(onnx_backend, "extras_available", lambda: False)
    for name in ("jax", "onnxruntime"):
        backend, why = onnx_backend.Backend(name).resolve()
        assert backend.name == name and why == f"--backend={name}"
    with pytest.raises(errors.UserError, match="--backend=onnxruntime"):
        onnx_backend.Backend("jax", "int8").resolve()[0].check()
