"""Ctrl-C stops a long-running command even when it was started with SIGINT ignored (a script's background job,
``nohup``), as Dagster's run termination and the demo's shutdown rely on."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path


def test_metrics_serve_stops_on_sigint_although_started_with_sigint_ignored(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "rt-training"), "metrics", "serve", "--port", "0", "--no-kafka",
         "--lake", str(tmp_path / "lake")],
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        url = re.search(r"at (http://\S+/metrics)", line)
        assert url, line
        with urllib.request.urlopen(url.group(1), timeout=30) as response:
            assert b"rt_training_" in response.read()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
