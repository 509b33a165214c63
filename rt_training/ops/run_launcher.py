"""A Dagster run launcher for one machine that starts each run from a warm process.

Dagster's ``DefaultRunLauncher`` has the code server start every run in a fresh interpreter, which imports
dagster, its storage layer and the run's libraries again. On two cores that is 3-4 s from launch to run start
and, measured with the ingest benchmark, more than half of the CPU a micro-batch run uses. This launcher keeps
one process (:mod:`rt_training.ops.run_zygote`) that has imported those modules once, and forks each run's
process from it; the run then executes ``dagster api execute_run``, the command Dagster's Docker and Kubernetes
launchers run. No user code is preloaded, so each run loads the code location afresh and edits take effect as
with the default launcher. If the warm process cannot be started or dies, runs start as
``python -m dagster api execute_run`` instead (slower, same result), and the engine event says so.

Enable it in ``dagster.yaml``::

    run_launcher:
      module: rt_training.ops.run_launcher
      class: ForkserverRunLauncher
      config:
        preload: [dagster, deltalake, kafka, pyarrow.dataset]   # optional; the default covers rt_training

It needs the daemon (or webserver) and the runs on one machine and in one Python environment, as with
``dagster dev``. In Kubernetes or Docker use their launchers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from dagster import Array, Field
from dagster._core.events import EngineEventData
from dagster._core.launcher.base import (
    CheckRunHealthResult,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._serdes import ConfigurableClass, ConfigurableClassData

from rt_training.ops.processes import process_alive, process_start_time

PID_TAG = "rt_training/run_worker_pid"
"""Run tag with the pid of the run's process (termination and run monitoring use it)."""

DEFAULT_PRELOAD = (
    "dagster",
    "dagster._cli.api",
    "dagster._core.storage.runs.sqlite",
    "dagster._core.storage.event_log.sqlite",
    "dagster._core.storage.schedules.sqlite",
    "dagster._core.execution.api",
    "pyarrow",
    "pyarrow.compute",
    "pyarrow.dataset",
    "deltalake",
    "kafka",
    "msgspec",
    "numpy",
    "pydantic",
    "yaml",
)

_READY_TIMEOUT_S = 60.0
_FORK_TIMEOUT_S = 30.0


