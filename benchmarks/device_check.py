"""One prepared check of ICNet on a GPU: inference (paper Table 2), training, the quickstart.

On the GPU machine (no network; the wheels it lacks come from `prepare_device_wheels.sh`):

    bash benchmarks/prepare_device_wheels.sh                    # here, beforehand: .whl/
    python benchmarks/device_check.py --wheels .whl --json $OUT/device_check.json

On a CPU at tiny size (the test, CI): `python benchmarks/device_check.py --tiny --json F`.

Parts, in this order, each a fresh subprocess (the device's peak memory counter cannot be reset)
with a time box cut from one overall `--budget` (default 470 s), the JSON rewritten after each so
that a run cut short still returns what it measured:

- `inference_float32`, `inference_bfloat16`: `benchmark.py` on ICNet sub4/sub24/sub124 and
  PSPNet50 at half width, 1024x2048, batch 1, one process per dtype, BatchNorm folded, warmed up,
  median of >= 50 runs, peak memory measured by the device's allocator (`peak_bytes_in_use`, a
  fresh process per model), speed and memory ratios against the half PSPNet50 of the same run;
  then `inference_batch4` (sub124 and the base at batch 4) if time is left at the end.
- `training_float32`, `training_bfloat16`: the Cityscapes recipe's step (batch 16, 1025x1025
  crops, cascade loss, synchronised BatchNorm under pmap) on one device: images/s and peak memory
  with (a) batches already on the device and (b) batches from the real grain pipeline with worker
  processes over generated 1024x2048 PNG images (the street dataset, read from array_record like
  Cityscapes), plus (c) the pipeline alone; `bottleneck` says which of step and pipeline limits (b).
- `quickstart`: `train.py --config=configs/quickstart.py` end to end (its dataset generated in the
  background while the inference part runs), wall time and mIoU per branch.

Writes one JSON (`--json`; default `$OUT/device_check.json` when OUT is set) and prints one table.
`--parts` runs a subset, e.g. `--parts quickstart,inference_batch4` in a second call when the
first one's budget ran out before them.
Persistent XLA compilation cache in a temporary folder: the memory probes of `benchmark.py`
reuse the executables their timing process compiled.

This file runs the parts; `device_setup.py` installs the wheels, `device_parts.py` holds the
sizes and the parts run in children (`--part`), `device_report.py` the targets and the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from device_parts import FULL, REPO, TINY, part_prepare, part_train
from device_report import check_targets, format_table
from device_setup import ensure_packages, gpu_name

ICNET_BRANCHES = ("icnet_sub4", "icnet_sub24", "icnet_sub124")
BASE = "pspnet50_half"


# --- Orchestration (no JAX in this process: the children own the device) -----------------------


class Runner:
    """Runs the parts as subprocesses within one overall deadline and keeps the JSON current."""

    def __init__(self, args: argparse.Namespace, document: dict[str, Any]):
        self.args, self.document = args, document
        self.deadline = time.monotonic() + args.budget

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        if self.args.json:
            path = pathlib.Path(self.args.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.document, indent=1))

    def run(self, name: str, argv: list[str], box_s: float, result_file: pathlib.Path | None):
        """Runs `python argv` for at most `box_s` seconds (and what is left of the budget);
        records `{seconds, status, ...result JSON}` under `parts[name]`."""
        # Tiny sizes on a shared CPU: the parts' boxes are sized for the GPU, only the budget holds.
        timeout = min(self.args.budget if self.args.tiny else box_s, self.left() - 5)
        entry: dict[str, Any] = {"status": "skipped", "seconds": 0.0}
        if timeout < 10:
            entry["reason"] = "no time left in the budget"
        else:
            print(f"[device_check] {name}: up to {timeout:.0f} s", flush=True)
            start = time.perf_counter()
            # A session of its own: on a timeout its grain workers are ended with it.
            proc = subprocess.Popen(
                [sys.executable, *argv],
                cwd=REPO,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                log, _ = proc.communicate(timeout=timeout)
                entry["status"] = "ok" if proc.returncode == 0 else f"failed (rc {proc.returncode})"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                log, _ = proc.communicate()
                entry["status"] = f"timed out after {timeout:.0f} s"
            entry["seconds"] = time.perf_counter() - start
            if entry["status"] != "ok":
                entry["log_tail"] = log[-3000:]
                print(log[-3000:], flush=True)
            if result_file is not None and result_file.exists():
                entry.update(json.loads(result_file.read_text()))
        self.document["parts"][name] = entry
        self.save()
        print(
            f"[device_check] {name}: {entry['status']} in {entry['seconds']:.0f} s",
            flush=True,
        )
        return entry


ME = str(pathlib.Path(__file__).resolve())


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    sizes = TINY if args.tiny else FULL
    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="device_check_"))
    work.mkdir(parents=True, exist_ok=True)
    packages = ensure_packages(args.wheels, work / "site")
    _set_environment(work)
    document: dict[str, Any] = {
        "tiny": args.tiny,
        "host": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "gpu": gpu_name(),
        },
        "packages": packages,
        "sizes": sizes,
        "budget_s": args.budget,
        "parts": {},
    }
    runner = Runner(args, document)
    runner.save()
    data_dir = work / "tfds"
    workers = args.workers or max(1, min(14, (os.cpu_count() or 2) - 2))
    document["pipeline_workers"] = workers
    qs_overrides = [*sizes["quickstart"], f"dataset.data_dir={data_dir}"]

    # The datasets are drawn on the CPU while the GPU runs the inference part.
    prepare = _start_prepare(sizes, data_dir, qs_overrides)
    prepare_start = time.perf_counter()
    # One process per dtype: benchmark.py writes its JSON at the end, so a part cut short by its
    # time box loses only its own dtype.
    for dtype in ("float32", "bfloat16"):
        if "inference" in args.parts:
            out = work / f"inference_{dtype}.json"
            argv = _bench_argv(sizes, 1, [*ICNET_BRANCHES, BASE], dtype, out)
            runner.run(f"inference_{dtype}", argv, 110, out)
    _wait_for_prepare(prepare, prepare_start, runner)

    for dtype in ("float32", "bfloat16") if "training" in args.parts else ():
        result = work / f"training_{dtype}.json"
        argv = [ME, "--part", "train", "--dtype", dtype, "--data-dir", str(data_dir)]
        argv += ["--workers", str(workers), "--result", str(result)]
        runner.run(f"training_{dtype}", [*argv, *(["--tiny"] if args.tiny else [])], 110, result)

    _quickstart(runner, work / "quickstart", qs_overrides)
    if "inference_batch4" in args.parts:
        out = work / "inference_batch4.json"
        argv = _bench_argv(sizes, 4, ["icnet_sub124", BASE], "both", out)
        runner.run("inference_batch4", argv, 150, out)
    document["targets"] = check_targets(document)
    runner.save()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return document


def _set_environment(work: pathlib.Path) -> None:
    """What the children inherit: no preallocation, a shared persistent compilation cache."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(work / "xla_cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")


