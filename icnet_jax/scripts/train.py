"""Trains ICNet: `python train.py --config=configs/cityscapes.py --workdir=DIR`.

Any config field can be overridden, e.g. `--config.batch_size=8`; a variant of the paper's
ablations is chosen with `--config=configs/cityscapes.py:sub24`. Training resumes from the latest
checkpoint in the workdir. For several hosts pass `--coordinator_address`, `--num_processes` and
`--process_id`, or `--distributed` where JAX detects them itself (SLURM, TPU pods).

Exit status: 0 trained and evaluated; 1 training failed (a non-finite loss, named with its
step); 2 bad input (flags, config, paths, a workdir holding another model, a workdir in use by
another training run: `workdir/train.lock.json` names it), nothing written, or a full disk while
saving a checkpoint (the last good one is named and kept; an unfinished save is removed);
130 stopped by SIGTERM or SIGINT (Ctrl-C) after saving a checkpoint at the step reached
("stopped at step N, checkpoint saved"): run the same command again to resume.
"""

from absl import flags

from icnet_jax import cli
from icnet_jax.train import run_control, trainer, workdir_lock

FLAGS = flags.FLAGS
cli.define_config("configs/quickstart.py", "Training config.", lock_config=True)
cli.define_output("workdir", "runs/quickstart", "Checkpoints, logs and evaluation go here.")
cli.define_multihost_flags()


def main(argv):
    del argv
    cli.join_multihost()
    with workdir_lock.hold(FLAGS.workdir):
        try:
            trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
        except trainer.NonFiniteLossError as error:
            cli.fail(str(error), cli.EXIT_FAILED)
        except run_control.Stopped as stopped:
            print(stopped, flush=True)
            return cli.EXIT_INTERRUPTED
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.run(main)
