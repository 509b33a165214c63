"""Ingest: the Kafka offsets sensor and the micro-batch job that lands bronze, silver and dead letters.

A micro-batch is one run (not a partition), tagged with the offset ranges it covers, using the in-process
executor so a run starts in about two seconds. The work is done by :mod:`rt_training.ingest.batch`.
"""

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from rt_training.defs.resources import KafkaResource, LakeResource
from rt_training.spec import PipelineSpec
from rt_training.stream.planner import OffsetRange, plan_runs, ranges_key

INGEST_JOB = "ingest_job"
INGEST_TAG = "rt_training/ingest"
PIPELINE_TAG = "rt_training/pipeline"
RANGES_TAG = "rt_training/ranges"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
MAX_IN_FLIGHT = 2
"""Steady state: two micro-batches in flight, overlapping (``dagster.yaml`` lets two ingest runs of a pipeline run
at once): one commits while the next launches and reads. A backlog still becomes several runs in one tick."""


class OffsetRangeConfig(dg.Config):
    topic: str
    partition: int
    start: int
    end: int


class IngestConfig(dg.Config):
    """The offset ranges a micro-batch reads, ``[start, end)`` per partition (set by the sensor)."""

    ranges: list[OffsetRangeConfig]


@dataclass
class SensorCursor:
    """What the sensor remembers between ticks (stored as JSON in the Dagster cursor)."""

    planned_until: dict[str, int] = field(default_factory=dict)
    pending_since: float | None = None
    generation: int = 0

    @classmethod
    def parse(cls, text: str | None) -> "SensorCursor":
        return cls(**json.loads(text)) if text else cls()

    def dump(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


def _tp_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def run_request_for(spec: PipelineSpec, ranges: list[OffsetRange], generation: int) -> dg.RunRequest:
    key = ranges_key(ranges)
    return dg.RunRequest(
        run_key=f"{key}#{generation}",
        run_config={
            "ops": {"ingest_micro_batch": {"config": {"ranges": [r.to_dict() for r in sorted(ranges)]}}}
        },
        tags={INGEST_TAG: spec.name, PIPELINE_TAG: spec.name, RANGES_TAG: key[:1000]},
    )


def ranges_of(run_config: dict[str, Any]) -> list[OffsetRange]:
    """The offset ranges in an ingest run's config (as :func:`run_request_for` wrote them)."""
    op = run_config.get("ops", {}).get("ingest_micro_batch", {})
    return [OffsetRange(**r) for r in op.get("config", {}).get("ranges", [])]


def ingest_runs_in_flight(instance: dg.DagsterInstance, spec: PipelineSpec) -> Sequence[dg.RunRecord]:
    """The pipeline's ingest runs that are queued, starting or running."""
    return instance.get_run_records(
        dg.RunsFilter(job_name=INGEST_JOB, statuses=IN_FLIGHT, tags={PIPELINE_TAG: spec.name}), limit=50
    )


def earlier_batch_in_flight(
    instance: dg.DagsterInstance, spec: PipelineSpec, run_id: str, ranges: list[OffsetRange]
) -> str | None:
    """An in-flight ingest run of this pipeline with a range that ends at or before one of ``ranges`` starts."""
    starts = {(r.topic, r.partition): r.start for r in ranges}
    for record in ingest_runs_in_flight(instance, spec):
        run = record.dagster_run
        if run.run_id == run_id:
            continue
        for r in ranges_of(run.run_config):
            start = starts.get((r.topic, r.partition))
            if start is not None and r.end <= start:
                return f"run {run.run_id} ({r.topic}[{r.partition}] up to {r.end})"
    return None


def build_ingest_sensor(spec: PipelineSpec, job: Any) -> dg.SensorDefinition:
    policy = spec.ingest

    @dg.sensor(
        name="kafka_offsets_sensor",
        job=job,
        # The daemon's sensor loop runs every 5 s. An interval equal to the loop period skips every other loop
        # (elapsed is measured from the previous tick's end), so the sensor asks for 1 s and ticks every loop.
        minimum_interval_seconds=1,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Plans offset ranges of topic {spec.source.topic} from Kafka's end offsets and the offsets committed "
            f"in the Delta tables; launches a micro-batch when {policy.min_records} records are pending or the "
            f"oldest has waited {policy.max_wait_s}s, at most {policy.max_records_per_run} records a run."
        ),
    )
    def kafka_offsets_sensor(
        context: dg.SensorEvaluationContext, kafka: KafkaResource, lake: LakeResource
    ) -> dg.SensorResult | dg.SkipReason:
        from rt_training.ingest.batch import partition_states
        from rt_training.stream.client import KafkaConnectionProblem

        cursor = SensorCursor.parse(context.cursor)
        try:
            states = partition_states(kafka.settings(), spec, lake.location())
        except KafkaConnectionProblem as exc:
            raise dg.Failure(description=str(exc)) from exc
        in_flight = ingest_runs_in_flight(context.instance, spec)
        if not in_flight and any(
            cursor.planned_until.get(_tp_key(s.topic, s.partition), s.next_offset) > s.next_offset
            for s in states
        ):
            # Runs ended without committing what was planned (failed or were cancelled): plan again from the
            # tables, under a new generation so the run keys differ from the failed runs'.
            cursor.planned_until = {}
            cursor.generation += 1
        planned_until = {
            (s.topic, s.partition): cursor.planned_until[_tp_key(s.topic, s.partition)]
            for s in states
            if _tp_key(s.topic, s.partition) in cursor.planned_until
        }
        now = time.time()
        waited = None if cursor.pending_since is None else now - cursor.pending_since
        if len(in_flight) >= MAX_IN_FLIGHT:
            # One micro-batch runs and one waits: new records accumulate into the next batch instead of a queue
            # of small runs that each pay the run launch cost.
            context.update_cursor(cursor.dump())
            return dg.SkipReason(
                f"{len(in_flight)} micro-batches in flight; planning again when one finishes"
            )
        plan = plan_runs(
            states,
            planned_until=planned_until,
            min_records=policy.min_records,
            max_wait_s=policy.max_wait_s,
            max_records_per_run=policy.max_records_per_run,
            waited_s=waited,
            max_runs=10 - len(in_flight),
        )
        if not plan.runs:
            cursor.pending_since = (cursor.pending_since or now) if plan.pending else None
            context.update_cursor(cursor.dump())
            return dg.SkipReason(plan.reason)
        for run in plan.runs:
            for r in run:
                cursor.planned_until[_tp_key(r.topic, r.partition)] = r.end
        cursor.pending_since = None
        return dg.SensorResult(
            run_requests=[run_request_for(spec, run, cursor.generation) for run in plan.runs],
            cursor=cursor.dump(),
        )

    return kafka_offsets_sensor


