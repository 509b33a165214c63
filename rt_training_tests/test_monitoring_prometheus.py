"""The shipped Prometheus config, alert rules and Grafana dashboard, checked with the real tools.

A real Prometheus server (Debian/Ubuntu package ``prometheus``) scrapes the exporter every second with the
shipped scrape job and rules; its HTTP API must return the values the lake holds. promtool checks the config
and rules and runs the rules' unit tests. The dashboard's queries must name only metrics the exporter exposes.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from monitoring_lake import build_lake, write_ingest_batches
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from rt_training.monitoring.exporter import PipelineCollector, start_exporter
from rt_training.monitoring.snapshot import ColumnDrift, DriftSummary, PipelineSnapshot, SnapshotGatherer
from rt_training.spec import PipelineSpec, load_spec
from rt_training.stream.client import KafkaSettings
from rt_training_tests.processes import stop_process

INFRA = Path(__file__).resolve().parents[1] / "infra"
PROMETHEUS_DIR = INFRA / "prometheus"
DASHBOARD = INFRA / "grafana" / "dashboards" / "rt_training.json"
DATASOURCES = INFRA / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")

needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="the prometheus binary is not on PATH (Debian/Ubuntu: apt-get install prometheus)",
)
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not on PATH (Debian/Ubuntu: apt-get install prometheus)"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@contextmanager
def running_prometheus(tmp_path: Path, target: str) -> Iterator[str]:
    """The shipped config with a 1 s scrape/evaluation interval and ``target``; yields the server's base URL.

    Only the process started here is stopped, with SIGTERM (then SIGKILL after 15 s).
    """
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(PROMETHEUS_DIR / rule) for rule in config["rule_files"]]
    (job,) = config["scrape_configs"]
    job.update(scrape_interval="1s", scrape_timeout="1s", static_configs=[{"targets": [target]}])
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = _free_port()
    log_path = tmp_path / "prometheus.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (
                f"prometheus exited with {proc.returncode}: {log_path.read_text()[-3000:]}"
            )
            try:
                targets = _get(f"{base}/api/v1/targets")["data"]["activeTargets"]
                if targets and targets[0]["health"] == "up":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"target {target} never up: {log_path.read_text()[-3000:]}"
            time.sleep(0.3)
        yield base
    finally:
        stop_process(proc, "prometheus", timeout_s=15.0)


def query(base: str, promql: str) -> list[dict[str, Any]]:
    answer = _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def query_until(base: str, promql: str, timeout_s: float = 20) -> list[dict[str, Any]]:
    """The first non-empty result (series appear after the first scrape or rule evaluation)."""
    deadline = time.monotonic() + timeout_s
    while not (result := query(base, promql)):
        assert time.monotonic() < deadline, f"no result for {promql}"
        time.sleep(0.3)
    return result


def by_label(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {r["metric"][label]: float(r["value"][1]) for r in result}


@contextmanager
def serving(collector: Any) -> Iterator[str]:
    registry = CollectorRegistry()
    registry.register(collector)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def spec() -> PipelineSpec:
    return load_spec()


# -- promtool --------------------------------------------------------------------------------------------
@needs_promtool
@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.compose.yml"])
def test_promtool_accepts_the_configs(config: str) -> None:
    done = subprocess.run(
        [PROMTOOL, "check", "config", config], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    done = subprocess.run(
        [PROMTOOL, "check", "rules", "alerts.yml"],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 9 rules found" in done.stdout


@needs_promtool
def test_alert_rules_pass_their_unit_tests() -> None:
    done = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts_test.yml"],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tested = {m for m in re.findall(r"alertname: (\w+)", (PROMETHEUS_DIR / "alerts_test.yml").read_text())}
    assert {"RtTrainingDatasetDrift", "RtTrainingConsumerLagGrowing"} <= tested


# -- Grafana dashboard ---------------------------------------------------------------------------------------
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, keywords, labels or dashboard variables)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\$\w+", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if match.group() in _KEYWORDS or expr[match.end() :].lstrip().startswith("("):
            continue
        names.add(match.group())
    return names


def test_metric_names_parser() -> None:
    assert metric_names('sum by (a, b) (rate(x_total{job="y", le="1e6"}[5m])) / on (a) y > 1e6') == {
        "x_total",
        "y",
    }
    assert metric_names('time() - last_seconds{pipeline=~"$pipeline"} offset 5m') == {"last_seconds"}


def _panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def populated_snapshot() -> PipelineSnapshot:
    """A snapshot with every field set, so the exporter emits every family it has."""
    return PipelineSnapshot(
        pipeline="clickstream",
        topic="clickstream",
        kafka_up=True,
        end_offsets={0: 12},
        earliest_offsets={0: 0},
        committed_offsets={"bronze": {0: 10}},
        ingested_events=13,
        dead_letters={"malformed_json": 2},
        last_commit_time={"bronze": 1.7e9},
        event_to_silver_latency={0.5: 1.0, 0.95: 2.0},
        watermark=1.7e9,
        drift=DriftSummary(
            "r", 1.7e9, 0.5, 1, True, (ColumnDrift("price", "K-S p_value", 0.01, 0.05, True),)
        ),
        model_metrics={"champion": {"holdout": {"auc": 0.7}}, "candidate": {"validation": {"auc": 0.6}}},
        last_promotion_time=1.7e9,
        training_samples_per_second=1000.0,
        run_failures={"retraining_job": 1},
        errors=["x: one unreadable table"],
    )


def test_every_dashboard_query_names_an_exported_metric() -> None:
    snap = populated_snapshot()
    unset = [f.name for f in dataclasses.fields(snap) if getattr(snap, f.name) in (None, {}, [])]
    assert unset == [], f"populate {unset} here so the dashboard check covers them"
    with (
        serving(PipelineCollector("clickstream", lambda: snap)) as target,
        urllib.request.urlopen(f"http://{target}/metrics", timeout=10) as response,
    ):
        text = response.read().decode()
    exported = {s.name for family in text_string_to_metric_families(text) for s in family.samples}

    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "pipeline"
    assert re.fullmatch(r"label_values\((\w+), pipeline\)", variable["definition"]).group(1) in exported

    used: set[str] = set()
    for panel in _panels():
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"panel {panel['title']!r}: no metric in {target['expr']!r}"
            unknown = names - exported - {"up"}
            assert not unknown, (
                f"panel {panel['title']!r} queries {unknown}, which the exporter does not expose"
            )
            used |= names
    # And the other way round: every exported metric has a panel.
    assert exported - used == set()


def test_dashboard_panels_use_the_provisioned_datasource_and_pipeline_variable() -> None:
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in _panels():
        assert panel["datasource"]["uid"] == datasource["uid"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"]
            if metric_names(target["expr"]) != {"up"}:
                assert 'pipeline=~"$pipeline"' in target["expr"], (panel["title"], target["expr"])


# -- a real Prometheus server --------------------------------------------------------------------------------
@needs_prometheus
def test_prometheus_scrapes_the_exporter(spec: PipelineSpec, tmp_path: Path) -> None:
    build_lake(spec, tmp_path / "lake")
    closed = f"127.0.0.1:{_free_port()}"
    gatherer = SnapshotGatherer(spec, str(tmp_path / "lake"), KafkaSettings(bootstrap_servers=closed))
    server, thread = start_exporter(gatherer, port=0)
    try:
        with running_prometheus(tmp_path, f"127.0.0.1:{server.server_port}") as base:
            assert by_label(query_until(base, 'up{job="rt_training"}'), "instance") == {
                f"127.0.0.1:{server.server_port}": 1.0
            }
            dead = by_label(query_until(base, "rt_training_dead_letters_total"), "reason")
            assert dead["malformed_json"] == 2 and dead["missing_field"] == 1
            assert {
                r: v for r, v in dead.items() if r not in ("malformed_json", "missing_field")
            } == dict.fromkeys(
                (
                    "not_utf8",
                    "oversized",
                    "not_an_object",
                    "unparseable",
                    "duplicate_key",
                    "wrong_type",
                    "wrong_dimension",
                    "not_finite",
                    "out_of_range",
                    "not_allowed",
                    "empty_id",
                    "before_min_event_time",
                    "future_event_time",
                    "too_late",
                    "duplicate_id",
                ),
                0.0,
            )
            assert by_label(
                query_until(base, 'rt_training_committed_offset{table="silver"}'), "partition"
            ) == {
                "0": 10.0,
                "1": 3.0,
            }
            assert by_label(query_until(base, "rt_training_drift_share"), "pipeline") == {"clickstream": 0.5}
            assert by_label(query_until(base, "rt_training_column_drift_score"), "column") == {
                "price": 0.001,
                "device": 0.2,
            }
            # The Dagster job is its own label: the scrape's `job` label sits beside it, neither renamed.
            failures = query_until(base, "rt_training_run_failures_total")
            assert by_label(failures, "dagster_job") == {"retraining_job": 2.0, "ingest_job": 0.0}
            assert {r["metric"]["job"] for r in failures} == {"rt_training"}
            assert not any("exported_job" in r["metric"] for r in failures)
            assert by_label(query_until(base, "rt_training_kafka_up"), "pipeline") == {"clickstream": 0.0}
            assert query(base, "rt_training_consumer_lag_records") == []
            age = by_label(
                query_until(base, 'time() - rt_training_last_commit_timestamp_seconds{table="bronze"}'),
                "table",
            )
            assert 0 <= age["bronze"] < 600

            # The shipped rules are loaded and evaluated: drift and Kafka-down go pending at once.
            deadline = time.monotonic() + 20
            while True:
                alerts = {
                    a["labels"]["alertname"]: a for a in _get(f"{base}/api/v1/alerts")["data"]["alerts"]
                }
                if {"RtTrainingDatasetDrift", "RtTrainingKafkaDown"} <= set(alerts):
                    break
                assert time.monotonic() < deadline, f"alerts never went pending: {sorted(alerts)}"
                time.sleep(0.3)
            assert alerts["RtTrainingDatasetDrift"]["state"] == "pending"
            assert alerts["RtTrainingDatasetDrift"]["labels"]["severity"] == "warning"
            assert alerts["RtTrainingKafkaDown"]["labels"]["pipeline"] == "clickstream"
            assert "RtTrainingRetrainingFailing" not in alerts  # failures older than the first scrape

            # Every dashboard query is valid PromQL on the real server.
            for panel in _panels():
                for target in panel["targets"]:
                    expr = (
                        target["expr"]
                        .replace("$pipeline", "clickstream")
                        .replace("$__rate_interval", "1m")
                        .replace("$__range", "5m")
                    )
                    query(base, expr)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        gatherer.close()


@needs_prometheus
def test_prometheus_sees_lag_per_partition(
    spec: PipelineSpec, tmp_path: Path, kafka_broker: KafkaSettings, topic_factory
) -> None:
    from rt_training.stream.client import make_producer

    topic = topic_factory(partitions=3)
    producer = make_producer(kafka_broker)
    for partition, count in ((0, 15), (1, 3), (2, 4)):
        for i in range(count):
            producer.send(topic, value=b"{}", key=str(i).encode(), partition=partition)
    producer.flush()
    producer.close()
    on_topic = spec.model_copy(update={"source": spec.source.model_copy(update={"topic": topic})})
    write_ingest_batches(on_topic, tmp_path / "lake")  # commits p0 up to 10, p1 up to 3

    gatherer = SnapshotGatherer(on_topic, str(tmp_path / "lake"), kafka_broker)
    server, thread = start_exporter(gatherer, port=0)
    try:
        with running_prometheus(tmp_path, f"127.0.0.1:{server.server_port}") as base:
            lag = by_label(
                query_until(base, f'rt_training_consumer_lag_records{{topic="{topic}"}}'), "partition"
            )
            assert lag == {"0": 5.0, "1": 0.0, "2": 4.0}
            end = by_label(query_until(base, f'rt_training_kafka_end_offset{{topic="{topic}"}}'), "partition")
            assert end == {"0": 15.0, "1": 3.0, "2": 4.0}
            assert by_label(query_until(base, "rt_training_kafka_up"), "pipeline") == {"clickstream": 1.0}
            total = query_until(base, "sum by (pipeline) (rt_training_consumer_lag_records)")
            assert float(total[0]["value"][1]) == 9.0
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        gatherer.close()


def test_exposition_is_valid_for_prometheus_text_parsers() -> None:
    registry = CollectorRegistry()
    registry.register(PipelineCollector("clickstream", populated_snapshot))
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    assert all(f.name.startswith("rt_training_") for f in families)
    assert {f.name: f.type for f in families}["rt_training_dead_letters"] == "counter"
