"""Inference speed of ICNet's branches and the PSPNet50 baselines (ICNet paper, Table 2).

The command line is `icnet_jax/scripts/benchmark.py` (`--help` lists its flags); after
`pip install`, `icnet-benchmark` runs the same from any folder.
"""

from icnet_jax import console

if __name__ == "__main__":
    console.benchmark()
