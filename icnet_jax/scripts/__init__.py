"""The entry scripts of the repository's root (`train.py`, `evaluate.py`, `predict.py`,
`benchmark.py`) as modules of the package: links in the repository, copied into an installed
package, so that the console scripts (`icnet_jax.console`) run them away from the clone."""