def build_ingest_assets(spec: PipelineSpec) -> dg.AssetsDefinition:
    """``bronze_events``, ``silver_events`` and ``dead_letters``: one micro-batch writes all three."""
    topic_key = dg.AssetKey(["kafka", spec.source.topic])
    specs = [
        dg.AssetSpec(
            "bronze_events",
            deps=[topic_key],
            group_name="ingest",
            kinds={"deltalake"},
            description="Raw Kafka records (value bytes, key, topic/partition/offset/timestamp), exactly once.",
        ),
        dg.AssetSpec(
            "silver_events",
            deps=["bronze_events"],
            group_name="ingest",
            kinds={"deltalake"},
            description="Parsed, validated events: Kafka coordinates and every schema field, typed (no feature columns).",
        ),
        dg.AssetSpec(
            "dead_letters",
            deps=["bronze_events"],
            group_name="ingest",
            kinds={"deltalake"},
            description="Rejected records: raw bytes, Kafka coordinates and a machine-readable reason.",
        ),
    ]
    checks = [
        dg.AssetCheckSpec(
            "counts_reconcile",
            asset="silver_events",
            description="Per micro-batch: bronze rows = silver rows + dead letters (duplicates included).",
        ),
        dg.AssetCheckSpec(
            "no_offset_gaps",
            asset="bronze_events",
            description="Each commit's range starts where the previous commit of its partition ended.",
        ),
    ]

    @dg.multi_asset(
        name="ingest_micro_batch",
        specs=specs,
        check_specs=checks,
        can_subset=False,
        op_tags={"kind": "ingest"},
    )
    def ingest_micro_batch(
        context: dg.AssetExecutionContext, config: IngestConfig, kafka: KafkaResource, lake: LakeResource
    ):
        from rt_training.ingest.batch import run_micro_batch
        from rt_training.ingest.checks import offset_gaps, reconcile

        ranges = [OffsetRange(r.topic, r.partition, r.start, r.end) for r in config.ranges]
        if not ranges:
            raise dg.Failure(
                "no offset ranges in the run config; micro-batches are launched by kafka_offsets_sensor"
            )
        location = lake.location()
        context.log.info(f"reading {ranges_key(ranges)} ({sum(r.size for r in ranges)} offsets)")
        run_id = context.run.run_id
        report = run_micro_batch(
            kafka.settings(),
            spec,
            location,
            ranges,
            run_id,
            wait_for_turn=lambda: earlier_batch_in_flight(context.instance, spec, run_id, ranges),
            on_wait=lambda awaited, behind: context.log.info(
                f"read done; waiting for {awaited} to commit first ("
                + "; ".join(f"{t}: {w}" for t, w in behind.items())
                + ")"
            ),
        )
        if report.skipped:
            context.log.info("every table already holds these ranges: nothing to do (a replayed run)")
        else:
            context.log.info(
                f"{report.records} records: read {report.read_s:.2f}s, clean {report.clean_s:.2f}s, "
                f"commit {report.commit_s:.2f}s"
            )
        group = report.consumer_group
        if group is not None and group.error is not None:
            context.log.warning(f"offsets not committed to consumer group {group.group_id!r}: {group.error}")
        for table, key in (
            ("bronze", "bronze_events"),
            ("silver", "silver_events"),
            ("dead_letters", "dead_letters"),
        ):
            yield dg.MaterializeResult(asset_key=key, metadata=report.table_metadata(table))
        rec = reconcile(spec, location, ranges)
        yield dg.AssetCheckResult(
            asset_key="silver_events",
            check_name="counts_reconcile",
            passed=rec.ok,
            metadata={"bronze": rec.bronze, "silver": rec.silver, "dead_letters": rec.dead_letters},
            description=rec.describe(),
        )
        gaps = offset_gaps(location.uri(spec.name, "bronze"), location.storage_options)
        yield dg.AssetCheckResult(
            asset_key="bronze_events",
            check_name="no_offset_gaps",
            passed=not gaps,
            metadata={"breaks": len(gaps), "first": gaps[0] if gaps else ""},
        )

    return ingest_micro_batch


def build_ingest_job(spec: PipelineSpec) -> Any:
    return dg.define_asset_job(
        INGEST_JOB,
        selection=dg.AssetSelection.assets("bronze_events", "silver_events", "dead_letters"),
        executor_def=dg.in_process_executor,
        description=f"One micro-batch of topic {spec.source.topic} into bronze, silver and dead letters.",
        tags={INGEST_TAG: spec.name, PIPELINE_TAG: spec.name},
    )


def kafka_topic_spec(spec: PipelineSpec) -> dg.AssetSpec:
    """The source topic, shown upstream of bronze in the asset graph (Kafka owns it; nothing materializes it)."""
    return dg.AssetSpec(
        ["kafka", spec.source.topic],
        group_name="ingest",
        kinds={"kafka"},
        description=f"Kafka topic {spec.source.topic} ({spec.source.partitions} partitions in the spec).",
    )


def definitions(spec: PipelineSpec) -> dg.Definitions:
    job = build_ingest_job(spec)
    return dg.Definitions(
        assets=[kafka_topic_spec(spec), build_ingest_assets(spec)],
        jobs=[job],
        sensors=[build_ingest_sensor(spec, job)],
    )
