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
    """Write what the run's process looked like when the op started, then sleep.

    It also appends a row to a Delta table beside the report and counts the table's rows: deltalake's runtime
    panics in a process forked after the runtime started, so this proves the warm process never started it.
    """
    already_imported = "deltalake" in sys.modules
    import deltalake
    import pyarrow as pa

    table = str(Path(config.path).with_suffix(".delta"))
    deltalake.write_deltalake(table, pa.table({"pid": [os.getpid()]}), mode="append")
    rows = deltalake.DeltaTable(table).to_pyarrow_table().num_rows
    Path(config.path).write_text(
        json.dumps({"pid": os.getpid(), "deltalake_already_imported": already_imported, "delta_rows": rows})
    )
    time.sleep(config.sleep_s)


@dg.job(executor_def=dg.in_process_executor)
def report_job() -> None:
    report()
