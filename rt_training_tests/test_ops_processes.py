"""Process checks by pid: alive, not a zombie, and (given its start time) not a later process reusing the pid."""

from __future__ import annotations

import os
import subprocess
import time

from rt_training.ops.processes import process_alive, process_start_time, process_stat


def test_a_live_process_is_alive_only_with_its_own_start_time() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        started = process_start_time(proc.pid)
        assert started is not None and started.isdigit()
        assert process_stat(proc.pid)[1] == str(os.getpid())  # index 1: the parent pid
        assert process_alive(proc.pid)
        assert process_alive(proc.pid, started)
        assert not process_alive(proc.pid, str(int(started) + 1))  # another process that reused the pid
    finally:
        proc.kill()
        proc.wait()


def test_a_zombie_and_a_reaped_process_are_not_alive() -> None:
    proc = subprocess.Popen(["true"])
    deadline = time.monotonic() + 30
    while process_stat(proc.pid)[0] != "Z":  # exited, not yet reaped
        assert time.monotonic() < deadline, "the child did not exit within 30 s"
        time.sleep(0.05)
    assert not process_alive(proc.pid)
    proc.wait()
    assert process_stat(proc.pid) is None and process_start_time(proc.pid) is None
    assert not process_alive(proc.pid)
