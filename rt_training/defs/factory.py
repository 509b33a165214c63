"""Build every Dagster definition of one pipeline from its spec."""

from __future__ import annotations

from typing import Any

import dagster as dg

from rt_training.defs.ingest import (
    build_ingest_assets,
    build_ingest_job,
    build_ingest_sensor,
    kafka_topic_spec,
)
from rt_training.defs.resources import KafkaResource, LakeResource
from rt_training.spec import PipelineSpec


def build_definitions(spec: PipelineSpec, resources: dict[str, Any] | None = None) -> dg.Definitions:
    """Assets, checks, jobs, sensors and schedules of ``spec``'s pipeline; ``resources`` replace the defaults
    (Kafka from ``KAFKA_BOOTSTRAP_SERVERS``, the lake from ``RT_TRAINING_LAKE``)."""
    ingest_job = build_ingest_job(spec)
    return dg.Definitions(
        assets=[kafka_topic_spec(spec), build_ingest_assets(spec)],
        jobs=[ingest_job],
        sensors=[build_ingest_sensor(spec, ingest_job)],
        resources=resources or {"kafka": KafkaResource.from_env(), "lake": LakeResource.from_env()},
    )