def _start_prepare(
    sizes: dict[str, Any], data_dir: pathlib.Path, qs_overrides: list[str]
) -> subprocess.Popen:
    """Starts drawing the datasets (`--part prepare`) on the CPU, in the background."""
    argv = [sys.executable, ME, "--part", "prepare", "--data-dir", str(data_dir)]
    argv += ["--pipeline-images", str(sizes["pipeline_images"])]
    argv += ["--height", str(sizes["height"]), "--width", str(sizes["width"])]
    return subprocess.Popen(
        [*argv, *[f"--override={o}" for o in qs_overrides]],
        cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_prepare(prepare: subprocess.Popen, start: float, runner: Runner) -> None:
    """Waits for the datasets (until a minute before the budget ends) and records how it went."""
    document = runner.document
    try:
        out, _ = prepare.communicate(timeout=max(1.0, runner.left() - 60))
        document["prepare"] = {
            "status": "ok" if prepare.returncode == 0 else f"failed (rc {prepare.returncode})",
            "seconds": time.perf_counter() - start,
        }
        if prepare.returncode != 0:
            document["prepare"]["log_tail"] = out[-3000:]
            print(out[-3000:], flush=True)
    except subprocess.TimeoutExpired:
        prepare.kill()
        document["prepare"] = {"status": "timed out"}
    runner.save()


def _bench_argv(
    sizes: dict[str, Any], batch: int, models: list[str], dtype: str, out: pathlib.Path
) -> list[str]:
    """`benchmark.py`'s command line for `models` at the check's sizes."""
    return [
        "benchmark.py",
        f"--models={','.join(models)}",
        f"--dtype={dtype}",
        f"--batch={batch}",
        f"--height={sizes['height']}",
        f"--width={sizes['width']}",
        f"--width_scale={sizes['width_scale']}",
        f"--runs={sizes['runs']}",
        f"--min_runs={sizes['min_runs']}",
        f"--warmup={sizes['warmup']}",
        f"--time_budget={sizes['time_budget']}",
        "--noprogress",
        f"--json={out}",
    ]


def _quickstart(runner: Runner, workdir: pathlib.Path, qs_overrides: list[str]) -> None:
    """`train.py` on the quickstart config (if asked for), then its final metrics."""
    document = runner.document
    entry: dict[str, Any] = {}
    if "quickstart" in runner.args.parts:
        argv = ["train.py", "--config=configs/quickstart.py", f"--workdir={workdir}"]
        entry = runner.run(
            "quickstart", [*argv, *[f"--config.{o}" for o in qs_overrides]], 150, None
        )
    metrics = workdir / "eval" / "val" / "metrics.json"
    if metrics.exists():
        summary = json.loads(metrics.read_text())
        entry["step"] = summary["step"]
        entry["miou"] = {b: m["miou"] for b, m in summary["branches"].items()}
        entry["pixel_accuracy"] = {
            b: m.get("pixel_accuracy") for b, m in summary["branches"].items()
        }
        entry["dataset_prepare_s"] = document.get("prepare", {}).get("seconds")
    runner.save()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """argparse, where the other benchmarks take absl flags through `icnet_jax.cli`: this parses
    before `ensure_packages` installs what `icnet_jax.cli` imports (ml_collections) on a bare
    device machine."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    out = os.environ.get("OUT")
    parser.add_argument(
        "--json",
        default=str(pathlib.Path(out) / "device_check.json") if out else "device_check.json",
        help="the results (default: $OUT/device_check.json, or ./device_check.json)",
    )
    parser.add_argument(
        "--wheels",
        type=pathlib.Path,
        default=REPO / ".whl",
        help="wheels to install when grain, tfds, ... are missing",
    )
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (CPU test)")
    parser.add_argument("--budget", type=float, default=470.0, help="seconds for the whole check")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="grain worker processes (default: CPUs - 2, at most 14)",
    )
    parser.add_argument(
        "--parts",
        default="inference,training,quickstart,inference_batch4",
        help="comma-separated parts to run (default: all, in this order)",
    )
    parser.add_argument("--workdir", help="scratch folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    # Children.
    parser.add_argument("--part", choices=["prepare", "train"], help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--pipeline-images", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, default=1024, help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, default=2048, help=argparse.SUPPRESS)
    parser.add_argument("--override", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.parts = args.parts.split(",")
    unknown = set(args.parts) - {
        "inference",
        "training",
        "quickstart",
        "inference_batch4",
    }
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.part == "prepare":
        part_prepare(args)
        return
    if args.part == "train":
        part_train(args)
        return
    document = orchestrate(args)
    print()
    print(format_table(document))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
