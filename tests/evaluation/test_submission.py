"""Benchmark-server predictions (icnet_jax/evaluation/submission.py,
`evaluate.py --submission_dir`): the Cityscapes labelIds and file names, checked against the
official files of the real sample frame and against cityscapesScripts' own evaluation of what
we wrote."""

from __future__ import annotations

import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from configs import cityscapes
from icnet_jax.errors import UserError
from icnet_jax.evaluation import evaluate
from icnet_jax.evaluation.submission import SubmissionWriter
from tests.checkpoint_fakes import checkpoint_config, write_checkpoint

STEM = "frankfurt_000000_000294"


def read(path: pathlib.Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_cityscapes_train_ids_become_the_official_label_ids(shared_data, tmp_path):
    gt = shared_data / "cityscapes_sample" / "gtFine" / "val" / "frankfurt"
    train_ids = read(gt / f"{STEM}_gtFine_labelTrainIds.png")
    label_ids = read(gt / f"{STEM}_gtFine_labelIds.png")
    writer = SubmissionWriter("cityscapes", tmp_path)
    path = writer.write(f"val/frankfurt/{STEM}", np.where(train_ids == 255, 0, train_ids))
    assert path == tmp_path / f"{STEM}_leftImg8bit.png"
    written = read(path)
    assert written.dtype == np.uint8 and written.shape == label_ids.shape
    labelled = train_ids != 255
    assert labelled.mean() > 0.5
    # The sample's two label files were downscaled separately: 0.2% of pixels disagree at edges.
    assert (written[labelled] == label_ids[labelled]).mean() >= 0.997


def test_names_the_server_cannot_match_and_collisions_are_refused(tmp_path):
    writer = SubmissionWriter("cityscapes", tmp_path)
    with pytest.raises(UserError, match="not a Cityscapes name"):
        writer.write("val/frankfurt/holiday_photo", np.zeros((2, 2), np.uint8))
    writer.write(f"val/frankfurt/{STEM}", np.zeros((2, 2), np.uint8))
    with pytest.raises(UserError, match="would both be written"):
        writer.write(f"test/frankfurt/{STEM}", np.zeros((2, 2), np.uint8))
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserError, match="cannot create the submission folder .*a_file/sub"):
        SubmissionWriter("cityscapes", tmp_path / "a_file" / "sub")
    other = SubmissionWriter("camvid", tmp_path / "camvid")
    assert other.write("val/0016E5_07959.png", np.full((2, 2), 3, np.uint8)).name == (
        "0016E5_07959.png"
    )
    assert read(tmp_path / "camvid" / "0016E5_07959.png").max() == 3


def test_as_a_loop_writer_it_writes_its_branch_and_reports(tmp_path):
    writer = SubmissionWriter("camvid", tmp_path, branch="sub24")
    predictions = {b: np.full((2, 3), i, np.uint8) for i, b in enumerate(("sub4", "sub24"))}
    writer.add({"file_name": "val/0016E5_07959.png", "label": None}, predictions)
    assert read(tmp_path / "0016E5_07959.png").tolist() == [[1, 1, 1], [1, 1, 1]]
    assert writer.close() == f"1 predictions (sub24, train ids) in {tmp_path}"


@pytest.fixture
def cityscapes_run(shared_data, tmp_path):
    """A random 19-class ICNet checkpoint and a Cityscapes manual dir holding the sample frame
    as val, and again as test with the release's all-ignore test labels."""
    sample = shared_data / "cityscapes_sample"
    manual = tmp_path / "cityscapes"
    shutil.copytree(sample, manual, ignore=shutil.ignore_patterns("LICENSE*"))
    for folder, suffix in (("leftImg8bit", "leftImg8bit"), ("gtFine", "gtFine_labelIds")):
        src = manual / folder / "val" / "frankfurt" / f"{STEM}_{suffix}.png"
        dst = manual / folder / "test" / "berlin" / f"berlin_000000_000019_{suffix}.png"
        dst.parent.mkdir(parents=True)
        if folder == "gtFine":
            Image.fromarray(np.zeros_like(read(src))).save(dst)
        else:
            shutil.copy(src, dst)
    workdir = tmp_path / "run"
    saved = checkpoint_config(**{"dataset.name": "cityscapes", "input.eval_size": None})
    write_checkpoint(workdir, saved, num_classes=19, seed=3)
    config = cityscapes.get_config()
    config.dataset.manual_dir = str(manual)
    config.dataset.data_dir = str(tmp_path / "tfds")
    return config, workdir, manual


@pytest.mark.slow
def test_cityscapesscripts_reads_our_predictions_and_finds_our_ious(cityscapes_run, tmp_path):
    ev = pytest.importorskip(
        "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling",
        reason="the cityscapes extras (requirements-cityscapes.txt); CI installs them",
    )
    config, workdir, manual = cityscapes_run
    out = tmp_path / "submission"
    options = evaluate.EvalOptions(workdir=workdir, split="val", submission_dir=out, progress=False)
    ours = evaluate.evaluate(config, options)
    ours = ours["branches"]["sub124"]
    predicted = read(out / f"{STEM}_leftImg8bit.png")
    assert len(np.unique(predicted)) >= 4, "a prediction of few classes would test little"

    args = ev.args
    args.JSONOutput, args.quiet = False, True
    # Its instance-level iIoU (which we do not compute) calls np.in1d, gone from numpy 2.4.
    args.evalInstLevelScore = False
    args.predictionPath, args.predictionWalk = str(out), None
    gt = str(manual / "gtFine" / "val" / "frankfurt" / f"{STEM}_gtFine_labelIds.png")
    prediction = ev.getPrediction(args, gt)  # the server's name matching
    official = ev.evaluateImgLists([prediction], [gt], args)

    theirs = official["classScores"]
    # They list every labelId's class; those outside the 19 are ignoreInEval and NaN.
    assert set(ours["per_class"]) <= set(theirs)
    assert all(np.isnan(v) for k, v in theirs.items() if k not in ours["per_class"])
    for name, iou in ours["per_class"].items():
        if iou is None:
            assert np.isnan(theirs[name]), name
        else:
            assert theirs[name] == pytest.approx(iou, abs=1e-12), name
    assert official["averageScoreClasses"] == pytest.approx(ours["miou"], abs=1e-12)
    present = [n for n, v in ours["per_class"].items() if v is not None]
    assert len(present) >= 8 and any(0 < ours["per_class"][n] < 1 for n in present)


@pytest.mark.slow
def test_a_split_without_labels_gets_predictions_and_no_metrics(cityscapes_run, tmp_path, logged):
    config, workdir, _ = cityscapes_run
    out = tmp_path / "submission"
    options = evaluate.EvalOptions(
        workdir=workdir, split="test", submission_dir=out, progress=False
    )
    result = evaluate.evaluate(config, options)
    assert [p.name for p in out.iterdir()] == ["berlin_000000_000019_leftImg8bit.png"]
    written = read(out / "berlin_000000_000019_leftImg8bit.png")
    assert written.shape == (128, 256) and set(np.unique(written)) <= {
        7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33
    }  # fmt: skip
    assert not (pathlib.Path(result["output_dir"]) / "metrics.json").exists()
    assert "test has no labelled pixels" in logged()
