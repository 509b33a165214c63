"""``rt-training metrics serve`` as a user starts it: read /metrics once, then Ctrl-C (SIGINT)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Served:
    """The /metrics body, the command's stderr (its first line included) and its exit code after SIGINT."""

    body: str
    stderr: str
    returncode: int


def serve_metrics_once(
    options: list[str],
    *,
    env: Mapping[str, str] | None = None,
    preexec_fn: Callable[[], object] | None = None,
    stop_within_s: float = 90.0,
) -> Served:
    """Start ``rt-training metrics serve --port 0 <options>``, read /metrics once and send SIGINT.

    Fails with the command's stderr when it prints no URL or does not exit within ``stop_within_s`` of the
    SIGINT (generous: on a busy machine closing the exporter's Kafka consumer has taken over 20 s).
    """
    command = [str(Path(sys.executable).parent / "rt-training"), "metrics", "serve", "--port", "0", *options]
    proc = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        text=True,
        env=None if env is None else dict(env),
        preexec_fn=preexec_fn,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()
    try:
        url = re.search(r"at (http://\S+/metrics)", first)
        assert url, f"metrics serve printed no URL: {first!r}"
        with urllib.request.urlopen(url.group(1), timeout=30) as response:
            body = response.read().decode()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, rest = proc.communicate(timeout=stop_within_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, rest = proc.communicate()
            raise AssertionError(
                f"metrics serve did not exit within {stop_within_s:.0f} s of SIGINT; its stderr:\n{first}{rest}"
            ) from None
    return Served(body, first + rest, proc.returncode)
