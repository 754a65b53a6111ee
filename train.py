"""Trains ICNet: `python train.py --config=configs/cityscapes.py --workdir=DIR`.

Any config field can be overridden, e.g. `--config.batch_size=8`; a variant of the paper's
ablations is chosen with `--config=configs/cityscapes.py:sub24`. Training resumes from the latest
checkpoint in the workdir. For several hosts pass `--coordinator_address`, `--num_processes` and
`--process_id`, or `--distributed` where JAX detects them itself (SLURM, TPU pods).
"""

import sys

from absl import flags

from icnet_jax import cli, train_lib

FLAGS = flags.FLAGS
cli.define_config("configs/quickstart.py", "Training config.", lock_config=True)
flags.DEFINE_string("workdir", "runs/quickstart", "Checkpoints, logs and evaluation go here.")
flags.DEFINE_bool("distributed", False, "Join a multi-host job that JAX can detect (SLURM, TPU).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 of a multi-host job.")
flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-host job.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-host job.")


def main(argv):
    del argv
    train_lib.initialize_distributed(
        FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id, FLAGS.distributed
    )
    try:
        train_lib.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except train_lib.NonFiniteLossError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    cli.run(main)
