"""What every command-line tool shares: one-line errors, exit statuses and quiet library logs.

Entry points call `run(main)` instead of `absl.app.run(main)`. A failure the user caused and can fix
is raised as `UserError("what, where, what to do")` (or a `flags` error while parsing) and reaches
the terminal as one `error: ...` line with exit status `EXIT_USAGE`, no traceback unless
`--verbosity=1` or higher. Library loggers (orbax, tfds, absl, jax) stay at WARNING unless
`--verbosity` is given; our own progress and results are printed, not logged.

This is the one module of the package that imports absl: the tools (`icnet_jax/tools/`) define
their flags with its `flags`, so that the library below stays free of it (`.importlinter`).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from icnet_jax.errors import UserError

EXIT_OK = 0
EXIT_FAILED = 1  # the job ran but did not succeed (e.g. every input of predict.py failed)
EXIT_USAGE = 2  # bad input (flags, config, files, paths): nothing was computed or written
EXIT_INTERRUPTED = 130  # SIGINT/SIGTERM: stopped cleanly (training saves a checkpoint first)

_LIBRARY_LOGGERS = (
    "absl",
    "orbax",
    "jax",
    "jax._src",
    "tensorflow",
    "tensorflow_datasets",
    "grain",
)


def quiet_libraries() -> None:
    """Library loggers at WARNING (orbax alone logs ~60 INFO lines a training run)."""
    absl_logging.set_verbosity(absl_logging.WARNING)
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def verbose() -> bool:
    """True when the user asked for library logs and tracebacks (`--verbosity=1` or more)."""
    return (
        flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].present and flags.FLAGS.verbosity > 0
    )


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice nearest to a misspelt `name`, if one is close enough."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return match[0] if match else None


def _chain(error: BaseException | None) -> list[BaseException]:
    chain = []
    while error is not None and len(chain) < 20:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def _where_in(config_file: str, error: BaseException) -> str:
    """' (raised at FILE, line N)': the last line of `config_file` in the tracebacks of `error`'s
    chain (a syntax error: its own line); '' when the error did not come from that file."""
    path = os.path.realpath(config_file.split(":", 1)[0])
    line = None
    for link in reversed(_chain(error)):
        syntax = isinstance(link, SyntaxError) and link.filename and link.lineno
        if syntax and os.path.realpath(link.filename) == path:
            line = link.lineno
        for frame in traceback.extract_tb(link.__traceback__):
            if os.path.realpath(frame.filename) == path:
                line = frame.lineno
        if line is not None:
            return f" (raised at {config_file.split(':', 1)[0]}, line {line})"
    return ""


def _flag_error_message(error: BaseException) -> str:
    """One line out of a (possibly chained, multi-line) flag parsing error."""
    texts = [str(link) for link in _chain(error)]
    text = " ".join(texts)
    if "Error whilst parsing config file" in texts[0] and texts[-1].strip():
        # An error raised by the config file's get_config (an unknown variant): its own words,
        # and where in the file.
        flag = texts[0].split(": Error whilst", 1)[0]
        where = _where_in(flag.split("=", 1)[-1], error)
        return f"{flag}: {texts[-1].strip().splitlines()[-1]}{where}"
    hint = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', text)
    if hint:
        return f"no config field {hint.group(2)!r}; did you mean {hint.group(1)!r}?"
    first = texts[0].strip().splitlines()[0] if texts[0].strip() else type(error).__name__
    missing = re.fullmatch(r"\"?'([\w.]+)'\"?", first)
    if missing:
        return f"no config field {missing.group(1)!r} (see the config file for the fields)"
    return first


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except Exception as error:  # noqa: BLE001 - any parse failure is a usage error
        print(f"error: {_flag_error_message(error)} (--help lists the flags)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def define_config(
    default: str, help_text: str = "Config file (`path.py` or `path.py:variant`).", **kwargs
) -> flags.FlagHolder:
    """`--config` (with `--config.a.b=value` overrides) whose errors are one line.

    ml_collections applies the overrides while the flag is defined, i.e. at import time of the
    entry point, before `run`: a typo there must be caught here.
    """
    try:
        return config_flags.DEFINE_config_file("config", default, help_text, **kwargs)
    except Exception as error:
        if any(a.startswith("--verbosity") for a in sys.argv):
            raise
        fail(f"{_flag_error_message(error)} (--help lists the flags)")
        raise  # unreachable: fail() exits


def define_multihost_flags() -> None:
    """The flags that join a multi-host job (train.py, evaluate.py)."""
    flags.DEFINE_bool("distributed", False, "Join a multi-host job that JAX detects (SLURM, TPU).")
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 of a multi-host job.")
    flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-host job.")
    flags.DEFINE_integer("process_id", None, "This process's index in a multi-host job.")


def join_multihost() -> None:
    """Joins the job the multi-host flags describe (explicitly, or as JAX detects it)."""
    import jax

    f = flags.FLAGS
    if f.coordinator_address:
        if f.num_processes is None or f.process_id is None:
            raise UserError("--coordinator_address needs --num_processes and --process_id as well")
        jax.distributed.initialize(
            coordinator_address=f.coordinator_address,
            num_processes=f.num_processes,
            process_id=f.process_id,
        )
    elif f.distributed:
        jax.distributed.initialize()


def fail(message: str, status: int = EXIT_USAGE) -> None:
    """Prints `error: message` to stderr and exits with `status`."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def _check_config_loads() -> None:
    """A `--config` file that does not load fails here, not later inside the job."""
    if "config" not in flags.FLAGS or verbose():
        return
    try:
        flags.FLAGS.config.to_dict()
    except Exception as error:  # noqa: BLE001 - a missing file or an error inside the config
        path = flags.FLAGS["config"].config_filename
        reason = str(error).strip().splitlines()[-1].strip()
        fail(f"cannot load --config={path}: {reason}{_where_in(path, error)}")


def _interrupt(signum, frame) -> None:
    del signum, frame
    raise KeyboardInterrupt


def run(main: Callable[[list[str]], int | None]) -> None:
    """`absl.app.run(main)` with one-line errors and quiet libraries (see the module docstring).

    SIGTERM ends like Ctrl-C (`error: interrupted`, status 130); training installs its own
    handlers around its loop, which save a checkpoint first.
    """

    def wrapped(argv: list[str]) -> int | None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _interrupt)
        if not flags.FLAGS["verbosity"].present:
            quiet_libraries()
        _check_config_loads()
        try:
            return main(argv)
        except UserError as error:
            if verbose():
                raise
            fail(str(error))
        except KeyboardInterrupt:
            if verbose():
                raise
            fail("interrupted", EXIT_INTERRUPTED)
        return None

    app.run(wrapped, flags_parser=_parse_flags)


def config_given() -> tuple[bool, dict]:
    """Whether `--config` was given, and its `--config.KEY=VALUE` overrides (dotted keys): a job
    on a run takes the run's config and only these changes (`inference.load.CommandLine`)."""
    holder = flags.FLAGS["config"]
    return bool(holder.present), dict(config_flags.get_override_values(holder))
