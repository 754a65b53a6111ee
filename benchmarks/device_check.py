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
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
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

REPO = pathlib.Path(__file__).resolve().parents[1]
# Modules the GPU image lacks (see prepare_device_wheels.sh).
NEEDED = (
    "grain",
    "array_record",
    "tensorflow_datasets",
    "ml_collections",
    "tensorboardX",
    "importlib_resources",
)
ICNET_BRANCHES = ("icnet_sub4", "icnet_sub24", "icnet_sub124")
BASE = "pspnet50_half"

# Sizes of the real check and of the CPU test.
FULL = {
    "height": 1024,
    "width": 2048,
    "width_scale": 1.0,
    "runs": 100,
    "min_runs": 50,
    "warmup": 3,
    "time_budget": 5.0,
    "train_batch": 16,
    "train_crop": 1025,
    "model_width": 0.5,
    "preloaded_steps": 20,
    "pipeline_steps": 10,
    "pipeline_images": 32,
    "quickstart": [],
}
TINY = {
    "height": 64,
    "width": 128,
    "width_scale": 0.125,
    "runs": 3,
    "min_runs": 3,
    "warmup": 1,
    "time_budget": 0.0,
    "train_batch": 2,
    "train_crop": 65,
    "model_width": 0.125,
    "preloaded_steps": 2,
    "pipeline_steps": 2,
    "pipeline_images": 4,
    "quickstart": [
        "num_steps=2",
        "batch_size=4",  # splits over 1, 2 or 4 devices (the tests simulate 4)
        "input.crop_size=(65, 129)",
        "dataset.builder_kwargs.num_train=4",
        "dataset.builder_kwargs.num_val=2",
        "dataset.builder_kwargs.height=64",
        "dataset.builder_kwargs.width=128",
        "model.width=0.125",
        "checkpoint_every=2",
        "log_every=1",
    ],
}


# --- Orchestration (no JAX in this process: the children own the device) -----------------------


def ensure_packages(wheels: pathlib.Path | None, site: pathlib.Path) -> dict[str, Any]:
    """Installs the wheels of `wheels` into `site` when a module of NEEDED is missing, and puts
    `site` on sys.path and PYTHONPATH (children inherit it)."""
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    report: dict[str, Any] = {"missing": missing, "installed": [], "seconds": 0.0}
    if not missing:
        return report
    files = sorted(wheels.glob("*.whl")) if wheels and wheels.is_dir() else []
    if not files:
        raise SystemExit(
            f"error: modules {missing} are missing and no wheels are in {wheels}: run "
            "benchmarks/prepare_device_wheels.sh where PyPI is reachable and pass --wheels .whl"
        )
    start = time.perf_counter()

    def install(wheel_files: list[pathlib.Path]) -> None:
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
        pip += ["--no-compile", "--no-cache-dir", "--upgrade", "--target", str(site)]
        subprocess.run([*pip, *map(str, wheel_files)], check=True)

    # The image's own protobuf is kept unless tfds' generated code cannot run on it.
    protobuf = [f for f in files if f.name.startswith("protobuf-")]
    install([f for f in files if f not in protobuf])
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(site), os.environ.get("PYTHONPATH")])
    )
    probe = "import tensorflow_datasets, grain, array_record, ml_collections, tensorboardX"
    check = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if check.returncode != 0 and protobuf:
        install(protobuf)
        check = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        report["protobuf_replaced"] = True
    if check.returncode != 0:  # the parts will fail; say why once, here
        report["import_error"] = check.stderr[-2000:]
    used = files if report.get("protobuf_replaced") else [f for f in files if f not in protobuf]
    report.update(installed=[f.name for f in used], seconds=time.perf_counter() - start)
    return report


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


