"""What keeps a training run's outputs right when it stops early: the signal handling that turns
SIGTERM/SIGINT into a checkpoint at the step reached, and the metrics.jsonl/TensorBoard writer
that keeps each step once across resumes."""

from __future__ import annotations

import json
import pathlib
import signal
import threading
from collections.abc import Mapping

import jax


class Stopped(Exception):
    """SIGTERM or SIGINT stopped training; a checkpoint of the step reached was saved."""

    def __init__(self, step: int):
        super().__init__(f"stopped at step {step}, checkpoint saved")
        self.step = step


def trained_already(step: int, num_steps: int, directory) -> str:
    """What a resumed run whose checkpoint is at or past `num_steps` says instead of training."""
    return (
        f"the checkpoint in {directory} is at step {step}, config.num_steps={num_steps}: nothing "
        f"to train, nothing written; to train longer, raise --config.num_steps above {step}"
    )


class StopSignals:
    """SIGTERM/SIGINT set a flag that the loop reads between steps (a second signal stops at once).

    With several processes the hosts must agree on the step: JAX's preemption service (which
    catches SIGTERM itself) tells every host at the same step, as orbax's preemption support does.
    """

    def __init__(self):
        self.received = False
        self._previous = {}
        self._multihost = jax.process_count() > 1

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            # Several hosts: no handlers (JAX's preemption notifier owns SIGTERM; a Ctrl-C on one
            # host cannot be agreed on).
            for sig in () if self._multihost else (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        if self.received:  # a second signal: no more waiting
            raise KeyboardInterrupt
        self.received = True
        signal.signal(signum, signal.SIG_DFL if signum == signal.SIGTERM else self._handle)

    def stop_at(self, step: int, manager) -> bool:
        if self._multihost:
            return bool(manager.reached_preemption(step))
        return self.received

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


class MetricsWriter:
    """metrics.jsonl and TensorBoard events in the workdir, written by process 0 only."""

    def __init__(self, workdir: pathlib.Path, start: int):
        self.active = jax.process_index() == 0
        if self.active:
            from tensorboardX import SummaryWriter

            path = workdir / "metrics.jsonl"
            # A resumed run repeats the steps after its checkpoint: drop their old lines so that
            # each step appears once.
            kept = []
            if start and path.exists():
                kept = [
                    line
                    for line in path.read_text().splitlines(keepends=True)
                    if line.strip() and json.loads(line).get("step", 0) <= start
                ]
            self.jsonl = open(path, "w")  # noqa: SIM115 - closed in close()
            self.jsonl.writelines(kept)
            self.tensorboard = SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.active:
            return
        self.jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self.jsonl.flush()
        for key, value in scalars.items():
            self.tensorboard.add_scalar(key, value, step)

    def close(self) -> None:
        if self.active:
            self.jsonl.close()
            self.tensorboard.close()
