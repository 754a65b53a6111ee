"""The device check's setup: the modules the GPU image lacks, installed from prepared wheels, and
the GPU's name (`device_check.py`)."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import time
from typing import Any

# Modules the GPU image lacks (see prepare_device_wheels.sh).
NEEDED = (
    "grain",
    "array_record",
    "tensorflow_datasets",
    "ml_collections",
    "tensorboardX",
    "importlib_resources",
)


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
