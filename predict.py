"""Segments images or videos with a checkpoint.

The command line is `icnet_jax/scripts/predict.py` (`--help` lists its flags); after
`pip install`, `icnet-predict` runs the same from any folder.
"""

from icnet_jax import console

if __name__ == "__main__":
    console.predict()