def parse_override(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    proc = subprocess.run(
        [
            "nvidia-smi",
            "--query-gpu=name,memory.total,driver_version",
            "--format=csv,noheader",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or None


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    sizes = TINY if args.tiny else FULL
    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="device_check_"))
    work.mkdir(parents=True, exist_ok=True)
    packages = ensure_packages(args.wheels, work / "site")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(work / "xla_cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
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
    me = str(pathlib.Path(__file__).resolve())
    data_dir = work / "tfds"
    workers = args.workers or max(1, min(14, (os.cpu_count() or 2) - 2))
    document["pipeline_workers"] = workers
    qs_overrides = [*sizes["quickstart"], f"dataset.data_dir={data_dir}"]

    # The datasets are drawn on the CPU while the GPU runs the inference part.
    cpu_env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    prepare = subprocess.Popen(
        [
            sys.executable,
            me,
            "--part",
            "prepare",
            "--data-dir",
            str(data_dir),
            "--pipeline-images",
            str(sizes["pipeline_images"]),
            "--height",
            str(sizes["height"]),
            "--width",
            str(sizes["width"]),
            *[f"--override={o}" for o in qs_overrides],
        ],
        cwd=REPO,
        env=cpu_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    prepare_start = time.perf_counter()

    def bench_argv(batch: int, models: list[str], dtype: str, out: pathlib.Path) -> list[str]:
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

    # One process per dtype: benchmark.py writes its JSON at the end, so a part cut short by its
    # time box loses only its own dtype.
    for dtype in ("float32", "bfloat16"):
        if "inference" in args.parts:
            out = work / f"inference_{dtype}.json"
            runner.run(
                f"inference_{dtype}",
                bench_argv(1, [*ICNET_BRANCHES, BASE], dtype, out),
                110,
                out,
            )

    try:
        out, _ = prepare.communicate(timeout=max(1.0, runner.left() - 60))
        document["prepare"] = {
            "status": "ok" if prepare.returncode == 0 else f"failed (rc {prepare.returncode})",
            "seconds": time.perf_counter() - prepare_start,
        }
        if prepare.returncode != 0:
            document["prepare"]["log_tail"] = out[-3000:]
            print(out[-3000:], flush=True)
    except subprocess.TimeoutExpired:
        prepare.kill()
        document["prepare"] = {"status": "timed out"}
    runner.save()

    for dtype in ("float32", "bfloat16") if "training" in args.parts else ():
        result = work / f"training_{dtype}.json"
        runner.run(
            f"training_{dtype}",
            [
                me,
                "--part",
                "train",
                "--dtype",
                dtype,
                "--data-dir",
                str(data_dir),
                "--workers",
                str(workers),
                "--result",
                str(result),
                *(["--tiny"] if args.tiny else []),
            ],
            110,
            result,
        )

    qs_workdir = work / "quickstart"
    entry = {}
    if "quickstart" in args.parts:
        entry = runner.run(
            "quickstart",
            [
                "train.py",
                "--config=configs/quickstart.py",
                f"--workdir={qs_workdir}",
                *[f"--config.{o}" for o in qs_overrides],
            ],
            150,
            None,
        )
    metrics = qs_workdir / "eval" / "val" / "metrics.json"
    if metrics.exists():
        summary = json.loads(metrics.read_text())
        entry["step"] = summary["step"]
        entry["miou"] = {b: m["miou"] for b, m in summary["branches"].items()}
        entry["pixel_accuracy"] = {
            b: m.get("pixel_accuracy") for b, m in summary["branches"].items()
        }
        entry["dataset_prepare_s"] = document.get("prepare", {}).get("seconds")
    runner.save()

    if "inference_batch4" in args.parts:
        out = work / "inference_batch4.json"
        runner.run(
            "inference_batch4",
            bench_argv(4, ["icnet_sub124", BASE], "both", out),
            150,
            out,
        )
    document["targets"] = check_targets(document)
    runner.save()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return document


# --- Summary --------------------------------------------------------------------------------------


def _results(document: dict[str, Any], *parts: str) -> list[dict[str, Any]]:
    return [r for part in parts for r in document["parts"].get(part, {}).get("results", [])]


BATCH1 = ("inference_float32", "inference_bfloat16")


def check_targets(document: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets (not tests): ICNet sub124 images/s, ratios against the base, and the
    training bottleneck; None where the part did not run."""
    targets: dict[str, Any] = {}
    for r in _results(document, *BATCH1):
        if r["model"] == "icnet_sub124":
            floor = 500 if r["dtype"] == "bfloat16" else 200
            targets[f"sub124_fps_{r['dtype']}"] = {"value": r["fps"], "target": floor}
            targets[f"speedup_{r['dtype']}"] = {"value": r["speedup"], "target": 5.2}
            targets[f"memory_ratio_{r['dtype']}"] = {
                "value": r["memory_ratio"],
                "target": 5.8,
            }
    for dtype in ("float32", "bfloat16"):
        part = document["parts"].get(f"training_{dtype}", {})
        if "bottleneck" in part:
            targets[f"training_bottleneck_{dtype}"] = {
                "value": part["bottleneck"],
                "target": "step",
            }
    for t in targets.values():
        v, goal = t["value"], t["target"]
        t["met"] = None if v is None else (v == goal if isinstance(goal, str) else v >= goal)
    return targets


def _cell(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def format_table(document: dict[str, Any]) -> str:
    """One plain-text table of every figure of the document."""
    rows = [("part", "item", "float32", "bfloat16")]
    for batch, parts in ((1, BATCH1), (4, ("inference_batch4",))):
        results = _results(document, *parts)
        for model in dict.fromkeys(r["model"] for r in results):
            by = {r["dtype"]: r for r in results if r["model"] == model}

            def get(dtype, fn, by=by):
                return fn(by[dtype]) if dtype in by else None

            for item, fn, spec in (
                ("ms median", lambda r: r["time_ms"]["median"], ".2f"),
                ("images/s", lambda r: r["fps"], ".1f"),
                ("runs", lambda r: r["time_ms"]["runs"], "d"),
                (
                    "peak MiB (" + (results[0]["memory_source"]) + ")",
                    lambda r: r["memory_bytes"] and r["memory_bytes"] / 2**20,
                    ".0f",
                ),
                ("speedup vs base", lambda r: r["speedup"], ".2f"),
                ("memory saving vs base", lambda r: r["memory_ratio"], ".2f"),
            ):
                rows.append(
                    (
                        f"{model} b{batch}",
                        item,
                        _cell(get("float32", fn), spec),
                        _cell(get("bfloat16", fn), spec),
                    )
                )
    train = {d: document["parts"].get(f"training_{d}", {}) for d in ("float32", "bfloat16")}
    for item, key, spec in (
        ("images/s, batches on device", "preloaded_images_per_s", ".1f"),
        ("images/s, grain pipeline", "pipeline_fed_images_per_s", ".1f"),
        ("images/s, pipeline alone", "pipeline_alone_images_per_s", ".1f"),
        ("peak MiB", "peak_mib", ".0f"),
        ("bottleneck", "bottleneck", "s"),
    ):
        rows.append(
            (
                "training b16" if not document["tiny"] else "training (tiny)",
                item,
                _cell(train["float32"].get(key), spec),
                _cell(train["bfloat16"].get(key), spec),
            )
        )
    qs = document["parts"].get("quickstart", {})
    miou = qs.get("miou") or {}
    rows.append(("quickstart", "wall s (train.py)", _cell(qs.get("seconds"), ".0f"), ""))
    for branch in ("sub4", "sub24", "sub124"):
        value = miou.get(branch)
        rows.append(("quickstart", f"mIoU {branch} %", _cell(value and 100 * value, ".2f"), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    status = ", ".join(f"{k} {v['status']}" for k, v in document["parts"].items())
    parts = document["parts"]
    inference = next(
        (parts[p] for p in (*BATCH1, "inference_batch4") if "device" in parts.get(p, {})),
        {},
    )
    head = [
        f"device: {inference.get('device', {}).get('device_kind', '?')} "
        f"({document['host']['gpu'] or 'no nvidia-smi'}), jax {inference.get('jax_version', '?')}",
        f"parts: {status}",
    ]
    tail = [
        f"target {k}: {_cell(v['value'], '.2f' if not isinstance(v['value'], str) else 's')} "
        f"(target {v['target']}) {'met' if v['met'] else 'NOT met' if v['met'] is False else '-'}"
        for k, v in document.get("targets", {}).items()
    ]
    return "\n".join([*head, "", *lines, "", *tail])


# --- Parts run in children ------------------------------------------------------------------------


def part_prepare(args: argparse.Namespace) -> None:
    """Draws the pipeline's street dataset at the inference size and the quickstart's dataset."""
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    import pipeline_throughput

    from configs import quickstart
    from icnet_jax import config as default
    from icnet_jax.data import datasets

    pipeline_throughput.street_source(
        args.pipeline_images, args.data_dir, size=(args.height, args.width)
    )
    config = default.override(quickstart.get_config(), dict(map(parse_override, args.override)))
    for split in (config.dataset.train_split, config.dataset.eval_split):
        datasets.config_source(config, split)


def part_train(args: argparse.Namespace) -> dict[str, Any]:
    """Training speed and peak memory of the Cityscapes recipe on one device (see module doc)."""
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    import jax
    import numpy as np
    import pipeline_throughput

    from configs import cityscapes
    from icnet_jax import config as default
    from icnet_jax.benchmarking import profiling
    from icnet_jax.data import pipeline
    from icnet_jax.data.input_spec import InputSpec
    from icnet_jax.train import loop as train_lib

    sizes = TINY if args.tiny else FULL
    batch, crop = sizes["train_batch"], sizes["train_crop"]
    config = default.override(
        cityscapes.get_config(),
        {
            "model.dtype": args.dtype,
            "model.width": sizes["model_width"],
            "batch_size": batch,
            "input.crop_size": (crop, crop),
        },
    )
    num_classes = 19
    device = jax.local_devices()[0]
    result: dict[str, Any] = {
        "dtype": args.dtype,
        "batch": batch,
        "crop": crop,
        "device": str(device),
    }

    def save() -> None:
        pathlib.Path(args.result).write_text(json.dumps(result))

    model = train_lib.create_model(config, num_classes, axis_name=train_lib.AXIS)
    state = train_lib.create_train_state(
        jax.random.PRNGKey(0), model, train_lib.create_optimizer(config), (crop, crop)
    )
    step = train_lib.make_train_step(config, devices=[device])
    state = train_lib.replicate(state, [device])
    rng = np.random.default_rng(0)
    preloaded = [
        jax.device_put(
            train_lib.shard(
                {
                    "image": rng.normal(0, 50, (batch, crop, crop, 3)).astype(np.float32),
                    "label": rng.integers(0, num_classes, (batch, crop, crop)).astype(np.int32),
                },
                1,
            ),
            device,
        )
        for _ in range(2)
    ]

    def timed(steps: int, next_batch) -> float:
        nonlocal state
        for _ in range(2):  # warm-up: compilation, the pipeline's first batches
            state, metrics = step(state, next_batch())
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = step(state, next_batch())
        jax.block_until_ready(metrics)
        return steps * batch / (time.perf_counter() - start)

    counter = iter(range(10**9))
    result["preloaded_images_per_s"] = timed(
        sizes["preloaded_steps"], lambda: preloaded[next(counter) % 2]
    )
    peak = profiling.peak_memory_bytes(device)
    result["peak_mib"] = peak / 2**20 if peak is not None else None
    result["peak_source"] = "measured" if peak is not None else None
    save()

    source = pipeline_throughput.street_source(
        sizes["pipeline_images"], args.data_dir, size=(sizes["height"], sizes["width"])
    )
    result["pipeline_workers"] = args.workers
    iterator = pipeline.train_dataset(
        source,
        InputSpec.from_config(config),
        global_batch_size=batch,
        process_index=0,
        process_count=1,
        seed=0,
        worker_count=args.workers,
    )
    try:
        result["pipeline_fed_images_per_s"] = timed(
            sizes["pipeline_steps"], lambda: train_lib.shard(next(iterator), 1)
        )
    finally:
        iterator.close()
    save()
    result["pipeline_alone_images_per_s"] = pipeline_throughput.throughput(
        source,
        workers=args.workers,
        crop=crop,
        batch_size=batch,
        num_batches=sizes["pipeline_steps"],
    )
    # Fed at >= 90% of the preloaded rate: the step limits training, else the pipeline does.
    fed, pre = result["pipeline_fed_images_per_s"], result["preloaded_images_per_s"]
    result["bottleneck"] = "step" if fed >= 0.9 * pre else "input pipeline"
    save()
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
