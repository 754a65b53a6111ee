"""evaluate.py and icnet_jax/saved_run.py: metrics against hand-computed values, test-time
augmentation, the checkpoint's settings winning over the command line, the written files."""

from __future__ import annotations

import json
import os
import pathlib
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import quickstart
from icnet_jax import build, default, errors
from icnet_jax.data import taxonomy
from icnet_jax.evaluation import evaluate, loop
from icnet_jax.inference import onnx_backend, saved_run, test_time
from icnet_jax.inference.image_io import read_image
from icnet_jax.train import trainer
from icnet_jax.weights import checkpoints, spec
from tests import scripts
from tests.checkpoint_fakes import NUM_CLASSES, checkpoint_config, write_checkpoint

REPO = pathlib.Path(__file__).resolve().parents[2]


def command_line_config():
    """A command line that disagrees with the checkpoint on every setting describing weights."""
    config = quickstart.get_config()
    config.model.width = 0.5  # restoring 0.25-width weights into it would fail
    config.input.bgr = True
    return config


@pytest.fixture
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint[:2]


def example(image, label, name):
    return {"image": image, "label": label[:, :, None], "file_name": name.encode()}


# --- Settings from the checkpoint ---------------------------------------------------------------


def test_checkpoint_settings_win_over_the_command_line():
    saved = {
        "model": {"width": 0.25, "branch": "sub4", "align_corners": False},
        "input": {"mean": [1, 2, 3], "bgr": False, "eval_size": [65, 129], "crop_size": [9, 9]},
        "dataset": {"name": "camvid"},
        "ignore_label": 11,
    }
    cli = command_line_config()
    merged, settings = saved_run.merge_checkpoint_config(cli, saved)
    assert merged.model.width == 0.25 and merged.model.branch == "sub4"
    assert merged.model.align_corners is False
    assert merged.model.cff_upsampling == cli.model.cff_upsampling  # not saved: command line
    assert merged.input.mean == (1, 2, 3) and merged.input.eval_size == (65, 129)
    assert merged.input.bgr is False and merged.ignore_label == 11
    # Dataset and training fields stay the command line's.
    assert merged.dataset.name == cli.dataset.name and merged.input.crop_size == (257, 513)
    keys = {s.key for s in settings}
    assert keys == {"model.width", "model.branch", "model.align_corners", "input.mean",
                    "input.bgr", "input.eval_size", "ignore_label"}  # fmt: skip
    text = saved_run.describe_settings(settings)
    assert "model.width = 0.25   (command line: 0.5)" in text
    assert cli.model.width == 0.5  # the command-line config is untouched

    kept, settings = saved_run.merge_checkpoint_config(cli, saved, ["input.eval_size", "model"])
    assert kept.input.eval_size is None and kept.model.width == 0.5 and kept.input.mean == (1, 2, 3)
    assert {s.key for s in settings} == {"input.mean", "input.bgr", "ignore_label"}


def test_load_checkpoint_takes_the_saved_settings_and_classes(checkpoint):
    workdir, state = checkpoint
    for path in (workdir, workdir / "checkpoints" / "7"):
        loaded = saved_run.load_checkpoint(path, command_line_config())
        assert loaded.step == 7 and loaded.num_classes == NUM_CLASSES
        assert loaded.workdir == workdir.absolute()
        assert loaded.config.model.width == 0.25 and loaded.config.input.bgr is False
        assert loaded.config.input.mean == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(
        loaded.variables["params"]["conv6_cls"]["kernel"], state.params["conv6_cls"]["kernel"]
    )
    with pytest.raises(FileNotFoundError):
        saved_run.load_checkpoint(workdir / "nowhere", command_line_config())


# --- Metrics by hand, through evaluate() with a model whose output is known ---------------------


class OneHotModel:
    """Stands in for ICNet (branch 'all'): sub124 predicts the image's one-hot channel, sub4
    class 0 everywhere, sub24 class 1 everywhere; pixelwise, so flips and the exact x2 zoom of
    align-corners resizing leave its predictions unchanged."""

    branch = "all"

    def apply(self, variables, images):
        n, h, w, _ = images.shape
        constant = jnp.zeros((n, h, w, 3), jnp.float32)
        return {
            "sub4": constant.at[..., 0].set(10.0),
            "sub24": constant.at[..., 1].set(10.0),
            "sub124": 10.0 * images,
        }


