"""Evaluates a checkpoint on a split.

The command line is `icnet_jax/scripts/evaluate.py` (`--help` lists its flags); after
`pip install`, `icnet-evaluate` runs the same from any folder.
"""

from icnet_jax import console

if __name__ == "__main__":
    console.evaluate()
