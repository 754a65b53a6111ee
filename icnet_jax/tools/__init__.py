"""Tools for the authors' released weights: conversion (`convert_weights`), L1-norm filter pruning
(`prune`, paper Sec. 5.2) and export to TF SavedModel / ONNX (`export`, optional extras).

Each is a module with a command line: `python -m icnet_jax.tools.<name> --help`; a wrong input
(a missing checkpoint, a file that is not weights, a bad flag value, an `--output` that cannot be
written: checked before any work) ends in one `error:` line and exit status 2 (`cli.run`).
"""
