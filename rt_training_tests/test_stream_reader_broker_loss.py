"""A broker that dies, hangs or stops sending mid-read is reported within seconds, on a dedicated real broker."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from rt_training.ops.kafka_local import LocalKafkaConfig, free_port, read_state, start_broker, stop_broker
from rt_training.ops.processes import process_alive
from rt_training.stream import reader
from rt_training.stream.admin import create_topic
from rt_training.stream.client import KafkaSettings, make_producer
from rt_training.stream.reader import DEFAULT_STALL_TIMEOUT_S, ReadStalledError, read_range

DETECT_WITHIN_S = 15.0
RECORDS = 200


@pytest.fixture
def broker(tmp_path) -> Iterator[tuple[LocalKafkaConfig, KafkaSettings, str]]:
    """A broker of this test alone (it is killed), with ``RECORDS`` records in partition 0 of a new topic."""
    config = LocalKafkaConfig(data_dir=tmp_path / "kafka", port=free_port())
    settings = start_broker(config).settings()
    try:
        topic = "loss"
        create_topic(settings, topic, 1)
        producer = make_producer(settings)
        for i in range(RECORDS):
            producer.send(topic, value=f"v{i}".encode(), partition=0)
        producer.flush()
        producer.close()
        yield config, settings, topic
    finally:
        pid = _pid(config)
        if pid is not None and process_alive(pid):
            os.kill(pid, signal.SIGCONT)  # a broker stopped with SIGSTOP must run again to take SIGTERM
        stop_broker(config)


def _pid(config: LocalKafkaConfig) -> int | None:
    state = read_state(config.state_file)
    return None if state is None else state.pid


def _signal_after_plan(
    monkeypatch: pytest.MonkeyPatch, config: LocalKafkaConfig, sig: signal.Signals
) -> list[float]:
    """Send ``sig`` to the broker once the reader has planned its ranges (before its first fetch); the list
    receives the monotonic time of the signal."""
    real_plan = reader._plan
    sent: list[float] = []

    def plan_then_signal(*args, **kwargs):
        planned = real_plan(*args, **kwargs)
        pid = _pid(config)
        assert pid is not None
        os.kill(pid, sig)
        sent.append(time.monotonic())
        return planned

    monkeypatch.setattr(reader, "_plan", plan_then_signal)
    return sent


def test_broker_killed_mid_read_is_reported_within_15s(broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL after the reader planned its range: nothing answers the probe, so the stall error says the broker
    is unreachable without waiting for the stall timeout."""
    config, settings, topic = broker
    killed = _signal_after_plan(monkeypatch, config, signal.SIGKILL)
    with pytest.raises(ReadStalledError) as err:
        read_range(settings, topic, 0, 0, RECORDS)
    waited = time.monotonic() - killed[0]
    print(f"\nbroker SIGKILL -> {type(err.value).__name__} after {waited:.1f}s")
    assert waited < DETECT_WITHIN_S
    assert str(err.value).startswith(
        f"reading topic 'loss' partition 0 stalled at offset 0 before the range's end {RECORDS}: no progress for "
    )
    assert str(err.value).endswith(
        f"s. Kafka at {settings.bootstrap_servers} is unreachable (the broker stopped?). Nothing was committed; "
        "the run can be retried."
    )
    assert (err.value.position, err.value.end) == (0, RECORDS)
    assert err.value.waited_s < DETECT_WITHIN_S


def test_hung_broker_mid_read_is_reported_within_15s(broker, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGSTOP: the kernel still accepts connections but the broker answers nothing, which the probe counts as
    unreachable."""
    config, settings, topic = broker
    stopped = _signal_after_plan(monkeypatch, config, signal.SIGSTOP)
    with pytest.raises(ReadStalledError, match=r"is unreachable \(the broker stopped\?\)") as err:
        read_range(settings, topic, 0, 0, RECORDS)
    waited = time.monotonic() - stopped[0]
    print(f"\nbroker SIGSTOP -> {type(err.value).__name__} after {waited:.1f}s")
    assert waited < DETECT_WITHIN_S
    assert err.value.position == 0


def test_live_broker_that_sends_nothing_is_a_stall_within_15s(
    broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The partition is paused right after the reader's seek, so the broker answers every probe but the read never
    moves: the stall error names a broker that accepts connections, after the default stall timeout."""
    _config, settings, topic = broker
    real_make_consumer = reader.make_consumer

    def consumer_that_never_fetches(*args, **kwargs):
        consumer = real_make_consumer(*args, **kwargs)
        real_seek = consumer.seek

        def seek_then_pause(tp, offset):
            real_seek(tp, offset)
            consumer.pause(tp)

        consumer.seek = seek_then_pause
        return consumer

    monkeypatch.setattr(reader, "make_consumer", consumer_that_never_fetches)
    started = time.monotonic()
    with pytest.raises(
        ReadStalledError, match=f"Kafka at {settings.bootstrap_servers} accepts connections"
    ) as err:
        read_range(settings, topic, 0, 0, RECORDS)
    waited = time.monotonic() - started
    print(f"\nlive broker, no data -> {type(err.value).__name__} after {waited:.1f}s")
    assert DEFAULT_STALL_TIMEOUT_S <= err.value.waited_s < DETECT_WITHIN_S
    assert waited < DETECT_WITHIN_S


def test_micro_batch_with_its_broker_killed_fails_within_15s(
    broker, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """The same through the micro-batch the ingest job runs, with its default stall timeout."""
    from rt_training.ingest.batch import LakeLocation, run_micro_batch
    from rt_training.stream.planner import OffsetRange
    from rt_training_tests.ingest_support import spec_for

    config, settings, topic = broker
    spec = spec_for(topic, partitions=1)
    lake = LakeLocation(str(tmp_path / "lake"))
    killed = _signal_after_plan(monkeypatch, config, signal.SIGKILL)
    with pytest.raises(ReadStalledError, match=r"is unreachable \(the broker stopped\?\)"):
        run_micro_batch(settings, spec, lake, [OffsetRange(topic, 0, 0, RECORDS)], "killed-broker")
    waited = time.monotonic() - killed[0]
    print(f"\nmicro-batch, broker SIGKILL -> ReadStalledError after {waited:.1f}s")
    assert waited < DETECT_WITHIN_S
