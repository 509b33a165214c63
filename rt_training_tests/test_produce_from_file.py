"""``rt-training produce --from`` against a real broker: a user's JSON-lines, CSV and stdin records arrive exactly,
keyed by a field, in file order per partition, event times unchanged; the topic is created with the spec's
partitions; bad lines are skipped or refused per flag, named by line number.

Guarantees checked here: with ``--on-bad-line fail`` a file with a bad line sends nothing (it is checked first);
from stdin, the records before the bad line are delivered and nothing from it on.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from rt_training.cli.main import cli
from rt_training.spec import PipelineSpec, load_spec
from rt_training.stream.admin import delete_topic, partition_count
from rt_training.stream.client import KafkaSettings
from rt_training_tests.test_producer_kafka import read_topic

BASE_MS = 1_714_564_800_000  # 2024-05-01T12:00:00Z


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec()


@pytest.fixture
def topic(kafka_broker: KafkaSettings) -> Iterator[str]:
    """A fresh topic name (not created), deleted at the end if a test created it."""
    name = f"produce-from-{uuid.uuid4().hex[:12]}"
    yield name
    if partition_count(kafka_broker, name) is not None:
        delete_topic(kafka_broker, name)


def events(n: int, base_ms: int = BASE_MS) -> list[dict]:
    """``n`` records of 4 users from ``base_ms`` (a whole hour); event times alternate epoch millis and ISO-8601
    strings, some with fractions."""
    hour = dt.datetime.fromtimestamp(base_ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H")
    out = []
    for i in range(n):
        ms = base_ms + 1000 * i + (i % 3) * 7
        when: int | str = ms if i % 2 == 0 else f"{hour}:{i // 60:02d}:{i % 60:02d}.{(i % 3) * 7:03d}Z"
        out.append({"event_id": f"e{i}", "event_time": when, "user_id": f"u{i % 4}", "price": i + 0.5})
    return out


def run(settings: KafkaSettings, topic: str, *args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(
        cli,
        ["produce", "--topic", topic, "--bootstrap-servers", settings.bootstrap_servers, *args],
        input=stdin,
    )


def messages(settings: KafkaSettings, topic: str) -> dict[int, list]:
    return read_topic(settings, topic)


def all_of(read: dict[int, list]) -> list:
    return [m for ms in read.values() for m in ms]


def test_jsonl_file_arrives_exactly_in_a_created_topic(kafka_broker, spec, topic, tmp_path):
    records = events(40)
    lines = [json.dumps(r) for r in records]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    t0 = time.time() * 1000
    result = run(kafka_broker, topic, "--from", str(path), "--key-field", "user_id")
    t1 = time.time() * 1000
    assert result.exit_code == 0, result.output
    assert f"created topic {topic} with {spec.source.partitions} partitions" in result.stderr
    assert result.stdout.startswith(f"produced 40 records from {path} to {topic} (3 partitions)")
    assert "bad lines skipped: 0" in result.stdout
    assert partition_count(kafka_broker, topic) == spec.source.partitions == 3
    read = messages(kafka_broker, topic)
    got = all_of(read)
    assert sorted((m.key, m.value) for m in got) == sorted(
        (r["user_id"].encode(), line.encode()) for r, line in zip(records, lines, strict=True)
    )
    # One key, one partition, in file order; the default record timestamp is the time of sending.
    position = {line.encode(): i for i, line in enumerate(lines)}
    for ms in read.values():
        for key in {m.key for m in ms}:
            order = [position[m.value] for m in ms if m.key == key]
            assert order == sorted(order) and len(order) == 10
    assert all(t0 - 1000 <= m.timestamp <= t1 + 1000 for m in got)
    assert [json.loads(m.value)["event_time"] for m in sorted(got, key=lambda m: position[m.value])] == [
        r["event_time"] for r in records
    ]


def test_csv_file_with_event_time_timestamps(kafka_broker, topic, tmp_path):
    # Kafka timestamps become event times, so they must be inside the topic's retention (7 days by default; the
    # test broker checks retention every second): an hour-aligned time from yesterday.
    base_ms = (int(time.time()) // 3600 - 24) * 3_600_000
    records = events(12, base_ms)
    rows = ["event_id,event_time,user_id,price,position"]
    rows += [
        f"{r['event_id']},{r['event_time']},{r['user_id']},{r['price']},{i % 2 or ''}"
        for i, r in enumerate(records)
    ]
    path = tmp_path / "history.csv"
    path.write_text("\n".join(rows) + "\n")
    result = run(kafka_broker, topic, "--from", str(path), "--partitions", "2", "--timestamp-from-event-time")
    assert result.exit_code == 0, result.output
    assert partition_count(kafka_broker, topic) == 2
    got = sorted(all_of(messages(kafka_broker, topic)), key=lambda m: int(m.key[1:]))
    want = []
    for i, r in enumerate(records):
        value = {
            "event_id": r["event_id"],
            "event_time": r["event_time"],
            "user_id": r["user_id"],
            "price": r["price"],
        }
        if i % 2:
            value["position"] = 1
        want.append((r["event_id"].encode(), value, base_ms + 1000 * i + (i % 3) * 7))
    assert [(m.key, json.loads(m.value), m.timestamp) for m in got] == want


def test_stdin_defaults_to_jsonl_and_keys_by_the_id_field(kafka_broker, topic):
    records = events(5)
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    result = run(kafka_broker, topic, "--from", "-", "--rate", "50", stdin=data)
    assert result.exit_code == 0, result.output
    assert "produced 5 records from stdin" in result.stdout
    got = sorted(all_of(messages(kafka_broker, topic)), key=lambda m: int(m.key[1:]))
    assert [(m.key, json.loads(m.value)) for m in got] == [(r["event_id"].encode(), r) for r in records]


def test_rate_limit_and_progress_lines(kafka_broker, topic):
    data = "".join(json.dumps(r) + "\n" for r in events(40)).encode()
    result = run(kafka_broker, topic, "--from", "-", "--rate", "40", "--progress-every", "0.25", stdin=data)
    assert result.exit_code == 0, result.output
    seconds = float(re.search(r"in ([0-9.]+)s,", result.stdout)[1])
    assert 0.8 < seconds < 3.0, result.stdout  # 40 records at 40/s: about 1 s
    progress = re.findall(
        r"produce \S+: (\d+) records sent in \d+s, [\d,]+ records/s now, 0 bad lines", result.stderr
    )
    assert 2 <= len(progress) <= 8 and all(0 < int(n) < 40 for n in progress), result.stderr


def test_stdin_csv_with_format_flag(kafka_broker, topic):
    data = b"event_id,event_time,position\na,2024-05-01T12:00:00Z,3\nb,1714564800000,\n"
    result = run(kafka_broker, topic, "--from", "-", "--format", "csv", stdin=data)
    assert result.exit_code == 0, result.output
    got = sorted(all_of(messages(kafka_broker, topic)), key=lambda m: m.key)
    assert [(m.key, m.value) for m in got] == [
        (b"a", b'{"event_id":"a","event_time":"2024-05-01T12:00:00Z","position":3}'),
        (b"b", b'{"event_id":"b","event_time":1714564800000}'),
    ]


def bad_file(tmp_path) -> tuple[str, list[str]]:
    lines = [json.dumps(r) for r in events(8)]
    lines[2] = '{"event_id": "e2", "event_time": '
    lines[5] = '["not", "an", "object"]'
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path), lines


def test_skip_reports_bad_lines_and_sends_the_good_ones(kafka_broker, topic, tmp_path):
    path, lines = bad_file(tmp_path)
    result = run(kafka_broker, topic, "--from", path, "--on-bad-line", "skip")
    assert result.exit_code == 0, result.output
    assert f"skipped 2 bad lines of {path}; the first 2:" in result.stderr
    assert "  line 3: invalid JSON: Expecting value at column 33\n" in result.stderr
    assert "  line 6: expected a JSON object, got an array\n" in result.stderr
    assert "produced 6 records" in result.stdout and "bad lines skipped: 2" in result.stdout
    got = sorted(m.value for m in all_of(messages(kafka_broker, topic)))
    assert got == sorted(line.encode() for i, line in enumerate(lines) if i not in (2, 5))


def test_fail_refuses_a_file_with_a_bad_line_and_sends_nothing(kafka_broker, topic, tmp_path):
    path, _ = bad_file(tmp_path)
    result = run(kafka_broker, topic, "--from", path)
    assert result.exit_code == 1
    assert (
        f"Error: {path}, line 3: invalid JSON: Expecting value at column 33; nothing was sent"
        in result.stderr
    )
    assert "--on-bad-line skip" in result.stderr
    assert partition_count(kafka_broker, topic) is None  # not even created


def test_fail_on_stdin_sends_the_records_before_the_bad_line_only(kafka_broker, topic, tmp_path):
    _, lines = bad_file(tmp_path)
    result = run(kafka_broker, topic, "--from", "-", stdin=("\n".join(lines) + "\n").encode())
    assert result.exit_code == 1
    assert "Error: stdin, line 3: invalid JSON" in result.stderr
    assert "the 2 records before it were sent to topic" in result.stderr
    got = sorted(m.value for m in all_of(messages(kafka_broker, topic)))
    assert got == sorted(line.encode() for line in lines[:2])


def test_flags_of_the_other_mode_are_usage_errors(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text("{}\n")
    result = CliRunner().invoke(cli, ["produce", "--from", str(path), "--drift-at", "5", "--count", "3"])
    assert result.exit_code == 2
    assert "--count, --drift-at shape the synthetic stream and cannot be used with --from" in result.stderr
    result = CliRunner().invoke(cli, ["produce", "--key-field", "user_id"])
    assert result.exit_code == 2 and "--key-field apply only with --from FILE" in result.stderr
    result = CliRunner().invoke(cli, ["produce", "--from", str(tmp_path / "x.txt")])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    (tmp_path / "x.txt").write_text("{}\n")
    result = CliRunner().invoke(
        cli, ["produce", "--from", str(tmp_path / "x.txt"), "--bootstrap-servers", "127.0.0.1:1"]
    )
    assert result.exit_code == 1 and "cannot tell the format of" in result.stderr