# Labels and the sub124 predictions of the hand-computed example (3 classes, 255 = ignore).
HAND_LABEL = np.array([[0, 0, 1], [1, 2, 255]], np.uint8)
HAND_PREDICTION = np.array([[0, 1, 1], [1, 1, 2]], np.uint8)
# Rows: ground truth, columns: prediction; the ignored pixel is not counted.
HAND_CONFUSION = {
    "sub4": [[2, 0, 0], [2, 0, 0], [1, 0, 0]],
    "sub24": [[0, 2, 0], [0, 2, 0], [0, 1, 0]],
    "sub124": [[1, 1, 0], [0, 2, 0], [0, 1, 0]],
}
# IoU = TP / (GT + predicted - TP), per class.
HAND_IOU = {
    "sub4": [2 / 5, 0.0, 0.0],
    "sub24": [0.0, 2 / 5, 0.0],
    "sub124": [1 / 2, 2 / 4, 0.0],
}
HAND_PIXEL_ACCURACY = {"sub4": 2 / 5, "sub24": 2 / 5, "sub124": 3 / 5}
# Regions (8-connectivity): class 0 {(0,0),(0,1)}, class 1 {(0,2)} and {(1,0)} (not touching),
# class 2 {(1,1)}; mean of the fractions of each region predicted right.
HAND_REGION_ACCURACY = {
    "sub4": (1 + 0 + 0 + 0) / 4,
    "sub24": (0 + 1 + 1 + 0) / 4,
    "sub124": (1 / 2 + 1 + 1 + 0) / 4,
}


def hand_source():
    image = np.eye(3, dtype=np.uint8)[HAND_PREDICTION]  # one-hot channels
    return [example(image, HAND_LABEL, "city/a_leftImg8bit.png")]


def restore_as_three_classes(path, make_abstract, step=None):
    """`checkpoints.restore` for a 3-class stand-in model without weights."""
    manager, _ = checkpoints.open_for_reading(path)
    step = manager.latest_step()
    saved = checkpoints.read_config(manager, step)
    manager.close()
    return checkpoints.Restored(
        state=types.SimpleNamespace(params={}, batch_stats={}),
        step=step,
        path=pathlib.Path(manager.directory) / str(step),
        workdir=pathlib.Path(manager.directory).parent,
        saved_config=saved,
        num_classes=3,
        extra=make_abstract(saved, 3)[1],
    )


HAND_INFO = taxonomy.custom_info("hand", ["zero", "one", "two"])


