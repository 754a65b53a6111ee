"""Test set-up: four simulated CPU devices (for pmap tests), the path to ../shared/data, absl's
flags at their defaults, and `logged` (what the package reports, as a command line shows it)."""

import logging
import os
import pathlib

# Must happen before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> pathlib.Path:
    """`../shared/data` beside the repository; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-data test: {SHARED_DATA} is absent (CI has it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """One random-weight checkpoint for the whole session: `(workdir, state, config)`.

    The quickstart's ICNet (width 0.25, the street dataset's 9 classes) at step 7, with input
    settings unlike the command-line defaults (RGB, mean 0, crop 33x65) so that tests can tell
    which won; written without compiling the model.
    """
    from tests.checkpoint_fakes import checkpoint_config, write_checkpoint

    workdir = tmp_path_factory.mktemp("tiny_checkpoint")
    config = checkpoint_config()
    state = write_checkpoint(workdir, config)
    return workdir, state, config


@pytest.fixture(scope="session", autouse=True)
def _flags_at_defaults():
    """absl's flags parsed at their defaults, as under a command line: grain's worker processes
    read them (`cli.flags_at_defaults`)."""
    from icnet_jax import cli

    cli.flags_at_defaults()


@pytest.fixture
def logged(caplog):
    """A function returning the package's log messages (INFO and above) since its last call, one
    per line: what a command line shows its user (`terminal.report_to_terminal`)."""
    caplog.set_level(logging.INFO, logger="icnet_jax")

    def read() -> str:
        text = "".join(record.getMessage() + "\n" for record in caplog.records)
        caplog.clear()
        return text

    return read
