"""Local process checks shared by the operations code (the local broker, the run launcher)."""

from __future__ import annotations

import os
from pathlib import Path


def process_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, the state first (so field N of proc(5) is index
    N - 3: 1 the parent pid, 19 the start time); None when it cannot be read (no such process, no /proc)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def process_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: with the pid, it names one process, not whichever
    process reuses the pid later. None when it cannot be read."""
    fields = process_stat(pid)
    return None if fields is None else fields[19]


def process_alive(pid: int, start_time: str | None = None) -> bool:
    """Is ``pid`` a live process (and, given ``start_time``, the one started then)? A zombie (exited, not yet
    reaped) is not. Without /proc, any existing pid is."""
    fields = process_stat(pid)
    if fields is None:
        if Path("/proc/self").is_dir():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return fields[0] not in ("Z", "X") and (start_time is None or fields[19] == start_time)


def process_args(pid: int) -> list[str]:
    """The command line of ``pid`` (empty when it cannot be read)."""
    try:
        raw = (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
