"""Inference speed of ICNet's branches and the PSPNet50 baselines (ICNet paper, Table 2).

    python benchmark.py                                   # all models, 1024x2048
    python benchmark.py --height=1025 --width=2049 --models=icnet --runs=5
    python benchmark.py --dtype=both --json=results.json

Protocol: every model is compiled ahead of time (compile time reported apart, never timed),
warmed up (`--warmup` calls), then called `--runs` times, each call ended with
`jax.block_until_ready`; the median and spread (p10-p90, std) of the per-call times are reported.
Where one call is slow, fewer calls are timed by a fixed rule: runs = min(--runs,
floor(--time_budget / seconds of one warm-up call)), but never fewer than `--min_runs`. BatchNorm
is folded into the convolutions by default (`--nofold_bn` keeps it), as the paper measured.
Weights are random; inputs `[batch, height, width, 3]` float32, cast to `--dtype` in the model.

Models (`--models=a,b`, names or groups): icnet_sub4, icnet_sub24, icnet_sub124 (the released
half-width ICNet, by output branch), pspnet50_half (PSPNet50 at half width, the paper's
baseline), pspnet50 (full width). Groups: icnet, pspnet, all (default). Speed-up and memory
ratios are against pspnet50_half of the same dtype, when it is in the run.

Memory (`--memory`): 'measured' is the device's peak_bytes_in_use in a fresh subprocess running
one forward of one model (GPU/TPU only); 'xla_estimate' is the compiled executable's memory
analysis, available everywhere; 'auto' (default) measures where it can. `--json=FILE` writes the
figures and settings (schema: `icnet_jax/benchmarking/speed.py`).

`--backend=onnxruntime` (the extras of requirements-export.txt) exports each network to ONNX
(jax2onnx) and times onnxruntime on the CPU instead of JAX, same protocol (no compilation to
leave out; no FLOPs or memory figures). `--dtype=int8` adds the statically quantised model
(per channel, calibrated on `--calibration_images` random inputs: the weights are random
too), timed after float32, with `speedup_vs_float32` in the JSON.

`--checkpoint=RUN` times the run's own network (its saved architecture, width, classes and
branch; random weights of those shapes) instead of `--models`.

Exit status: 0 benchmarked (table printed, JSON written); 2 bad input (an unknown model or flag,
a value out of range, a --json that cannot be written: checked first; its folder is created),
nothing run; 130 interrupted.
"""

from absl import flags

from icnet_jax import build, cli, errors
from icnet_jax.benchmarking import networks, speed
from icnet_jax.inference import saved_run
from icnet_jax.weights import checkpoints

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "Time this run's own network (a workdir or step).")
flags.DEFINE_list("models", ["all"], "Models or groups: " + ", ".join(networks.NAMES) + ".")
flags.DEFINE_enum(
    "dtype", "float32", ["float32", "bfloat16", "int8", "both"],
    "Compute dtype (int8: --backend=onnxruntime; both: with bfloat16 or int8).",
)  # fmt: skip
flags.DEFINE_enum("backend", "jax", ["jax", "onnxruntime"], "What runs the networks.")
flags.DEFINE_integer("calibration_images", 4, "int8: random inputs calibrating.", lower_bound=1)
flags.DEFINE_integer("batch", 1, "Images per forward.", lower_bound=1)
flags.DEFINE_integer("height", 1024, "Input height, pixels.", lower_bound=1)
flags.DEFINE_integer("width", 2048, "Input width, pixels.", lower_bound=1)
flags.DEFINE_integer("runs", 50, "Timed forwards per model.", lower_bound=1)
flags.DEFINE_integer("min_runs", 5, "Fewest timed forwards the budget may leave.", lower_bound=1)
flags.DEFINE_integer("warmup", 2, "Untimed forwards before timing.", lower_bound=0)
flags.DEFINE_float(
    "time_budget", 120.0, "Seconds of timed forwards per model (0: none).", lower_bound=0
)
flags.DEFINE_enum("memory", "auto", ["auto", "measured", "xla_estimate"], "Memory source.")
flags.DEFINE_string("xla_flags", "", "Appended to XLA_FLAGS before the backend starts.")
cli.define_output("json", None, "Write all results as JSON to this file.", kind="file")
flags.DEFINE_bool("progress", True, "tqdm progress bar on stderr.")
flags.DEFINE_bool("fold_bn", True, "Fold BatchNorm into the convolutions (as the paper).")
flags.DEFINE_integer("seed", 0, "Seed of the random weights and inputs.")
# Hidden from --help (another module's flags): a channel multiplier on every model (tiny models
# for tests), and the memory probe of one model that a fresh subprocess runs.
for _flag in (
    flags.Flag(flags.FloatParser(0), flags.ArgumentSerializer(), "width_scale", 1.0, ""),
    flags.Flag(flags.ArgumentParser(), flags.ArgumentSerializer(), "memory_probe", None, ""),
):
    flags.DEFINE_flag(_flag, module_name="benchmark_internal")


def _run_network(path: str) -> str:
    """Registers the network of the run at `path` among the benchmarked models; its name."""
    config, num_classes, step = saved_run.read_run(checkpoints.existing_checkpoint(path))
    name = f"run_step{step}"
    networks.MODELS[name] = networks.ModelSpec(
        name,
        config.model.branch if config.model.name == "icnet" else None,
        float(config.model.width),
        lambda scale, fold, dtype: build.create_model(
            config, num_classes, fold_bn=fold, dtype=dtype
        ),
    )
    return name


def main(argv):
    if len(argv) > 1:
        raise errors.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    options = speed.Options(
        models=[_run_network(FLAGS.checkpoint)] if FLAGS.checkpoint else FLAGS.models,
        dtypes=speed.dtypes_of(FLAGS.dtype, FLAGS.backend),
        batch=FLAGS.batch,
        height=FLAGS.height,
        width=FLAGS.width,
        runs=FLAGS.runs,
        min_runs=FLAGS.min_runs,
        warmup=FLAGS.warmup,
        time_budget=FLAGS.time_budget,
        memory=FLAGS.memory,
        fold_bn=FLAGS.fold_bn,
        seed=FLAGS.seed,
        width_scale=FLAGS.width_scale,
        progress=FLAGS.progress,
        backend=FLAGS.backend,
        calibration_images=FLAGS.calibration_images,
    )
    speed.run(options, FLAGS.json, xla_flags=FLAGS.xla_flags, probe=FLAGS.memory_probe)
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.run(main)