@pytest.mark.parametrize("flip, scales", [(False, (1.0,)), (True, (1.0, 2.0))])
def test_metrics_json_matches_hand_computed_values(tmp_path, checkpoint, monkeypatch, flip, scales):
    workdir, _ = checkpoint
    # The checkpoint's classifier has 9 classes; this model and dataset have 3.
    monkeypatch.setattr(checkpoints, "restore", restore_as_three_classes)
    monkeypatch.setattr(build, "inference_model", lambda config, n, branch="all": OneHotModel())
    out = tmp_path / "out"
    options = evaluate.EvalOptions(
        workdir, workdir=out, split="val", flip=flip, scales=scales, save_predictions=5,
        progress=False,
    )  # fmt: skip
    summary = evaluate.evaluate(None, options, source=hand_source(), info=HAND_INFO)
    # The run's own settings write eval/val; test-time options write beside it.
    folder = out / "eval" / ("val_flip_scales-1-2" if flip else "val")
    assert summary["output_dir"] == str(folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["step"] == 7 and metrics["split"] == "val"
    assert metrics["flip"] is flip and metrics["scales"] == list(scales)
    assert metrics["checkpoint"].endswith(os.path.join("checkpoints", "7"))
    assert metrics["num_images"] == 1 and metrics["eval_size"] is None
    # The checkpoint's normalisation (RGB, mean 0) was used: BGR would have swapped the channels.
    assert metrics["from_checkpoint"]["input.bgr"] is False
    assert set(metrics["branches"]) == {"sub4", "sub24", "sub124"}
    for branch, m in metrics["branches"].items():
        assert m["confusion"] == HAND_CONFUSION[branch]
        np.testing.assert_allclose(m["iou"], HAND_IOU[branch], rtol=1e-12)
        assert m["miou"] == pytest.approx(np.mean(HAND_IOU[branch]), rel=1e-12)
        assert m["pixel_accuracy"] == pytest.approx(HAND_PIXEL_ACCURACY[branch], rel=1e-12)
        assert m["per_class"] == dict(zip(HAND_INFO.class_names, HAND_IOU[branch]))
        assert m["num_pixels"] == 5 and m["absent_classes"] == []
    assert summary["branches"] == metrics["branches"]

    assert metrics["dataset"]["name"] == "street" and metrics["changed_from_run"] == {}
    assert metrics["protocol"] == {
        "eval_size": None, "flip": flip, "scales": list(scales), "ignore_label": 255
    }  # fmt: skip
    region = json.loads((folder / "region_accuracy.json").read_text())
    assert region["num_images"] == 1 and region["num_regions"] == 4
    assert region["region_counts"][0] == 4 and region["step"] == 7
    for branch, value in HAND_REGION_ACCURACY.items():
        assert region["overall_accuracy"][branch] == pytest.approx(value)
    assert set(region["differences"]) == {"sub24-sub4", "sub124-sub24"}
    for name in ("region_accuracy.png", "per_class_iou.png"):
        assert (folder / name).stat().st_size > 1000

    predictions = folder / "predictions" / "city"
    labels = np.asarray(Image.open(predictions / "a_leftImg8bit_labels.png"))
    np.testing.assert_array_equal(labels, HAND_PREDICTION)  # sub124, the checkpoint's branch
    for kind in ("color", "overlay", "gt"):
        assert read_image(predictions / f"a_leftImg8bit_{kind}.png").shape == (2, 3, 3)


def test_several_devices_give_the_same_confusions():
    rng = np.random.default_rng(0)
    examples = []
    for i, (h, w) in enumerate([(4, 6), (4, 6), (5, 3), (4, 6), (5, 3)]):  # sizes mixed
        pred = rng.integers(0, 3, (h, w))
        label = rng.integers(0, 3, (h, w)).astype(np.int32)
        label[0, 0] = 255
        examples.append({"image": np.eye(3, dtype=np.float32)[pred], "label": label, "i": i})
    step = loop.make_step(OneHotModel(), 3)
    seen = []

    class Seen:
        def add(self, ex, predictions):
            seen.append((ex["i"], predictions["sub124"].shape))

    results = [
        loop.evaluate_examples(
            step,
            {},
            examples,
            ["a", "b", "c"],
            ("sub4", "sub24", "sub124"),
            devices=jax.local_devices()[:n],
            progress=False,
            writers=[Seen()],
        )  # fmt: skip
        for n in (1, 3)
    ]
    expected = np.zeros((3, 3), np.int64)
    for ex in examples:
        valid = ex["label"] != 255
        np.add.at(expected, (ex["label"][valid], ex["image"].argmax(-1)[valid]), 1)
    for result in results:
        np.testing.assert_array_equal(result["sub124"]["confusion"], expected)
    # Predictions come back in order, at each image's size, on either number of devices.
    assert seen == 2 * [(ex["i"], ex["label"].shape) for ex in examples]


def test_scaled_size_keeps_the_release_geometry():
    assert test_time.scaled_size((1025, 2049), 0.75) == (769, 1537)
    assert test_time.scaled_size((1025, 2049), 1.25) == (1281, 2561)
    assert test_time.scaled_size((100, 200), 0.5, align_corners=False) == (50, 100)
    assert test_time.parse_scales("0.75, 1,1.25") == (0.75, 1.0, 1.25)
    with pytest.raises(ValueError):
        test_time.parse_scales("0,1")


# --- The real network, against model.apply + numpy ----------------------------------------------


@pytest.mark.slow  # two compilations of the network: about 20 s on 2 loaded cores
def test_icnet_metrics_equal_numpy_from_model_apply(tmp_path, checkpoint):
    workdir, state = checkpoint
    rng = np.random.default_rng(1)
    source = []
    for i in range(2):
        image = rng.integers(0, 256, (33, 65, 3), dtype=np.uint8)
        label = rng.integers(0, NUM_CLASSES, (33, 65), dtype=np.uint8)
        label[:5] = 255
        source.append(example(image, label, f"img{i}.png"))
    options = evaluate.EvalOptions(
        workdir / "checkpoints", workdir=tmp_path, split="val", progress=False
    )
    summary = evaluate.evaluate(command_line_config(), options, source=source, info=taxonomy.STREET)

    # Independently: the saved config's model and normalisation, model.apply, numpy argmax.
    model = trainer.create_model(checkpoint_config(), NUM_CLASSES, branch="all")
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    apply = jax.jit(model.apply)
    expected = {b: np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64) for b in summary["branches"]}
    classes_predicted = set()
    for ex in source:
        x = ex["image"].astype(np.float32)[None]  # mean 0, std 1, RGB
        logits = jax.device_get(apply(variables, x))
        label = ex["label"][:, :, 0]
        valid = label != 255
        for branch, value in logits.items():
            prediction = np.asarray(value[0]).argmax(-1)
            np.add.at(expected[branch], (label[valid], prediction[valid]), 1)
            classes_predicted |= set(prediction.ravel().tolist())
    metrics = json.loads((tmp_path / "eval" / "val" / "metrics.json").read_text())
    for branch, m in metrics["branches"].items():
        confusion = expected[branch]
        assert m["confusion"] == confusion.tolist()
        tp = np.diag(confusion)
        union = confusion.sum(0) + confusion.sum(1) - tp
        iou = tp[union > 0] / union[union > 0]
        assert m["miou"] == pytest.approx(iou.mean(), rel=1e-9)
        assert m["pixel_accuracy"] == pytest.approx(tp.sum() / confusion.sum(), rel=1e-9)
        assert m["num_pixels"] == 2 * 28 * 65
    assert metrics["from_checkpoint"]["model.width"] == 0.25
    assert len(classes_predicted) > 1  # not a degenerate one-class network


