"""Build every Dagster definition of one pipeline from its spec.

Each module of this package contributes a ``definitions(spec)`` function returning a ``dg.Definitions`` of its
own assets, checks, jobs, sensors and schedules; this factory merges them and binds the resources.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from rt_training.defs import drift, ingest, maintenance, observability, periodic, rebuild, training
from rt_training.defs.resources import KafkaResource, LakeResource
from rt_training.spec import PipelineSpec

PARTS = (
    ingest.definitions,
    training.definitions,
    drift.definitions,
    periodic.definitions,
    observability.definitions,
    maintenance.definitions,
    rebuild.definitions,
)


def default_resources() -> dict[str, Any]:
    """Kafka from ``KAFKA_BOOTSTRAP_SERVERS``, the lake from ``RT_TRAINING_LAKE``."""
    return {"kafka": KafkaResource.from_env(), "lake": LakeResource.from_env()}


def build_definitions(spec: PipelineSpec, resources: dict[str, Any] | None = None) -> dg.Definitions:
    """Assets, checks, jobs, sensors and schedules of ``spec``'s pipeline; ``resources`` replace the defaults."""
    return dg.Definitions.merge(
        *(part(spec) for part in PARTS),
        dg.Definitions(resources=resources or default_resources()),
    )
