"""What every command-line tool shares: one-line errors, exit statuses and quiet library logs.

Entry points call `run(main)` instead of `absl.app.run(main)`. A failure the user caused and can fix
is raised as `UserError("what, where, what to do")` (or a `flags` error while parsing) and reaches
the terminal as one `error: ...` line with exit status `EXIT_USAGE`, no traceback unless
`--verbosity=1` or higher. Library loggers (orbax, tfds, absl, jax) stay at WARNING unless
`--verbosity` is given. The package reports through `logging` (`icnet_jax.*` loggers); `run`
shows its records as plain lines, INFO on stdout and warnings on stderr (`terminal.py`).

Before `main`: the `--config` file loads (else one line naming it and the current folder), and
every output flag declared with `define_output` can be written (`errors.check_outputs`).
`--help` and `--helpfull` exit with 0. A JAX platform asked for with JAX_PLATFORMS that the
installed jax cannot start is one line with the install command (`start_backend` makes it
happen before anything is written).

This is the one module of the package that imports absl: the tools (`icnet_jax/tools/`) define
their flags with its `flags`, so that the library below stays free of it (`.importlinter`).
"""

from __future__ import annotations

import difflib
import importlib.machinery
import importlib.util
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

from icnet_jax import config_files, errors, terminal
from icnet_jax.errors import UserError

# The flags defined here (`define_config`, `define_output`, ...) belong to the script that calls
# them: its `--help` lists them.
flags.disclaim_key_flags()

EXIT_OK = 0
EXIT_FAILED = 1  # the job ran but did not succeed (e.g. every input of predict.py failed)
EXIT_USAGE = 2  # bad input (flags, config, files, paths): nothing was computed or written
EXIT_INTERRUPTED = 130  # SIGINT/SIGTERM: stopped cleanly (training saves a checkpoint first)


def quiet_libraries() -> None:
    """Library loggers quiet (`terminal.quiet_library_loggers`), absl's at WARNING too."""
    absl_logging.set_verbosity(absl_logging.WARNING)
    terminal.quiet_library_loggers()


