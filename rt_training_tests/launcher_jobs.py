"""Jobs that the run-launcher tests start in a process of their own (loaded by module name, as Dagster does)."""

import json
import os
import sys
import time
from pathlib import Path

import dagster as dg


class ReportConfig(dg.Config):
    path: str
    sleep_s: float = 0.0


@dg.op
def report(config: ReportConfig) -> None:
    """Write what the run's process looked like when the op started, then sleep."""
    Path(config.path).write_text(
        json.dumps({"pid": os.getpid(), "deltalake_already_imported": "deltalake" in sys.modules})
    )
    time.sleep(config.sleep_s)


@dg.job(executor_def=dg.in_process_executor)
def report_job() -> None:
    report()
