"""What a command line shows its user of the logs: the package's records as plain lines, the
libraries' only from WARNING up (`cli.run` sets this up; `--verbosity` shows everything).

The package reports through `logging` (`logging.getLogger(__name__)` under `icnet_jax`) and never
prints; a library user sees its records as their own logging set-up says.
"""

from __future__ import annotations

import logging
import sys

from tqdm import tqdm

_LIBRARY_LOGGERS = (
    "absl",
    "orbax",
    "jax",
    "jax._src",
    "tensorflow",
    "tensorflow_datasets",
    "grain",
)
# The ONNX export's converters: onnx_ir warns once per shape-only constant it cannot type,
# jax2onnx logs a traceback per example plugin whose optional package is absent (dm_pix,
# equinox): harmless, many lines.
_CONVERTER_LOGGERS = ("onnx_ir.serde", "jax2onnx")


def _not_custom_config_notice(record: logging.LogRecord) -> bool:
    # tfds warns "Using custom data configuration: StreetConfig(...)" on every run for configs
    # built from arguments (street, custom): by design here, so not worth a line.
    return not str(record.msg).startswith("Using custom data configuration")


def quiet_library_loggers() -> None:
    """Library loggers at WARNING (orbax alone logs ~60 INFO lines a training run), the ONNX
    converters at ERROR, without tfds' notice on configs built from arguments nor orbax's
    tracebacks of a full disk (the DiskFullError says it once: `saving.quiet_full_disk_logs`)."""
    from icnet_jax.weights import saving  # here: jax and orbax load when a tool runs, not before

    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in _CONVERTER_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    absl_logger = logging.getLogger("absl")
    if _not_custom_config_notice not in absl_logger.filters:
        absl_logger.addFilter(_not_custom_config_notice)
    saving.quiet_full_disk_logs()


class _Terminal(logging.Handler):
    """A record as the user reads it: the message alone, INFO and below on stdout, warnings and
    errors on stderr (the streams are looked up at each record, so redirections apply), through
    `tqdm.write` so that a progress bar on the terminal is redrawn below it, not cut."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        try:
            tqdm.write(self.format(record), file=stream)
            stream.flush()
        except Exception:  # noqa: BLE001 - logging's own policy for a failing handler
            self.handleError(record)


def report_to_terminal(level: int = logging.INFO) -> None:
    """Shows the package's log records (the `icnet_jax` logger and those below it) from `level`
    up as plain lines (`_Terminal`), and only there: not again through absl's handler on the root
    logger, with its timestamps. What the tools and scripts report to their user."""
    logger = logging.getLogger("icnet_jax")
    for handler in [h for h in logger.handlers if isinstance(h, _Terminal)]:
        logger.removeHandler(handler)
    logger.addHandler(_Terminal())
    logger.setLevel(level)
    logger.propagate = False
