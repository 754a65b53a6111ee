"""Where the CPU forward's time goes: XLA's per-op profile of the compiled ICNet forward, grouped
by what each op does (convolutions plain and dilated, the align-corners interpolations, pyramid
pooling, layout transposes and copies, the rest), with onnxruntime's own per-node profile of the
same network's ONNX export beside it when `--onnx` is given.

    PYTHONPATH=. python benchmarks/cpu_profile.py [--height=1025 --width=2049] [--runs=3] [--onnx]

The network is the benchmark's `icnet_sub124` (half-width ICNet, random weights, BatchNorm folded,
float32, batch 1): speed does not depend on the weights. XLA ops are named by the HLO instruction
each profiled event runs; an instruction's group comes from the HLO it holds (a fusion: what it
fuses) and from the source stacks JAX recorded for it (`_resize_axis`, `SumPyramidPooling`).
Times are summed over `--runs` profiled calls and divided by them, and over the threads that
run them: XLA runs independent ops side by side, so the sum is CPU time and can exceed the
wall time.
"""

import collections
import glob
import json
import re
import tempfile
import time

import jax
import numpy as np

from icnet_jax import cli
from icnet_jax.benchmarking.networks import build_model
from icnet_jax.cli import flags

TOP = 12  # the slowest single ops listed
LAYERS: dict[str, str] = {}  # HLO instruction: the layer (Flax module path) it computes


def _search(pattern: str, text: str) -> re.Match:
    """The match of `pattern` in a line of the profile, which always holds it."""
    match = re.search(pattern, text)
    if match is None:
        raise ValueError(f"unexpected line in the profile: {text!r}")
    return match


def stack_functions(hlo: str) -> dict[str, list[str]]:
    """`{stack frame id: function names, innermost first}` from the HLO text's frame tables."""
    tables: dict[str, dict[str, str]] = {}
    table = None
    for line in hlo.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            table = tables.setdefault(line, {})
        elif table is not None and re.match(r"^\d+ ", line):
            key, value = line.split(" ", 1)
            table[key] = value
        elif line.strip():
            table = None
    names = {k: v.strip('"') for k, v in tables.get("FunctionNames", {}).items()}
    locations = {
        k: names.get(_search(r"function_name_id=(\d+)", v).group(1), "")
        for k, v in tables.get("FileLocations", {}).items()
    }
    frames = {
        k: _search(r"file_location_id=(\d+) parent_frame_id=(\d+)", v).groups()
        for k, v in tables.get("StackFrames", {}).items()
    }
    stacks = {}
    for frame in frames:
        stack, seen, current = [], set(), frame
        while current in frames and current not in seen:
            seen.add(current)
            location, parent = frames[current]
            stack.append(locations.get(location, ""))
            current = parent
        stacks[frame] = stack
    return stacks


def instruction_texts(hlo: str) -> dict[str, tuple[str, str]]:
    """`{instruction name: (opcode, its HLO line with the body of the computation it calls)}`
    of every instruction of the compiled HLO text (a fusion's text holds what it fuses)."""
    bodies: dict[str, str] = {}
    name = None
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) ", line)
        if head and line.rstrip().endswith("{"):
            name = head.group(1)
            bodies[name] = ""
        elif name is not None:
            bodies[name] += line + "\n"
    texts = {}
    for line in hlo.splitlines():
        match = re.match(r"^\s*(?:ROOT )?%?([\w.\-]+) = \S+ ([\w\-]+)\(", line)
        if match:
            called = re.search(r"calls=%?([\w.\-]+)", line)
            texts[match.group(1)] = (
                match.group(2),
                line + (bodies.get(called.group(1), "") if called else ""),
            )
    return texts


def hlo_groups(hlo: str, classify_op=None) -> dict[str, str]:
    """`{instruction name: group}` of every instruction of the compiled HLO text, the group from
    `classify_op(opcode, text, functions)` (default: `classify`, the forward's groups)."""
    classify_op = classify_op or classify
    stacks = stack_functions(hlo)
    groups = {}
    for instruction, (opcode, text) in instruction_texts(hlo).items():
        frames = re.findall(r"stack_frame_id=(\d+)", text)
        functions = {f for frame in frames for f in stacks.get(frame, [])}
        groups[instruction] = classify_op(opcode, text, functions)
        layer = re.search(r'op_name="jit\(apply\)/(?:ICNet/)?([^"]*)/[a-z_]+"', text)
        LAYERS[instruction] = layer.group(1) if layer else ""
    return groups


