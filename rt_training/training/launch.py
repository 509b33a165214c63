"""What a training run is launched with: the entry point's job config, built from the lake's state, and its command.

The ``model_candidate`` asset plans a run here and executes the command through Dagster Pipes; nothing here
imports Dagster or torch. A plan trains on one training-set snapshot and is judged on the silver rows whose
event time is after that snapshot's cut (see :mod:`rt_training.sampling.training_set`), at the silver version
read when the run is planned. Its lineage names the silver version the snapshot was drawn from and, per Kafka
partition, the offsets of the silver rows it could draw from.

The job config and the result are kept next to the checkpoints (``<checkpoints>/jobs/<run id>.job.json`` and
``.result.json``), so any run can be repeated by hand with the printed command.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from rt_training.ingest.batch import LakeLocation
    from rt_training.sampling.training_set import TrainingSetInfo
    from rt_training.spec.models import PipelineSpec

JOBS_DIR = "jobs"
ENTRYPOINT_MODULE = "rt_training.training.entrypoint"


@dataclass(frozen=True)
class WarmStart:
    """The checkpoint a run starts from (the champion): its id, path and the sha256 the registry recorded."""

    checkpoint_id: str
    path: str
    sha256: str


@dataclass(frozen=True)
class LaunchPlan:
    """A planned training run: the job config (as written to ``config_path``), its command and environment."""

    config: dict[str, Any]
    config_path: Path
    result_path: Path
    command: list[str]
    env: dict[str, str]
    holdout_silver_version: int
    warm_start: WarmStart | None

    def command_line(self) -> str:
        return " ".join(self.command)


def silver_offset_ranges(
    silver_uri: str,
    version: int,
    cut: dt.datetime,
    time_field: str,
    storage_options: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Per Kafka partition, ``[start, end)`` of the offsets of silver rows (at ``version``) with event time up to
    ``cut``.

    These are the rows a training-set snapshot with that cut could draw from. An offset inside a range that is not
    among them went to dead letters, or is an event after the cut (held out) that arrived before a late one.
    """
    from deltalake import DeltaTable

    table = DeltaTable(silver_uri, version=version, storage_options=storage_options)
    rows = table.to_pyarrow_dataset().to_table(
        columns=["_topic", "_partition", "_offset"],
        filter=pc.field(time_field) <= pa.scalar(cut, pa.timestamp("us", tz="UTC")),
    )
    if rows.num_rows == 0:
        return []
    spans = rows.group_by(["_topic", "_partition"]).aggregate([("_offset", "min"), ("_offset", "max")])
    return sorted(
        (
            {
                "topic": r["_topic"],
                "partition": int(r["_partition"]),
                "start": int(r["_offset_min"]),
                "end": int(r["_offset_max"]) + 1,
            }
            for r in spans.to_pylist()
        ),
        key=lambda r: (r["topic"], r["partition"]),
    )


def training_command(
    config_path: str | Path, nproc_per_node: int = 1, python: str = sys.executable
) -> list[str]:
    """``python -m rt_training.training.entrypoint --config ...``, under torchrun for more than one process."""
    if nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be at least 1, got {nproc_per_node}")
    tail = ["-m", ENTRYPOINT_MODULE, "--config", str(config_path)]
    if nproc_per_node == 1:
        return [python, *tail]
    # torch.distributed.run is what the torchrun script runs; invoking it through this interpreter keeps the
    # ranks in the same environment as the orchestrator.
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc_per_node),
        *tail,
    ]


