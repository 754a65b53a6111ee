"""L1-norm filter pruning of a checkpoint (paper Sec. 5.2; the method:
`icnet_jax.weights.prune`).

    python -m icnet_jax.tools.prune --checkpoint=DIR --keep=0.5 --output=DIR2

Writes `DIR2/checkpoints/0`: a training checkpoint at width * keep, to fine-tune from
(`config.init_checkpoint=DIR2`) or evaluate. `--keep` below `MIN_KEEP` (0.05) is refused.
"""

from __future__ import annotations

from icnet_jax import cli
from icnet_jax.weights.prune import prune_checkpoint


def main(argv):
    del argv
    cli.start_backend()
    prune_checkpoint(FLAGS.checkpoint, FLAGS.keep, FLAGS.output, seed=FLAGS.seed)


if __name__ == "__main__":
    from icnet_jax.cli import flags

    FLAGS = flags.FLAGS
    flags.DEFINE_string(
        "checkpoint", None, "Checkpoint of a wider ICNet (workdir or step).", required=True
    )
    flags.DEFINE_float("keep", 0.5, "Kernel keeping rate (paper Table 1: 0.5, 0.25).")
    cli.define_output("output", None, "Output directory (DIR/checkpoints/0).", required=True)
    flags.DEFINE_integer("seed", 0, "Seed of the (unused) fresh initialisation.")
    cli.run(main)
