"""Ctrl-C stops a long-running command even when it was started with SIGINT ignored (a script's background job,
``nohup``), as Dagster's run termination and the demo's shutdown rely on."""

from __future__ import annotations

import signal
from pathlib import Path

from rt_training_tests.metrics_support import serve_metrics_once


def test_metrics_serve_stops_on_sigint_although_started_with_sigint_ignored(tmp_path: Path) -> None:
    served = serve_metrics_once(
        ["--no-kafka", "--lake", str(tmp_path / "lake")],
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        stop_within_s=60.0,
    )
    assert "rt_training_" in served.body
    assert served.returncode == 0, served.stderr
