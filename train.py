"""Trains ICNet: `python train.py --config=configs/cityscapes.py --workdir=DIR`.

The command line is `icnet_jax/scripts/train.py` (`--help` lists its flags); after
`pip install`, `icnet-train` runs the same from any folder.
"""

from icnet_jax import console

if __name__ == "__main__":
    console.train()
