"""Shared fixtures: a real Kafka broker for the test session, and unique topics on it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Mapping

import pytest

from rt_training.ops.kafka_local import (
    LocalKafkaConfig,
    external_bootstrap,
    free_port,
    start_broker,
    stop_broker,
)
from rt_training.stream.client import KafkaSettings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the broker carry the ``kafka`` marker, so ``-m "not kafka"`` runs without Java."""
    for item in items:
        if "kafka_broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaSettings]:
    """The cluster in ``KAFKA_BOOTSTRAP_SERVERS``, else a local KRaft broker on a free port, stopped at the end
    of the session (only the process this fixture started)."""
    if external_bootstrap():
        yield KafkaSettings.from_env()
        return
    config = LocalKafkaConfig(data_dir=tmp_path_factory.mktemp("kafka"), port=free_port())
    started = start_broker(config)
    try:
        yield started.settings()
    finally:
        stop_broker(config)


TopicFactory = Callable[..., str]


@pytest.fixture
def topic_factory(kafka_broker: KafkaSettings, request: pytest.FixtureRequest) -> Iterator[TopicFactory]:
    """``make(partitions=1, config=None) -> name``: creates a topic named after the test plus a random suffix,
    deleted when the test ends."""
    from rt_training.stream.admin import create_topic, delete_topic

    created: list[str] = []
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:180]

    def make(partitions: int = 1, config: Mapping[str, str] | None = None) -> str:
        name = f"{stem}-{uuid.uuid4().hex[:12]}"
        create_topic(kafka_broker, name, partitions, config)
        created.append(name)
        return name

    yield make
    for name in created:
        delete_topic(kafka_broker, name)
