"""Helpers for ingest tests: a spec bound to a test topic, Definitions wired to the test broker and lake, and a
loop that plays the Dagster daemon's part (evaluate the sensor, execute the runs it requests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa

from rt_training.defs.factory import build_definitions
from rt_training.defs.resources import KafkaResource, LakeResource
from rt_training.ingest.batch import LakeLocation
from rt_training.lake.tables import open_table
from rt_training.spec import PipelineSpec, load_spec
from rt_training.stream.client import KafkaSettings


def spec_for(topic: str, partitions: int = 3, **ingest: Any) -> PipelineSpec:
    """The demo spec reading ``topic``, with ingest policy overrides."""
    spec = load_spec()
    return spec.model_copy(
        update={
            "source": spec.source.model_copy(update={"topic": topic, "partitions": partitions}),
            "ingest": spec.ingest.model_copy(update=ingest),
        }
    )


def resources(settings: KafkaSettings, lake_root: Path) -> dict[str, Any]:
    return {
        "kafka": KafkaResource(bootstrap_servers=settings.bootstrap_servers, connect_timeout_s=3.0),
        "lake": LakeResource(root=str(lake_root)),
    }


def definitions(spec: PipelineSpec, settings: KafkaSettings, lake_root: Path) -> dg.Definitions:
    return build_definitions(spec, resources(settings, lake_root))


@dataclass
class Daemon:
    """Evaluates ``kafka_offsets_sensor`` and executes the runs it requests, in order, in process."""

    defs: dg.Definitions
    instance: dg.DagsterInstance
    resources: dict[str, Any]
    cursor: str | None = None
    results: list[dg.ExecuteInProcessResult] = field(default_factory=list)
    queued: dict[str, str] = field(default_factory=dict)
    """run_key -> id of the not-started run the daemon would have created for a request (in flight until run)."""

    def tick(self) -> dg.SensorResult | dg.SkipReason:
        sensor = self.defs.get_sensor_def("kafka_offsets_sensor")
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, definitions=self.defs, resources=self.resources
        )
        result = sensor(context)
        if isinstance(result, dg.SensorResult):
            self.cursor = result.cursor
            job = self.defs.resolve_job_def("ingest_job")
            for request in result.run_requests:
                run = self.instance.create_run_for_job(
                    job,
                    run_config=request.run_config,
                    tags=request.tags,
                    status=dg.DagsterRunStatus.NOT_STARTED,
                )
                self.queued[request.run_key] = run.run_id
        else:
            self.cursor = context.cursor
        return result

    def run(self, request: dg.RunRequest, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
        """Execute a requested run (its queued placeholder leaves the queue)."""
        if request.run_key in self.queued:
            self.instance.delete_run(self.queued.pop(request.run_key))
        job = self.defs.resolve_job_def("ingest_job")
        result = job.execute_in_process(
            run_config=request.run_config,
            instance=self.instance,
            tags=request.tags,
            raise_on_error=raise_on_error,
        )
        self.results.append(result)
        return result

    def catch_up(self, max_ticks: int = 50) -> int:
        """Tick and run until the sensor says there is nothing new; returns the number of runs."""
        runs = 0
        for _ in range(max_ticks):
            result = self.tick()
            if isinstance(result, dg.SkipReason) or not result.run_requests:
                return runs
            for request in result.run_requests:
                self.run(request)
                runs += 1
        raise AssertionError(f"not caught up after {max_ticks} ticks")


def read_table(lake: LakeLocation, spec: PipelineSpec, table: str) -> pa.Table:
    dt = open_table(lake.uri(spec.name, table))
    assert dt is not None, f"table {table} was never written"
    return dt.to_pyarrow_table()
