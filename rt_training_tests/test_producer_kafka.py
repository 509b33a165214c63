"""The producer against a real broker: exactly the generated events arrive, bad records included, per-partition
order kept; the topic is created when missing; pacing holds the rate; an unreachable cluster is a clean error.

Tests that take the ``kafka_broker`` fixture are marked ``kafka`` by conftest; the others need no broker.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from rt_training.cli.main import cli
from rt_training.spec import PipelineSpec, load_spec
from rt_training.stream.admin import TopicConflictError, delete_topic, partition_count
from rt_training.stream.client import KafkaSettings, KafkaUnreachableError, make_consumer
from rt_training.stream.producer import TokenBucket, produce
from rt_training.stream.synthetic import DEFAULT_START_MS, EventGenerator, SimulatedClock


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec()


def read_topic(settings: KafkaSettings, topic: str, timeout_s: float = 60.0) -> dict[int, list]:
    """Every message of ``topic``, per partition in offset order, read from the beginning to the end offsets
    taken before reading (assign + seek; stops at the end offset, never by counting)."""
    from kafka import TopicPartition

    consumer = make_consumer(settings)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        out: dict[int, list] = {tp.partition: [] for tp in parts}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in parts):
            assert time.monotonic() < deadline, f"reading {topic} took over {timeout_s}s"
            for tp, messages in consumer.poll(timeout_ms=500).items():
                out[tp.partition] += [m for m in messages if m.offset < end[tp]]
        return out
    finally:
        consumer.close()


def expected(spec: PipelineSpec, n: int, seed: int, rate: float = 1000.0, **kwargs):
    clock = SimulatedClock(DEFAULT_START_MS, rate)
    return EventGenerator(spec, seed, clock=clock, **kwargs).generate(n)


def test_produced_events_are_exactly_the_generated_ones(kafka_broker, spec):
    topic = f"produce-exact-{uuid.uuid4().hex[:12]}"
    try:
        summary = produce(
            kafka_broker, spec, topic, count=10_000, rate=0, seed=42, partitions=3, start_ms=DEFAULT_START_MS
        )
        assert partition_count(kafka_broker, topic) == 3
        assert (summary.sent, summary.partitions, summary.bad, summary.interrupted) == (
            10_000,
            3,
            Counter(),
            False,
        )
        read = read_topic(kafka_broker, topic)
        want = expected(spec, 10_000, seed=42)
        messages = [m for ms in read.values() for m in ms]
        assert Counter((m.key, m.value) for m in messages) == Counter(
            zip(want.keys, want.values, strict=True)
        )
        assert all(len(ms) > 2000 for ms in read.values())  # keyed by uuid: spread over all partitions
        # One producer, idempotent: each partition holds its events in generation order.
        position = {v: i for i, v in enumerate(want.values)}
        for ms in read.values():
            order = [position[m.value] for m in ms]
            assert order == sorted(order)
    finally:
        delete_topic(kafka_broker, topic)


def test_bad_records_arrive_as_generated(kafka_broker, spec, topic_factory):
    topic = topic_factory(2)
    summary = produce(kafka_broker, spec, topic, count=4000, seed=7, bad_ratio=0.1, start_ms=DEFAULT_START_MS)
    assert summary.partitions == 2  # the existing topic, as it is
    want = expected(spec, 4000, seed=7, bad_ratio=0.1)
    kind_of = dict(zip(want.values, want.kinds, strict=True))
    messages = [m for ms in read_topic(kafka_broker, topic).values() for m in ms]
    assert Counter((m.key, m.value) for m in messages) == Counter(zip(want.keys, want.values, strict=True))
    arrived = Counter(kind_of[m.value] for m in messages if kind_of[m.value])
    assert arrived == summary.bad == Counter(k for k in want.kinds if k)
    assert set(arrived) == set(EventGenerator(spec).bad_kinds) and 300 < sum(arrived.values()) < 500
    assert all(m.key is None for m in messages if kind_of[m.value] == "malformed_json")
    assert any(len(m.value) > spec.schema_.max_record_bytes for m in messages)


def test_rate_is_held_and_partitions_must_match(kafka_broker, spec, topic_factory):
    topic = topic_factory(1)
    seen = []
    t0 = time.monotonic()
    summary = produce(
        kafka_broker, spec, topic, count=600, rate=400, progress=seen.append, progress_every_s=0.5
    )
    elapsed = time.monotonic() - t0
    assert summary.sent == 600
    assert 1.3 < summary.seconds < 3.0 and elapsed < 15, (summary.seconds, elapsed)  # 600 / 400 = 1.5 s
    assert seen and all(0 < p.sent < 600 for p in seen) and seen[-1].recent_rate < 800
    with pytest.raises(TopicConflictError, match="1 partitions, not 4"):
        produce(kafka_broker, spec, topic, count=1, partitions=4)


def test_ctrl_c_ends_an_open_ended_run_and_flushes_what_was_sent(kafka_broker, spec, topic_factory):
    topic = topic_factory(2)

    def interrupt(progress):
        raise KeyboardInterrupt

    summary = produce(kafka_broker, spec, topic, rate=2000, progress=interrupt, progress_every_s=0.3)
    assert summary.interrupted and summary.sent > 0
    assert sum(len(ms) for ms in read_topic(kafka_broker, topic).values()) == summary.sent


def test_sigterm_stops_the_cli_producer_promptly_and_flushes_what_was_sent(kafka_broker, topic_factory):
    topic = topic_factory(2)
    command = [
        str(Path(sys.executable).parent / "rt-training"), "produce", "--topic", topic, "--rate", "100",
        "--duration", "0", "--progress-every", "0.5", "--bootstrap-servers", kafka_broker.bootstrap_servers,
    ]  # fmt: skip
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    output: list[str] = []
    try:
        # Generous on a busy machine: the first progress line says it is sending.
        deadline = time.monotonic() + 120
        while not any(line.startswith(f"produce {topic}:") for line in output):
            assert proc.poll() is None, f"producer exited with {proc.returncode}: {''.join(output)}"
            assert time.monotonic() < deadline, f"no progress line within 120 s: {''.join(output)}"
            try:
                output.append(lines.get(timeout=1))
            except queue.Empty:
                continue
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        stopped_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    proc.stdout.close()
    while not lines.empty():
        output.append(lines.get())
    text = "".join(output)
    assert code == 0, text
    assert stopped_s < 10, text
    summary = re.search(
        r"produced ([\d,]+) events to \S+ \(2 partitions\) in [\d.]+s, .*\(interrupted\)", text
    )
    assert summary, text
    sent = int(summary.group(1).replace(",", ""))
    assert sent > 0
    assert sum(len(ms) for ms in read_topic(kafka_broker, topic).values()) == sent


def test_cli_produce(kafka_broker, spec):
    topic = f"produce-cli-{uuid.uuid4().hex[:12]}"
    try:
        args = ["produce", "--topic", topic, "--count", "500", "--rate", "0", "--bad-ratio", "0.05"]
        result = CliRunner().invoke(cli, [*args, "--bootstrap-servers", kafka_broker.bootstrap_servers])
        assert result.exit_code == 0, result.output
        assert f"created topic {topic} with {spec.source.partitions} partitions" in result.output
        assert f"produced 500 events to {topic}" in result.output
        assert sum(len(ms) for ms in read_topic(kafka_broker, topic).values()) == 500
    finally:
        delete_topic(kafka_broker, topic)


# -- no broker needed ---------------------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s
        self.slept += s


def test_token_bucket_holds_the_average_rate_and_caps_the_catch_up():
    t = FakeTime()
    bucket = TokenBucket(rate=100, burst_s=1.0, clock=t.clock, sleep=t.sleep)
    for _ in range(50):
        bucket.take(10)  # 500 events at 100/s: the 50th chunk starts at 4.9 s
    assert t.now - 100.0 == pytest.approx(4.9)
    t.now += 10.0  # the sender stalls for 10 s
    t.slept = 0.0
    for _ in range(11):  # catching up: one second of credit (10 chunks) and the chunk due now go at once
        bucket.take(10)
    assert t.slept == 0.0
    bucket.take(10)
    assert t.slept == pytest.approx(0.1)
    assert TokenBucket(0).take(10**6) == 0.0


def test_unreachable_kafka_is_a_clean_error(spec):
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1", connect_timeout_s=0.5)
    with pytest.raises(KafkaUnreachableError, match=r"127\.0\.0\.1:1"):
        produce(settings, spec, "nowhere", count=10)
    result = CliRunner().invoke(cli, ["produce", "--count", "10", "--bootstrap-servers", "127.0.0.1:1"])
    assert result.exit_code == 1
    assert "Error: Kafka is unreachable at 127.0.0.1:1" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
