"""Running the entry scripts and tools as a user does, and reading their one `error:` line."""

import os
import pathlib
import subprocess
import sys

from icnet_jax import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}


def run(*command, env=ENV, cwd=REPO, timeout=600) -> subprocess.CompletedProcess:
    """`python *command` (`-m module`, a script, or `-c code`), from the repository root unless
    `cwd` says otherwise; four simulated CPU devices, as in the tests' own process."""
    return subprocess.run(
        [sys.executable, *map(str, command)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """The single `error:` line of a run that ended with the usage status and no traceback."""
    output = done.stdout + done.stderr
    assert done.returncode == cli.EXIT_USAGE, output
    assert "Traceback" not in output, output
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]
