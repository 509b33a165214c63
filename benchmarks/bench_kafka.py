"""Kafka throughput with kafka-python against the local broker: produce, then raw consume.

    python benchmarks/bench_kafka.py                 # 200,000 events, local broker on a free port
    python benchmarks/bench_kafka.py --events 50000  # quicker
    KAFKA_BOOTSTRAP_SERVERS=host:9092 python benchmarks/bench_kafka.py   # an existing cluster

The same pre-encoded payloads (JSON objects of about 300 bytes) are produced twice, each run into its own
topic: once with kafka-python's default batching (the baseline) and once with the batching the ingest path
is tuned for (``--linger-ms``, ``--batch-size``); no compression in either. The tuned topic is then read
back by a consumer that assigns every partition, seeks to the beginning and stops at the end offsets, as an
ingest run does. Result: ``benchmarks/results/kafka.json``.

kafka-python computes the CRC-32C of every record batch when producing and checks it when consuming; without
the optional ``crc32c`` package that runs in pure Python and dominates both rates (the result names which
implementation ran).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from _common import write_result

from rt_training.ops.kafka_local import (
    LocalKafkaConfig,
    external_bootstrap,
    free_port,
    start_broker,
    stop_broker,
)
from rt_training.stream.admin import create_topic, delete_topic
from rt_training.stream.client import KafkaSettings, make_consumer, make_producer

DEVICES = ("mobile", "desktop", "tablet")
CATEGORIES = ("books", "electronics", "fashion", "home", "sports", "toys", "beauty", "grocery")


def make_payloads(count: int, seed: int = 7) -> list[bytes]:
    """Deterministic click events encoded as JSON, about 300 bytes each."""
    rng = random.Random(seed)
    start_ms = 1_780_000_000_000
    payloads = []
    for i in range(count):
        event = {
            "event_id": f"{uuid.UUID(int=rng.getrandbits(128))}",
            "event_time": start_ms + i * 5,
            "user_id": f"user-{rng.randrange(100_000):06d}",
            "item_id": f"item-{rng.randrange(1_000_000):07d}",
            "price": round(rng.lognormvariate(3.0, 1.0), 2),
            "dwell_time_s": round(rng.expovariate(0.2), 3),
            "position": rng.randrange(50),
            "user_tenure_days": round(rng.expovariate(0.01), 1),
            "discount": round(rng.random() * 0.5, 2),
            "device": rng.choice(DEVICES),
            "category": rng.choice(CATEGORIES),
            "country": rng.choice(("US", "GB", "DE", "FR", "IN", "BR", "JP")),
            "referrer": rng.choice(("search", "home", "email", "ad", "social")),
            "clicked": int(rng.random() < 0.1),
        }
        payloads.append(json.dumps(event, separators=(",", ":")).encode())
    return payloads


def produce(settings: KafkaSettings, topic: str, payloads: list[bytes], **producer_opts: Any) -> float:
    """Send every payload and wait for all acknowledgements; returns the elapsed seconds."""
    producer = make_producer(settings, **producer_opts)
    try:
        t0 = time.perf_counter()
        for value in payloads:
            producer.send(topic, value=value)
        producer.flush()
        return time.perf_counter() - t0
    finally:
        producer.close()


def consume_all(
    settings: KafkaSettings, topic: str, partitions: int, **consumer_opts: Any
) -> tuple[int, float]:
    """Read every partition of ``topic`` from its beginning to its end offset; returns (records, seconds)."""
    from kafka import TopicPartition

    consumer = make_consumer(settings, **consumer_opts)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        end = consumer.end_offsets(tps)
        consumer.seek_to_beginning(*tps)
        records = 0
        t0 = time.perf_counter()
        pending = {tp for tp in tps if end[tp] > 0}
        while pending:
            for tp, batch in consumer.poll(timeout_ms=1000).items():
                records += len(batch)
                if batch[-1].offset + 1 >= end[tp]:
                    pending.discard(tp)
        return records, time.perf_counter() - t0
    finally:
        consumer.close()


def crc32c_implementation() -> str:
    """kafka-python checksums every record batch with CRC-32C; in pure Python unless ``crc32c`` is installed."""
    from kafka.record import util

    return "pure-python" if util._crc32c is util.crc32c_py else "crc32c (C extension)"


def run(args: argparse.Namespace) -> dict[str, Any]:
    payloads = make_payloads(args.events)
    payload_bytes = sum(len(p) for p in payloads) / len(payloads)
    tuned_producer = {"linger_ms": args.linger_ms, "batch_size": args.batch_size, "compression_type": None}
    consumer_opts = {"max_poll_records": args.max_poll_records, "max_partition_fetch_bytes": 4 * 1024 * 1024}
    with ExitStack() as stack:
        external = external_bootstrap()
        if external:
            settings = KafkaSettings.from_env()
            broker = f"external cluster {external}"
        else:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-kafka-")))
            config = LocalKafkaConfig(data_dir=data_dir, port=free_port())
            started = start_broker(config)
            stack.callback(stop_broker, config)
            settings = started.settings()
            broker = f"local broker {started.bootstrap_servers}, started in {started.startup_s:.1f}s"
        print(f"{broker}; {args.events} events of {payload_bytes:.0f} bytes", file=sys.stderr)

        topics = {kind: f"bench-kafka-{kind}-{uuid.uuid4().hex[:8]}" for kind in ("baseline", "tuned")}
        for topic in topics.values():
            create_topic(settings, topic, args.partitions)
            stack.callback(delete_topic, settings, topic)

        baseline_s = produce(settings, topics["baseline"], payloads)
        tuned_s = produce(settings, topics["tuned"], payloads, **tuned_producer)
        records, consume_s = consume_all(settings, topics["tuned"], args.partitions, **consumer_opts)
    if records != args.events:
        raise SystemExit(f"consumed {records} records from {topics['tuned']}, expected {args.events}")
    return {
        "events": args.events,
        "payload_bytes": round(payload_bytes, 1),
        "partitions": args.partitions,
        "broker": broker,
        "crc32c": crc32c_implementation(),
        "produce_events_per_s": round(args.events / tuned_s),
        "produce_mb_per_s": round(args.events * payload_bytes / tuned_s / 1e6, 2),
        "baseline_produce_events_per_s": round(args.events / baseline_s),
        "produce_speedup_vs_default_batching": round(baseline_s / tuned_s, 2),
        "raw_consume_events_per_s": round(records / consume_s),
        "raw_consume_mb_per_s": round(records * payload_bytes / consume_s / 1e6, 2),
        "settings": {
            "producer": {**tuned_producer, "acks": "all", "enable_idempotence": True},
            "baseline_producer": {
                "linger_ms": 0,
                "batch_size": 16384,
                "compression_type": None,
                "acks": "all",
            },
            "consumer": {**consumer_opts, "isolation_level": "read_committed", "assign_and_seek": True},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000, help="events per produce run (default 200000)")
    parser.add_argument("--partitions", type=int, default=3, help="partitions of the benchmark topics")
    parser.add_argument("--linger-ms", type=int, default=20, help="producer linger.ms of the tuned run")
    parser.add_argument(
        "--batch-size", type=int, default=256 * 1024, help="producer batch.size of the tuned run"
    )
    parser.add_argument("--max-poll-records", type=int, default=5000, help="consumer max_poll_records")
    result = run(parser.parse_args())
    path = write_result("kafka", result)
    print(json.dumps(result, indent=2))
    print(f"written to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