# --- The command line ---------------------------------------------------------------------------


def test_an_unknown_split_is_refused_before_reading_or_preparing(tiny_checkpoint, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("read or prepared before the split was checked")

    monkeypatch.setattr(saved_run.spec, "restore_target", fail)
    monkeypatch.setattr(evaluate.datasets, "config_source", fail)
    options = evaluate.EvalOptions(tiny_checkpoint[0], split="nonexistent", progress=False)
    with pytest.raises(errors.UserError, match=r"--split=nonexistent: dataset 'street' has no"):
        evaluate.evaluate(None, options)


def test_a_custom_split_is_a_folder_of_images(tmp_path):
    config = checkpoint_config(**{"dataset.name": "custom", "dataset.manual_dir": str(tmp_path)})
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
    evaluate.check_split_name(config, "val")
    evaluate.check_split_name(config, "trainval")
    evaluate.check_split_name(config, "train[-0006R0]")
    with pytest.raises(errors.UserError, match="has no split 'test'; one of train, val"):
        evaluate.check_split_name(config, "test")


def test_results_with_other_settings_get_a_folder_naming_the_difference():
    change = saved_run.Change
    options = evaluate.EvalOptions(scales=(0.75, 1.0))
    moved = [change("dataset.manual_dir", "/a", "/b"), change("dataset.data_dir", "x", "y")]
    jax_backend, int8 = onnx_backend.JAX, onnx_backend.Backend("onnxruntime", "int8")
    assert evaluate._difference(moved, evaluate.EvalOptions(), jax_backend) == ""  # the run's own
    other = [
        change("dataset.builder_kwargs.num_val", 4, 40),
        change("input.eval_size", None, (65, 129)),
    ]
    assert (
        evaluate._difference(other, options, jax_backend)
        == "_num_val-40_eval_size-65x129_scales-0.75-1"
    )
    assert evaluate._difference([], evaluate.EvalOptions(), int8) == "_onnxruntime-int8"
    many = [change(f"dataset.builder_kwargs.k{i}", 0, i) for i in range(30)]
    assert len(evaluate._difference(many, options, jax_backend)) <= 61


def run_files(workdir: pathlib.Path) -> dict[pathlib.Path, bytes]:
    return {p: p.read_bytes() for p in sorted(workdir.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_evaluate_cli_on_the_street_dataset(tmp_path):
    """A run with its own dataset settings: evaluated with no --config; a changed dataset is
    shown, recorded and written beside the run's files, which stay byte-identical."""
    workdir = tmp_path / "run"
    run_config = checkpoint_config(**{
        "dataset.data_dir": str(tmp_path / "tfds"),
        "dataset.builder_kwargs.num_train": 1, "dataset.builder_kwargs.num_val": 2,
        "dataset.builder_kwargs.height": 33, "dataset.builder_kwargs.width": 65,
    })  # fmt: skip
    write_checkpoint(workdir, run_config, step=3)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}

    def evaluate(*args):
        return scripts.run("evaluate.py", f"--workdir={workdir}", *args, env=env)

    done = evaluate("--save_predictions=1")
    assert done.returncode == 0, done.stdout + done.stderr
    # No library noise: no INFO lines, no orbax warnings about read-only folders or metadata.
    assert not re.search(r"^I\d{4} ", done.stderr, re.M), done.stderr
    assert "Metadata file does not exist" not in done.stderr and "read only" not in done.stderr
    assert "mIoU" in done.stdout and "sub124" in done.stdout and "run=" not in done.stdout
    out = workdir / "eval" / "val"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 3 and metrics["flip"] is False and metrics["num_images"] == 2
    assert metrics["backend"] == "jax"  # evaluate.py's default: every branch
    assert metrics["dataset"]["builder_kwargs"]["num_val"] == 2
    for name in ("region_accuracy.json", "region_accuracy.png", "per_class_iou.png"):
        assert (out / name).is_file()
    assert len(list((out / "predictions").rglob("*_labels.png"))) == 1

    before = run_files(workdir)
    changed = evaluate("--config.dataset.builder_kwargs.num_val=3", "--flip")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert "dataset.builder_kwargs.num_val: run=2, now=3" in changed.stdout
    beside = workdir / "eval" / "val_num_val-3_flip"
    metrics = json.loads((beside / "metrics.json").read_text())
    assert metrics["num_images"] == 3 and metrics["protocol"]["flip"] is True
    assert metrics["changed_from_run"] == {"dataset.builder_kwargs.num_val": {"run": 2, "now": 3}}
    after = {p: b for p, b in run_files(workdir).items() if beside not in p.parents}
    assert after == before  # the run's own files, byte for byte

    refused = evaluate("--config.model.width=0.5")
    assert "model.width" in scripts.one_error_line(refused)
    unknown = evaluate("--split=nonexistent")
    assert "--split=nonexistent" in scripts.one_error_line(unknown)
    int8_on_jax = evaluate("--backend=jax", "--dtype=int8")
    assert "--backend=onnxruntime" in scripts.one_error_line(int8_on_jax)

    missing = scripts.run("evaluate.py", f"--workdir={tmp_path / 'none'}", env=env)
    assert missing.returncode == 2 and "no checkpoints at" in missing.stderr


@pytest.mark.slow
def test_a_custom_dataset_run_needs_no_config_to_evaluate_and_predict(tmp_path):
    from tests.checkpoint_fakes import random_state
    from tests.data_fakes import png, random_image, write

    data = tmp_path / "my_data"
    (data / "classes.txt").parent.mkdir(parents=True)
    (data / "classes.txt").write_text("ground\nwall\nsky\n")
    rng = np.random.default_rng(0)
    for split, stems in (("train", ["a"]), ("val", ["b", "c"])):
        for i, stem in enumerate(stems):
            write(data / "images" / split / f"{stem}.png", png(random_image(33, 65, i)))
            label = rng.integers(0, 3, (33, 65)).astype(np.uint8)
            write(data / "labels" / split / f"{stem}.png", png(label))
    from configs import custom

    config = default.override(custom.get_config(), {
        "dataset.manual_dir": str(data), "dataset.data_dir": str(tmp_path / "tfds"),
        "dataset.builder_kwargs.dataset_name": "mine", "model.width": 0.25,
    })  # fmt: skip
    saved = json.loads(config.to_json())
    palette = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90]], np.uint8)
    info = taxonomy.custom_info("custom", ["ground", "wall", "sky"], palette)
    saved[spec.RECORD] = spec.classes_record(info)
    workdir = tmp_path / "run"
    checkpoints.write(workdir, 5, random_state(config, 3), saved)

    done = scripts.run("evaluate.py", f"--workdir={workdir}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "wall" in done.stdout and "run=" not in done.stdout
    metrics = json.loads((workdir / "eval" / "val" / "metrics.json").read_text())
    assert metrics["num_images"] == 2 and metrics["dataset"]["name"] == "custom"
    assert list(metrics["branches"]["sub124"]["per_class"]) == ["ground", "wall", "sky"]

    image = data / "images" / "val" / "b.png"
    done = scripts.run("predict.py", f"--checkpoint={workdir}", f"--input={image}",
                       f"--output={tmp_path / 'out'}")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    colours = np.asarray(Image.open(tmp_path / "out" / "b_color.png").convert("RGB"))
    assert {tuple(c) for c in colours.reshape(-1, 3)} <= {tuple(c) for c in palette}


@pytest.mark.slow
def test_a_camvid_run_is_evaluated_with_no_config(tmp_path, shared_data):
    from configs import camvid
    from tests.checkpoint_fakes import random_state

    config = default.override(camvid.get_config("cpu"), {
        "dataset.manual_dir": str(shared_data / "camvid"),
        "dataset.data_dir": str(tmp_path / "tfds"), "model.width": 0.25,
    })  # fmt: skip
    saved = json.loads(config.to_json())
    saved[spec.RECORD] = spec.classes_record(taxonomy.CAMVID)
    workdir = tmp_path / "run"
    checkpoints.write(workdir, 9, random_state(config, taxonomy.CAMVID.num_classes), saved)

    split = "val[0016E5_0795]"  # a few frames of the run's own eval split
    done = scripts.run("evaluate.py", f"--workdir={workdir}", f"--split={split}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bicyclist" in done.stdout and "run=" not in done.stdout
    metrics = json.loads((workdir / "eval" / split / "metrics.json").read_text())
    assert metrics["dataset"]["name"] == "camvid" and 0 < metrics["num_images"] < 10
