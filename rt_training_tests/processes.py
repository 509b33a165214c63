"""Stopping the processes a test started: by pid, SIGTERM (or another signal) first, then SIGKILL.

Cleanup runs in ``finally:`` blocks, where an exception would replace the test's own failure; so these helpers
never raise. What went wrong while stopping is logged as a warning instead, naming the process and its pid.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess

log = logging.getLogger(__name__)


def stop_process(
    proc: subprocess.Popen,
    name: str,
    *,
    sig: int = signal.SIGTERM,
    timeout_s: float = 30.0,
    group: bool = False,
) -> int | None:
    """Send ``sig`` to ``proc`` (to its process group with ``group``, for one started with
    ``start_new_session=True``), wait ``timeout_s``, then SIGKILL and wait again; returns the exit code, or
    ``None`` when even SIGKILL did not end it within 30 s. Never raises."""
    for signum, wait_s in ((sig, timeout_s), (signal.SIGKILL, 30.0)):
        if proc.poll() is not None:
            if group:
                _kill_leftovers(proc, name)
            return proc.returncode
        try:
            if group:
                os.killpg(proc.pid, signum)
            else:
                proc.send_signal(signum)
        except ProcessLookupError:
            pass
        except OSError as exc:
            log.warning(
                "could not signal %s (pid %d) with %s: %r", name, proc.pid, signal.Signals(signum).name, exc
            )
        try:
            return proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            log.warning(
                "%s (pid %d) still running %.0f s after %s",
                name,
                proc.pid,
                wait_s,
                signal.Signals(signum).name,
            )
    return None


def _kill_leftovers(proc: subprocess.Popen, name: str) -> None:
    """SIGKILL what is left of the process group of ``proc``, whose leader has exited (its pid stays reserved
    while the group has members, so this signals nothing else)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except OSError as exc:
        log.warning("could not kill what is left of %s's process group %d: %r", name, proc.pid, exc)