class ForkserverRunLauncher(RunLauncher, ConfigurableClass):
    """Forks each run's process from a process that has already imported dagster and the heavy libraries."""

    def __init__(self, preload: list[str] | None = None, inst_data: ConfigurableClassData | None = None):
        self._inst_data = inst_data
        self._preload = list(DEFAULT_PRELOAD if preload is None else preload)
        self._lock = threading.Lock()
        self._zygote: subprocess.Popen[str] | None = None
        self._zygote_error: str | None = None
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {
            "preload": Field(
                Array(str),
                is_required=False,
                description="Modules the warm process imports once (default: dagster and rt_training's libraries).",
            )
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: dict[str, Any]
    ) -> ForkserverRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    # --- launching --------------------------------------------------------------------------------------------

    def launch_run(self, context: LaunchRunContext) -> None:
        from dagster._grpc.types import ExecuteRunArgs
        from dagster._serdes import serialize_value

        run = context.dagster_run
        if run.job_code_origin is None:
            raise ValueError(f"run {run.run_id} has no code origin to load its job from")
        args = serialize_value(
            ExecuteRunArgs(
                job_origin=run.job_code_origin,
                run_id=run.run_id,
                instance_ref=self._instance.get_ref(),
                set_exit_code_on_failure=True,
            )
        )
        pid, how = self._fork(args)
        if pid is None:
            pid = subprocess.Popen([sys.executable, "-m", "dagster", "api", "execute_run", args]).pid
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(pid)})
        self._instance.report_engine_event(
            f"Started the run's process (pid {pid}) {how}.",
            run,
            EngineEventData.in_process(pid),
            cls=self.__class__,
        )

    def _fork(self, args: str) -> tuple[int | None, str]:
        """Ask the warm process for a child running ``args``: (pid, how), or (None, why not) to start it cold."""
        with self._lock:
            zygote = self._ready_zygote()
            if zygote is None:
                return None, f"as a new interpreter: the warm process is unavailable ({self._zygote_error})"
            try:
                assert zygote.stdin is not None and zygote.stdout is not None
                zygote.stdin.write(args + "\n")
                zygote.stdin.flush()
                answer = _readline(zygote, _FORK_TIMEOUT_S)
            except OSError as exc:
                answer = f"error {exc}"
            if answer.isdigit():
                return int(answer), "forked from the warm process"
            self._zygote_error = answer or f"it exited with status {zygote.poll()}"
            self._stop_zygote()
            return None, f"as a new interpreter: the warm process failed ({self._zygote_error})"

    def _ready_zygote(self) -> subprocess.Popen[str] | None:
        if self._zygote is not None and self._zygote.poll() is None:
            return self._zygote
        zygote = subprocess.Popen(
            [sys.executable, "-m", "rt_training.ops.run_zygote", *self._preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        ready = _readline(zygote, _READY_TIMEOUT_S)
        if ready != "ready":
            zygote.kill()
            zygote.wait()
            self._zygote_error = f"it did not start within {_READY_TIMEOUT_S:.0f}s (said {ready!r})"
            return None
        self._zygote = zygote
        return zygote

    def _stop_zygote(self) -> None:
        zygote, self._zygote = self._zygote, None
        if zygote is None:
            return
        if zygote.stdin is not None:
            zygote.stdin.close()  # it exits at the end of its input; runs it started carry on
        try:
            zygote.wait(timeout=10)
        except subprocess.TimeoutExpired:
            zygote.kill()
            zygote.wait()

    def dispose(self) -> None:
        with self._lock:
            self._stop_zygote()

    # --- termination and monitoring ---------------------------------------------------------------------------

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        pid = _pid_of(run)
        # A run that has just ended is left as it ended: reported canceling, a finished run would show CANCELING.
        if run is None or pid is None or run.is_finished or not process_alive(pid):
            return False
        started = process_start_time(pid)
        self._instance.report_run_canceling(run)
        # The run's process turns SIGINT into an interrupt and reports the run as canceled.
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:  # it ended between the check and the signal; its own last event stands
            return False
        threading.Thread(
            target=_repeat_interrupt,
            args=(pid, started),
            name=f"terminate-{run_id[:8]}",
            daemon=True,
        ).start()
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: Any) -> CheckRunHealthResult:
        pid = _pid_of(run)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, f"run has no {PID_TAG} tag")
        if process_alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"the run's process (pid {pid}) is gone", run_worker_id=str(pid)
        )


def _pid_of(run: Any) -> int | None:
    value = None if run is None else run.tags.get(PID_TAG)
    return int(value) if value and value.isdigit() else None


def _readline(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """The next line of ``proc``'s stdout, or '' after ``timeout_s`` or at its end."""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline() if proc.stdout else ""))
    reader.daemon = True
    reader.start()
    reader.join(timeout_s)
    return line[0].strip() if line else ""


INTERRUPT_REPEAT_S = 5.0
INTERRUPT_REPEATS = 6


def _repeat_interrupt(pid: int, started: str | None) -> None:
    """Send SIGINT again every few seconds while the run's process lives.

    Dagster's handler raises the interrupt at the next bytecode, which may be inside a garbage-collection callback
    (measured: SQLAlchemy's ``_collection_gced``), where Python prints "Exception ignored" and drops it; the run
    would then go on and stay CANCELING. A second SIGINT lands elsewhere. A run that has ended is not signalled.
    """
    for _ in range(INTERRUPT_REPEATS):
        time.sleep(INTERRUPT_REPEAT_S)
        if not process_alive(pid, started):
            return
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
