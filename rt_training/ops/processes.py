"""Local process checks shared by the operations code (the local broker, the run launcher)."""

from __future__ import annotations

import os
from pathlib import Path


def process_alive(pid: int) -> bool:
    """Is ``pid`` a live process? A zombie (exited, not yet reaped) is not. Without /proc, any existing pid is."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        if Path("/proc/self").is_dir():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def process_args(pid: int) -> list[str]:
    """The command line of ``pid`` (empty when it cannot be read)."""
    try:
        raw = (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
