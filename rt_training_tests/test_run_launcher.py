"""ForkserverRunLauncher with a real Dagster instance: runs start forked from the warm process, are monitored and
terminated by pid, and start anyway when the warm process is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.launcher.base import LaunchRunContext, WorkerStatus

from rt_training.ops.run_launcher import PID_TAG, ForkserverRunLauncher
from rt_training_tests import launcher_jobs

DONE = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "telemetry: {enabled: false}\n"
        "run_launcher:\n"
        "  module: rt_training.ops.run_launcher\n"
        "  class: ForkserverRunLauncher\n"
        "  config: {preload: [dagster, deltalake]}\n"
    )
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst


def launch(instance: dg.DagsterInstance, out: Path, sleep_s: float = 0.0) -> str:
    recon = dg.reconstructable(launcher_jobs.report_job)
    run = instance.create_run_for_job(
        recon.get_definition(),
        run_config={"ops": {"report": {"config": {"path": str(out), "sleep_s": sleep_s}}}},
        job_code_origin=recon.get_python_origin(),
    )
    instance.launch_run(run.run_id, workspace=None)
    return run.run_id


def wait_for(
    instance: dg.DagsterInstance, run_id: str, statuses: set, timeout_s: float = 90.0
) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout_s
    while True:
        run = instance.get_run_by_id(run_id)
        if run.status in statuses:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run.status} after {timeout_s}s"
        time.sleep(0.2)


def engine_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [e.message for e in instance.all_logs(run_id) if e.is_dagster_event and e.message]


def test_runs_fork_from_the_warm_process_and_succeed(instance, tmp_path) -> None:
    launcher = instance.run_launcher
    assert isinstance(launcher, ForkserverRunLauncher)
    for i in range(2):
        out = tmp_path / f"run{i}.json"
        run_id = launch(instance, out)
        run = wait_for(instance, run_id, DONE)
        assert run.status == dg.DagsterRunStatus.SUCCESS, engine_messages(instance, run_id)
        seen = json.loads(out.read_text())
        assert run.tags[PID_TAG] == str(seen["pid"]) and seen["pid"] != os.getpid()
        assert seen["deltalake_already_imported"]  # preloaded by the warm process, not by this job
        assert seen["delta_rows"] == 1  # a forked run writes and reads Delta tables
        assert any("forked from the warm process" in m for m in engine_messages(instance, run_id))
        # The process exits shortly after it reports success; then the health check finds it gone.
        deadline = time.monotonic() + 30
        while launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING:
            assert time.monotonic() < deadline, "the run's process did not exit after the run succeeded"
            time.sleep(0.1)
        assert launcher.check_run_worker_health(run).status == WorkerStatus.FAILED


def test_a_running_run_is_healthy_and_terminates_as_canceled(instance, tmp_path) -> None:
    run_id = launch(instance, tmp_path / "slow.json", sleep_s=60)
    run = wait_for(instance, run_id, {dg.DagsterRunStatus.STARTED})
    launcher = instance.run_launcher
    assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
    assert launcher.terminate(run_id)
    run = wait_for(instance, run_id, DONE, timeout_s=60)
    assert run.status == dg.DagsterRunStatus.CANCELED
    assert not launcher.terminate(run_id)  # already gone


def test_a_run_that_has_just_succeeded_is_not_terminated(instance, tmp_path) -> None:
    """Termination that arrives after the run reported success, while its process is still exiting, leaves the run
    SUCCESS and the process alone (it used to report the finished run as CANCELING and signal it). A ``sleep``
    stands for the exiting process: a real one exits within milliseconds of its success."""
    exiting = subprocess.Popen(["sleep", "60"])
    try:
        recon = dg.reconstructable(launcher_jobs.report_job)
        run = instance.create_run_for_job(
            recon.get_definition(),
            run_config={"ops": {"report": {"config": {"path": str(tmp_path / "unused.json")}}}},
            status=dg.DagsterRunStatus.SUCCESS,
            tags={PID_TAG: str(exiting.pid)},
        )
        assert not instance.run_launcher.terminate(run.run_id)
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS
        assert not instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_CANCELING)
        assert exiting.poll() is None, "the process of a finished run was signalled"
    finally:
        exiting.kill()
        exiting.wait()


def test_a_dead_warm_process_is_replaced(instance, tmp_path) -> None:
    launcher = instance.run_launcher
    first = launch(instance, tmp_path / "a.json")
    assert wait_for(instance, first, DONE).status == dg.DagsterRunStatus.SUCCESS
    zygote = launcher._zygote
    assert zygote is not None
    os.kill(zygote.pid, signal.SIGKILL)
    zygote.wait()
    second = launch(instance, tmp_path / "b.json")
    assert wait_for(instance, second, DONE).status == dg.DagsterRunStatus.SUCCESS
    assert launcher._zygote is not None and launcher._zygote.pid != zygote.pid


def test_runs_start_cold_when_the_warm_process_cannot_start(tmp_path) -> None:
    launcher = ForkserverRunLauncher(preload=["dagster"])
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry: {enabled: false}\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        launcher.register_instance(instance)
        launcher._ready_zygote = lambda: None  # the warm process never answers
        launcher._zygote_error = "test"
        recon = dg.reconstructable(launcher_jobs.report_job)
        out = tmp_path / "cold.json"
        run = instance.create_run_for_job(
            recon.get_definition(),
            run_config={"ops": {"report": {"config": {"path": str(out)}}}},
            job_code_origin=recon.get_python_origin(),
        )
        launcher.launch_run(LaunchRunContext(run, None))
        done = wait_for(instance, run.run_id, DONE)
        assert done.status == dg.DagsterRunStatus.SUCCESS
        assert not json.loads(out.read_text())["deltalake_already_imported"]
        assert any("as a new interpreter" in m for m in engine_messages(instance, run.run_id))