def flags_at_defaults() -> None:
    """Marks absl's flags parsed, at their defaults, where no command line parsed them: call it
    before reading data with grain worker processes (`config.input.worker_count > 0`) outside
    `run` (a notebook, the tests). grain 0.2.18 reads its absl flags when it starts workers and
    fails with UnparsedFlagAccessError before they are parsed; `run` parses them before `main`."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def verbose() -> bool:
    """True when the user asked for library logs and tracebacks (`--verbosity=1` or more)."""
    return bool(
        flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].present and flags.FLAGS.verbosity > 0
    )


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice nearest to a misspelt `name`, if one is close enough."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return match[0] if match else None


def _where_in(config_file: str, error: BaseException) -> str:
    """' (raised at FILE, line N)': the last line of `config_file` in the tracebacks of `error`'s
    chain (a syntax error: its own line); '' when the error did not come from that file."""
    path = os.path.realpath(config_files.resolve(config_file).split(":", 1)[0])
    line = None
    for link in reversed(errors.error_chain(error)):
        if (
            isinstance(link, SyntaxError)
            and link.filename
            and os.path.realpath(link.filename) == path
        ):
            line = link.lineno
        for frame in traceback.extract_tb(link.__traceback__):
            if os.path.realpath(frame.filename) == path:
                line = frame.lineno
        if line is not None:
            return f" (raised at {config_file.split(':', 1)[0]}, line {line})"
    return ""


def _config_argument(argv: list[str], default: str) -> str:
    """The `--config` value of `argv` (`--config=X` or `--config X`), else `default`."""
    for i, arg in enumerate(argv):
        if re.fullmatch(r"--?config=.*", arg):
            return arg.split("=", 1)[1]
        if re.fullmatch(r"--?config", arg) and i + 1 < len(argv):
            return argv[i + 1]
    return default


def _load_error(config: str) -> Exception | None:
    """What loading the config file `config` (`path.py[:variant]`) raises, or None if it loads.

    Run again after a flag error: ml_collections defers a missing file's error to the first use
    of the config, or reports it without the file's name (with `--config.X` overrides).
    """
    file, *variant = config.split(":", 1)
    loader = importlib.machinery.SourceFileLoader("config_file", file)
    try:
        spec = importlib.util.spec_from_loader(loader.name, loader)
        assert spec is not None  # a SourceFileLoader always gives one
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        module.get_config(*variant)
    except Exception as error:  # noqa: BLE001 - whatever the file raises is the cause
        return error
    return None


def _cannot_load(config: str, error: BaseException) -> str:
    """One line for a `--config` file that did not load: the file, the cause and where."""
    file = config.split(":", 1)[0]
    if not os.path.isfile(file):
        what = "is a folder" if os.path.isdir(file) else "does not exist"
        return (
            f"cannot load --config={config}: {file} {what} (config paths are relative to the "
            f"current folder, {os.getcwd()}; run from the repository root or give the full path)"
        )
    cause = errors.error_chain(error)[-1]
    if isinstance(cause, AttributeError) and "get_config" in str(cause):
        return f"cannot load --config={config}: {file} defines no get_config()"
    reason = str(cause).strip().splitlines() or [type(cause).__name__]
    # A SyntaxError names its file and line itself.
    where = "" if isinstance(cause, SyntaxError) else _where_in(config, error)
    return f"cannot load --config={config}: {reason[-1].strip()}{where}"


def _flag_error_message(error: BaseException) -> str:
    """One line out of a (possibly chained, multi-line) flag parsing error."""
    texts = [str(link) for link in errors.error_chain(error)]
    text = " ".join(texts)
    hint = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', text)
    if hint:
        return f"no config field {hint.group(2)!r}; did you mean {hint.group(1)!r}?"
    first = texts[0].strip().splitlines()[0] if texts[0].strip() else type(error).__name__
    missing = re.fullmatch(r"\"?'([\w.]+)'\"?", first)
    if missing:
        return f"no config field {missing.group(1)!r} (see the config file for the fields)"
    return first


def _flag_failure(error: BaseException, config: str | None) -> str:
    """The line for a failure while parsing the flags: the config file's (`config`: the
    `--config` value) if it does not load, else the flag's."""
    cause = _load_error(config) if config else None
    if config and cause is not None:
        return _cannot_load(config, cause)
    return f"{_flag_error_message(error)} (--help lists the flags)"


_HELP_FLAGS = ("help", "helpshort", "helpfull", "helpxml", "?")


def _asks_for_help(argv: list[str]) -> bool:
    names = (arg.lstrip("-").split("=", 1)[0] for arg in argv[1:] if arg.startswith("-"))
    return any(name in _HELP_FLAGS for name in names)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except SystemExit as done:
        # absl ends --help and --helpfull with status 1; the user asked for it and got it.
        if done.code == EXIT_FAILED and _asks_for_help(argv):
            sys.exit(EXIT_OK)
        raise
    except Exception as error:  # noqa: BLE001 - any parse failure is a usage error
        config = None
        if "config" in flags.FLAGS:
            default = (flags.FLAGS["config"].default_as_str or "").strip("'")
            config = _config_argument(argv, default)
        print(f"error: {_flag_failure(error, config)}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def define_config(
    default: str,
    help_text: str = "Config file (`path.py[:variant]`, or a shipped one by name: `camvid:cpu`).",
    **kwargs,
) -> flags.FlagHolder:
    """`--config` (with `--config.a.b=value` overrides) whose errors are one line.

    ml_collections applies the overrides while the flag is defined, i.e. at import time of the
    entry point, before `run`: a typo there must be caught here.
    """
    try:
        holder = config_flags.DEFINE_config_file(
            "config", config_files.resolve(default), help_text, **kwargs
        )
    except Exception as error:
        if any(a.startswith("--verbosity") for a in sys.argv):
            raise
        fail(_flag_failure(error, _config_argument(sys.argv, default)))
        raise  # unreachable: fail() exits
    flags.FLAGS["config"].parser = _NamedConfigParser(flags.FLAGS["config"].parser)
    return holder


