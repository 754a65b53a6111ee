"""The command lines of `train.py`, `evaluate.py`, `predict.py` and `benchmark.py`: each module
defines its flags and `main`; the repository's root scripts and the console scripts
(`icnet_jax.console`: `icnet-train`, ...) run them as `__main__`, from any folder."""