def plan_training_run(
    spec: PipelineSpec,
    lake: LakeLocation,
    *,
    training_set: TrainingSetInfo,
    warm_start: WarmStart | None,
    run_id: str,
    drift_report: str | None = None,
    nproc_per_node: int = 1,
    device: str = "auto",
    max_steps: int | None = None,
    threads: int = 1,
    log_every: int = 50,
    asset_key: str | None = None,
) -> LaunchPlan:
    """Write the job config of a run on ``training_set`` and return how to launch it.

    The config is validated by the entry point's own schema before it is written, so a bad value fails here,
    not in a subprocess.

    Raises
    ------
    FileNotFoundError
        When the pipeline has no silver table (there would be nothing to judge the candidate on).
    """
    from rt_training.lake.tables import checkpoints_dir, open_table
    from rt_training.training.entrypoint import JobConfig

    options = dict(lake.storage_options) if lake.storage_options else None
    silver_uri = lake.uri(spec.name, "silver")
    silver = open_table(silver_uri, options)
    if silver is None:
        raise FileNotFoundError(f"no silver table at {silver_uri}: ingest events before training")
    output_dir = Path(checkpoints_dir(spec.name, lake.root))
    jobs = output_dir / JOBS_DIR
    config_path, result_path = jobs / f"{run_id}.job.json", jobs / f"{run_id}.result.json"
    config: dict[str, Any] = {
        "spec": spec.model_dump(mode="json", by_alias=True),
        "training_set": {"uri": training_set.uri, "version": training_set.version},
        "holdout": {"uri": silver_uri, "version": silver.version(), "after": training_set.cut.isoformat()},
        "init_checkpoint": None
        if warm_start is None
        else {"path": warm_start.path, "sha256": warm_start.sha256},
        "output_dir": str(output_dir),
        "result_path": str(result_path),
        "device": device,
        "lineage": {
            "silver_versions": {"silver": training_set.silver_version},
            "kafka_offsets": silver_offset_ranges(
                silver_uri, training_set.silver_version, training_set.cut, spec.time_field, options
            ),
            "drift_report": drift_report,
        },
        "max_steps": max_steps,
        "log_every": log_every,
        "threads": threads,
        "asset_key": asset_key,
    }
    JobConfig.model_validate(config)
    jobs.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(config, indent=2))
    return LaunchPlan(
        config=config,
        config_path=config_path,
        result_path=result_path,
        command=training_command(config_path, nproc_per_node),
        env={"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"},
        holdout_silver_version=silver.version(),
        warm_start=warm_start,
    )


def min_rows_for_first_champion(spec: PipelineSpec) -> int:
    """Silver rows with event time up to the holdout cut needed before the first training: a few batches' worth
    (the first-champion sensor and the backtest wait for them)."""
    return max(1000, spec.training.batch_size * 4)


@dataclass(frozen=True)
class FirstChampionCheck:
    """Whether silver can train and judge a first champion: ``waiting`` says why not yet (``None``: it can)."""

    cut: dt.datetime | None
    ready_rows: int
    held_out_rows: int
    waiting: str | None

    @property
    def reason(self) -> str:
        """Why a first training starts (or the reason it waits)."""
        if self.waiting is not None:
            return self.waiting
        assert self.cut is not None
        return f"no champion yet; {self.ready_rows} silver rows up to the holdout cut {self.cut.isoformat()}"


def first_champion_check(spec: PipelineSpec, silver: DeltaTable | None) -> FirstChampionCheck:
    """The rule of the first-champion sensor (and the backtest): enough silver rows with event time up to the
    holdout cut to train on (:func:`min_rows_for_first_champion`), and ``training.min_holdout_rows`` after it
    for the gate to judge on."""
    from rt_training.eventtime import event_clock, rows_after, rows_up_to

    if silver is None:
        return FirstChampionCheck(None, 0, 0, "no silver table yet")
    cut = event_clock(spec, silver).cut(spec.training.holdout_window_s)
    if cut is None:
        return FirstChampionCheck(None, 0, 0, "silver has no rows yet")
    needed = min_rows_for_first_champion(spec)
    ready = rows_up_to(silver, spec.time_field, cut)
    if ready < needed:
        waiting = f"{ready} silver rows with event time up to the holdout cut {cut.isoformat()}; waiting for {needed}"
        return FirstChampionCheck(cut, ready, 0, waiting)
    held_out = rows_after(silver, spec.time_field, cut)
    if held_out < spec.training.min_holdout_rows:
        waiting = (
            f"{held_out} silver rows in the held-out window after {cut.isoformat()}; the gate needs "
            f"training.min_holdout_rows {spec.training.min_holdout_rows}"
        )
        return FirstChampionCheck(cut, ready, held_out, waiting)
    return FirstChampionCheck(cut, ready, held_out, None)


def champion_exists(registry_uri: str, storage_options: dict[str, str] | None = None) -> bool:
    """Whether the model registry has ever promoted a checkpoint (a rollback never removes the last champion).

    Reads one column of the registry table, without torch: cheap enough for a sensor tick.
    """
    from rt_training.lake.tables import open_table

    table = open_table(registry_uri, storage_options)
    if table is None:
        return False
    events = table.to_pyarrow_table(columns=["event"]).column("event")
    return bool(pc.any(pc.equal(events, "promoted")).as_py())
