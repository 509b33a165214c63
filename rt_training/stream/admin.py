"""Topic administration: idempotent create and delete, partition counts from cluster metadata.

Creating a topic that already exists with the requested partition count is a no-op, so setup code (the demo,
tests, deployment scripts) can run any number of times.
"""

from __future__ import annotations

from collections.abc import Mapping

from rt_training.stream.client import KafkaSettings, make_admin, translate_timeouts


class TopicConflictError(RuntimeError):
    """A topic exists with a shape (partition count) other than the one asked for."""


def partition_count(settings: KafkaSettings, name: str) -> int | None:
    """Number of partitions of topic ``name`` per the cluster's metadata, or None if it does not exist."""
    admin = make_admin(settings)
    try:
        with translate_timeouts(settings):
            return _partition_count(admin, name)
    finally:
        admin.close()


def create_topic(
    settings: KafkaSettings,
    name: str,
    partitions: int,
    config: Mapping[str, str] | None = None,
    replication_factor: int = 1,
) -> bool:
    """Create topic ``name`` and wait until every partition has a leader.

    Returns True when it created the topic, False when it already existed with ``partitions`` partitions
    (its configuration is then left as it is). Raises :class:`TopicConflictError` when it exists with
    another partition count, and :class:`~rt_training.stream.client.KafkaUnreachableError` when no broker
    answers.
    """
    from kafka.errors import TopicAlreadyExistsError

    if partitions < 1:
        raise ValueError(f"topic {name!r}: partitions must be at least 1, got {partitions}")
    admin = make_admin(settings)
    try:
        with translate_timeouts(settings):
            existing = _partition_count(admin, name)
            if existing is None:
                request = {
                    name: {
                        "num_partitions": partitions,
                        "replication_factor": replication_factor,
                        "configs": {str(k): str(v) for k, v in (config or {}).items()},
                    }
                }
                try:
                    admin.create_topics(
                        request,
                        timeout_ms=int(settings.request_timeout_s * 1000),
                        wait_for_metadata=True,
                    )
                    return True
                except TopicAlreadyExistsError:
                    existing = _partition_count(admin, name)
            if existing != partitions:
                raise TopicConflictError(
                    f"topic {name!r} already exists on {settings.bootstrap_servers} with {existing} partitions, "
                    f"not {partitions}; use another topic name, or delete the topic first."
                )
            return False
    finally:
        admin.close()


def delete_topic(settings: KafkaSettings, name: str) -> bool:
    """Delete topic ``name``; returns False when there was no such topic."""
    from kafka.errors import UnknownTopicOrPartitionError

    admin = make_admin(settings)
    try:
        with translate_timeouts(settings):
            try:
                admin.delete_topics([name], timeout_ms=int(settings.request_timeout_s * 1000))
            except UnknownTopicOrPartitionError:
                return False
            return True
    finally:
        admin.close()


def _partition_count(admin, name: str) -> int | None:
    from kafka.errors import UnknownTopicOrPartitionError, for_code

    (topic,) = admin.describe_topics([name])
    error = for_code(topic.get("error_code", 0))
    if error is UnknownTopicOrPartitionError:
        return None
    if topic.get("error_code", 0):
        raise error(f"describing topic {name!r}")
    return len(topic["partitions"])