def classify(opcode: str, text: str, functions: set[str]) -> str:
    """The group of one instruction from its HLO `text` (with a fusion's body) and the
    functions on the source stacks JAX recorded for it."""
    if "convolution(" in text:
        return "convolution, dilated" if "rhs_dilate=" in text else "convolution"
    if any("PyramidPooling" in f for f in functions):
        return "pyramid pooling (pools, upsampling, sum)"
    if "_resize_axis" in functions:
        return "interpolation (align corners)"
    if "max_pool" in functions or "avg_pool_ceil" in functions or "reduce-window(" in text:
        return "pooling (other)"
    if opcode in ("transpose", "copy") or re.search(r" (transpose|copy)\(", text):
        return "layout (transpose, copy)"
    return "other (elementwise, concat, slices)"


def op_times(compiled, args: tuple, runs: int) -> tuple[collections.Counter, float]:
    """`({HLO instruction: ms per call}, ms per call measured around the calls)` of `runs`
    profiled calls of a compiled executable, after one unprofiled call."""
    jax.block_until_ready(compiled(*args))
    folder = tempfile.mkdtemp(prefix="xla_profile_")
    jax.profiler.start_trace(folder)
    start = time.perf_counter()
    for _ in range(runs):
        jax.block_until_ready(compiled(*args))
    wall = (time.perf_counter() - start) / runs
    jax.profiler.stop_trace()
    (path,) = glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)
    ops: collections.Counter = collections.Counter()
    for plane in jax.profiler.ProfileData.from_file(path).planes:
        for line in plane.lines:
            if "PjRtCpuClient" not in line.name and "XLAEigen" not in line.name:
                continue
            for event in line.events:
                ops[event.name.removeprefix("end: ")] += event.duration_ns / 1e6 / runs
    return ops, wall * 1e3


def xla_profile(apply_fn, variables, images, runs: int) -> tuple[dict, float]:
    """`({group: ms per call}, ms per call measured around the calls)` of the compiled forward."""
    compiled = jax.jit(apply_fn).lower(variables, images).compile()
    groups = hlo_groups(compiled.as_text() or "")
    ops, wall = op_times(compiled, (variables, images), runs)
    ops = collections.Counter({op: ms for op, ms in ops.items() if op in groups})
    totals: collections.Counter = collections.Counter()
    for op, ms in ops.items():
        totals[groups[op]] += ms
    for op, ms in ops.most_common(TOP):
        print(f"  {groups[op][:20]:20s} {LAYERS.get(op, '')[:40]:40s} {ms:8.1f} ms")
    return dict(totals), wall


def onnx_profile(apply_fn, variables, images, runs: int) -> tuple[dict, float]:
    """`({op type: ms per call}, ms per call)` of onnxruntime running the network's export."""
    import onnxruntime as ort

    from icnet_jax.inference.export import export_onnx
    from icnet_jax.inference.onnx_backend import session_options

    folder = tempfile.mkdtemp(prefix="onnx_profile_")
    host_variables = jax.tree.map(np.asarray, variables)
    export_onnx(apply_fn, host_variables, images.shape[1:3], f"{folder}/m.onnx")
    options = session_options()
    options.enable_profiling = True
    options.profile_file_prefix = f"{folder}/ort"
    session = ort.InferenceSession(f"{folder}/m.onnx", options, providers=["CPUExecutionProvider"])
    feed = {"images": np.asarray(images)}
    session.run(None, feed)
    start = time.perf_counter()
    for _ in range(runs):
        session.run(None, feed)
    wall = (time.perf_counter() - start) / runs
    totals: collections.Counter = collections.Counter()
    with open(session.end_profiling()) as f:
        events = json.load(f)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"] / 1e3 / (runs + 1)
    return dict(totals), wall * 1e3


def show(title: str, totals: dict, wall: float) -> None:
    counted = sum(totals.values())
    print(f"\n{title}: {wall:.1f} ms per call (wall), {counted:.1f} ms of op time")
    for group, ms in sorted(totals.items(), key=lambda item: -item[1])[:16]:
        print(f"  {group:46s} {ms:8.1f} ms  {100 * ms / counted:5.1f} %")


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS
    model, variables = build_model("icnet_sub124", "float32", fold_bn=True)
    rng = np.random.default_rng(0)
    images = jax.numpy.asarray(
        rng.standard_normal((1, args.height, args.width, 3), dtype=np.float32)
    )
    print(f"icnet_sub124 float32, BatchNorm folded, input {tuple(images.shape)}")
    print(f"\nXLA: the {TOP} slowest ops (group, layer), ms per call")
    show("XLA", *xla_profile(model.apply, variables, images, args.runs))
    if args.onnx:
        show("onnxruntime (by op type)", *onnx_profile(model.apply, variables, images, args.runs))


if __name__ == "__main__":
    flags.DEFINE_integer("height", 1025, "Input height.")
    flags.DEFINE_integer("width", 2049, "Input width.")
    flags.DEFINE_integer("runs", 3, "Profiled calls.")
    flags.DEFINE_bool("onnx", False, "Also onnxruntime's profile.")
    cli.run(main)