class _NamedConfigParser(flags.ArgumentParser):
    """ml_collections' config file parser that also reads the shipped configs by name
    (`--config=camvid:cpu`, `config_files.resolve`)."""

    def __init__(self, parser: flags.ArgumentParser):
        self._parser = parser

    def parse(self, argument):
        return self._parser.parse(config_files.resolve(argument))

    def flag_type(self) -> str:
        return self._parser.flag_type()


def define_multihost_flags() -> None:
    """The flags that join a multi-host job (train.py, evaluate.py)."""
    flags.DEFINE_bool("distributed", False, "Join a multi-host job that JAX detects (SLURM, TPU).")
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 of a multi-host job.")
    flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-host job.")
    flags.DEFINE_integer("process_id", None, "This process's index in a multi-host job.")


def define_backend_flags(default: str) -> None:
    """--backend (default `default`), --dtype and --calibration_images: what runs the network
    (predict.py, evaluate.py); `backend_from_flags` reads them."""
    from icnet_jax.inference import onnx_backend

    flags.DEFINE_enum(
        "backend", default, onnx_backend.BACKENDS,
        "What runs the network (auto: onnxruntime on a CPU with the export extras, else JAX).",
    )  # fmt: skip
    flags.DEFINE_enum(
        "dtype", "float32", onnx_backend.DTYPES,
        "int8: on onnxruntime (auto or --backend=onnxruntime).",
    )  # fmt: skip
    flags.DEFINE_integer(
        "calibration_images", 32, "Training images calibrating int8.", lower_bound=1
    )


def backend_from_flags():
    """The `onnx_backend.Backend` of the flags of `define_backend_flags`."""
    from icnet_jax.inference import onnx_backend

    f = flags.FLAGS
    return onnx_backend.Backend(f.backend, f.dtype, f.calibration_images)


def start_backend() -> None:
    """Starts JAX's backend now: a requested platform that is not available (JAX_PLATFORMS)
    fails here, before anything is written (`run` turns it into one line). Not before
    `jax.distributed.initialize` or a change of XLA_FLAGS, which must come first."""
    import jax

    jax.local_devices()


def join_multihost() -> None:
    """Joins the job the multi-host flags describe (explicitly, or as JAX detects it), then
    starts the backend (`start_backend`)."""
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
    start_backend()


# Where a script writes: flag name -> "folder" (created with its parents) or "file" (its folder
# created), checked by `run` before `main` (`errors.check_outputs`).
_OUTPUTS: dict[str, str] = {}


def define_output(
    name: str, default: str | None, help_text: str, *, kind: str = "folder", **kwargs
) -> flags.FlagHolder:
    """A string flag naming a folder (`kind='folder'`) or a file (`'file'`) the script writes;
    `run` checks that it can be written before any work (one `error:` line naming the flag)."""
    if kind not in ("folder", "file"):
        raise ValueError(f"kind must be 'folder' or 'file', not {kind!r}")
    _OUTPUTS[name] = kind
    return flags.DEFINE_string(name, default, help_text, **kwargs)


def check_outputs() -> None:
    """Raises UserError for the first output flag (`define_output`) that cannot be written."""
    errors.check_outputs(
        {f"--{name}": (flags.FLAGS[name].value, kind) for name, kind in _OUTPUTS.items()}
    )


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
        config = flags.FLAGS["config"].config_filename  # type: ignore[attr-defined]
        fail(_cannot_load(config, _load_error(config) or error))


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
        terminal.report_to_terminal(logging.DEBUG if verbose() else logging.INFO)
        _check_config_loads()
        try:
            check_outputs()
            return main(argv)
        except UserError as error:
            if verbose():
                raise
            fail(str(error))
        except Exception as error:
            platform = None if verbose() else errors.unavailable_platform(error)
            if platform is None:
                raise
            fail(platform)
        except KeyboardInterrupt:
            if verbose():
                raise
            fail("interrupted", EXIT_INTERRUPTED)
        return None

    app.run(wrapped, flags_parser=_parse_flags)


def config_given() -> tuple[bool, dict]:
    """Whether `--config` was given, and its `--config.KEY=VALUE` overrides (dotted keys): a job
    on a run takes the run's config and only these changes (`inference.saved_run.CommandLine`)."""
    holder = flags.FLAGS["config"]
    return bool(holder.present), dict(config_flags.get_override_values(holder))
