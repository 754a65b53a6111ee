"""What int8 costs in accuracy: mIoU on the CamVid val split of one checkpoint run by JAX, by
onnxruntime in float32 (its ONNX export) and by onnxruntime in int8 (static QDQ quantisation,
per channel, calibrated on `--calibration_images` CamVid training images), with each backend's
pixel agreement with JAX and its median seconds per frame.

    PYTHONPATH=. python benchmarks/int8_camvid.py --checkpoint=runs/camvid_cpu \
        --manual_dir=../shared/data/camvid [--data_dir=data/tfds] [--calibration_images=32]

Needs the extras of requirements-export.txt. Frames are segmented whole (360x480, the SegNet
layout), as `predict.py` does, through the same `Segmenter` with `--backend` and `--dtype`; the
ONNX files are cached under `<checkpoint workdir>/export/`.
"""

import time

import numpy as np

from configs import camvid
from icnet_jax import cli
from icnet_jax.cli import flags
from icnet_jax.data import augment, datasets
from icnet_jax.evaluation.metrics import segmentation_metrics
from icnet_jax.inference import saved_run
from icnet_jax.inference.onnx_backend import Backend
from icnet_jax.inference.predict import Segmenter


def confusion(labels: np.ndarray, predictions: np.ndarray, n: int) -> np.ndarray:
    """int64 `[n, n]` counts of (label, prediction), labels outside `[0, n)` left out."""
    valid = labels < n
    index = labels[valid].astype(np.int64) * n + predictions[valid]
    return np.bincount(index, minlength=n * n).reshape(n, n)


def run_backend(loaded, backend: Backend, source, limit: int) -> dict:
    """Predictions, confusion matrix and seconds per frame of one backend over the split."""
    segmenter = Segmenter(loaded, backend=backend)
    n = loaded.num_classes
    total = np.zeros((n, n), np.int64)
    predictions, seconds = [], []
    for i in range(limit):
        image, label = augment.validate_example(source[i])
        start = time.perf_counter()
        prediction = segmenter(image)
        seconds.append(time.perf_counter() - start)
        predictions.append(prediction)
        total += confusion(label.reshape(prediction.shape), prediction, n)
    # The first frame exports, quantises or compiles: left out of the time.
    return {"predictions": predictions, "confusion": total, "seconds": seconds[1:] or seconds}


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS

    config = camvid.get_config()
    config.dataset.data_dir = args.data_dir
    config.dataset.manual_dir = args.manual_dir
    loaded = saved_run.load_checkpoint(args.checkpoint, config)
    source, info = datasets.config_source(loaded.config, "val")
    limit = min(args.limit or len(source), len(source))
    backends = {
        "jax float32": Backend("jax"),
        "onnxruntime float32": Backend("onnxruntime"),
        "onnxruntime int8": Backend("onnxruntime", "int8", args.calibration_images),
    }
    runs = {name: run_backend(loaded, b, source, limit) for name, b in backends.items()}
    reference = runs["jax float32"]["predictions"]
    print(
        f"checkpoint {loaded.path} (step {loaded.step}), CamVid val: {limit} frames, "
        f"int8 calibrated on {args.calibration_images} training images"
    )
    print(f"{'backend':22s} {'mIoU %':>7s} {'pix acc %':>9s} {'= JAX %':>8s} {'s/frame':>8s}")
    miou = {}
    for name, run in runs.items():
        metrics = segmentation_metrics(run["confusion"], info.class_names)
        miou[name] = 100 * metrics["miou"]
        agree = np.mean([np.mean(p == r) for p, r in zip(run["predictions"], reference)])
        print(
            f"{name:22s} {miou[name]:7.2f} {100 * metrics['pixel_accuracy']:9.2f} "
            f"{100 * agree:8.3f} {np.median(run['seconds']):8.3f}"
        )
    print(
        f"mIoU change: int8 - onnxruntime float32 = "
        f"{miou['onnxruntime int8'] - miou['onnxruntime float32']:+.2f} points; "
        f"onnxruntime float32 - JAX = {miou['onnxruntime float32'] - miou['jax float32']:+.2f}"
    )


if __name__ == "__main__":
    flags.DEFINE_string("checkpoint", None, "The checkpoint.", required=True)
    flags.DEFINE_string("manual_dir", None, "CamVid in the SegNet layout.", required=True)
    flags.DEFINE_string("data_dir", "data/tfds", "Where it is prepared.")
    flags.DEFINE_integer("calibration_images", 32, "Training images calibrating int8.")
    flags.DEFINE_integer("limit", 0, "Val frames (0: all).")
    cli.run(main)
