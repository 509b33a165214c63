"""Every entry point against a SASL (SCRAM) and an SSL (private CA) broker, configured through ``KAFKA_*``
environment variables alone: the CLI (create-topic, produce, ingest status, metrics show and serve), Dagster
ingest (exactly once, reconciled against Kafka's end offsets), and a scan of everything the project wrote
during the SASL run, which must not contain the password anywhere."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from click.testing import CliRunner

from rt_training.cli.main import cli
from rt_training.defs.factory import build_definitions
from rt_training.defs.resources import KafkaResource, LakeResource
from rt_training.ingest.batch import LakeLocation
from rt_training.lake.exactly_once import committed_offsets
from rt_training.ops.kafka_local import LocalKafkaConfig, free_port, start_broker, stop_broker
from rt_training.stream.admin import delete_topic
from rt_training.stream.client import ENV_VARS, KafkaSettings
from rt_training.stream.offsets import partition_offsets
from rt_training_tests.ingest_support import Daemon, read_table, spec_for
from rt_training_tests.metrics_support import serve_metrics_once

PASSWORD = f"scram-{uuid.uuid4().hex}"
USER = "rt-ingest"
COUNT = 600
PARTITIONS = 3

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def secured_brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, KafkaSettings]]:
    """One local broker with a SASL_PLAINTEXT (SCRAM-SHA-512) and an SSL listener; settings for each."""
    config = LocalKafkaConfig(
        data_dir=tmp_path_factory.mktemp("kafka-secured"),
        port=free_port(),
        sasl_users={USER: PASSWORD},
        ssl=True,
    )
    status = start_broker(config)
    try:
        yield {"sasl": status.sasl_settings(USER, PASSWORD), "ssl": status.ssl_settings()}
    finally:
        stop_broker(config)


@pytest.fixture(params=["sasl", "ssl"])
def secured(
    request: pytest.FixtureRequest, secured_brokers: dict[str, KafkaSettings], monkeypatch: pytest.MonkeyPatch
) -> KafkaSettings:
    """The broker's settings, exported as ``KAFKA_*`` variables (and only there)."""
    settings = secured_brokers[request.param]
    for var in ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    for var, value in settings.to_env().items():
        monkeypatch.setenv(var, value)
    return settings


def scan_for(secret: str, roots: list[Path], texts: dict[str, str]) -> list[str]:
    """Where ``secret`` occurs: files under ``roots`` (bytes, any format) and named texts."""
    needle = secret.encode()
    found = [
        str(path)
        for root in roots
        for path in root.rglob("*")
        if path.is_file() and needle in path.read_bytes()
    ]
    return found + [name for name, text in texts.items() if secret in text]


def test_scan_finds_a_planted_password(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.bin").write_bytes(b"\x00\x01" + PASSWORD.encode() + b"\xff")
    (tmp_path / "clean.txt").write_text("nothing here")
    assert scan_for(PASSWORD, [tmp_path], {"stdout": "ok", "log": f"pw={PASSWORD}"}) == [
        str(tmp_path / "a" / "b" / "x.bin"),
        "log",
    ]


def _cli(args: list[str], outputs: dict[str, str]) -> str:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    outputs[" ".join(args[:2])] = result.output
    assert result.exit_code == 0, result.output
    return result.output


def test_every_entry_point_through_env_vars_alone(
    secured: KafkaSettings,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG", logger="rt_training")
    topic = f"secured-{secured.security_protocol.lower()}-{uuid.uuid4().hex[:10]}"
    spec = spec_for(topic, partitions=PARTITIONS, min_records=1, max_records_per_run=250)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json", by_alias=True)))
    lake_root, home = tmp_path / "lake", tmp_path / "dagster_home"
    outputs: dict[str, str] = {}
    try:
        created = _cli(["kafka", "create-topic", topic, "--partitions", str(PARTITIONS),
                        "--data-dir", str(tmp_path / "no-local-kafka")], outputs)  # fmt: skip
        assert (
            created
            == f"created topic {topic!r} with {PARTITIONS} partitions on {secured.bootstrap_servers}\n"
        )
        _cli(["produce", "--spec", str(spec_file), "--count", str(COUNT), "--rate", "0", "--seed", "11",
              "--bad-ratio", "0.05"], outputs)  # fmt: skip
        ends = {p: b.end for p, b in partition_offsets(secured, topic).items()}
        assert sum(ends.values()) == COUNT and len(ends) == PARTITIONS

        # Dagster: the resource from the same variables, the password only as an EnvVar reference.
        resources = {"kafka": KafkaResource.from_env(), "lake": LakeResource(root=str(lake_root))}
        assert resources["kafka"].sasl_password == (
            dg.EnvVar("KAFKA_SASL_PASSWORD") if secured.sasl_password else None
        )
        home.mkdir()
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            daemon = Daemon(build_definitions(spec, resources), instance, resources)
            assert daemon.catch_up() >= 2  # 600 records at 250 a run
            assert all(r.success for r in daemon.results)
            run_texts = {
                f"run {run.run_id}": repr((run.run_config, run.tags))
                + repr([e.dagster_event for e in instance.all_logs(run.run_id)])
                for run in instance.get_runs()
            }
        lake = LakeLocation(str(lake_root))
        bronze = read_table(lake, spec, "bronze")
        coords = list(
            zip(bronze.column("partition").to_pylist(), bronze.column("offset").to_pylist(), strict=True)
        )
        assert sorted(coords) == [(p, o) for p, end in sorted(ends.items()) for o in range(end)]
        for table in ("bronze", "silver", "dead_letters"):
            assert committed_offsets(lake.uri(spec.name, table), spec.name, topic, list(ends)) == ends

        status = _cli(["ingest", "status", "--spec", str(spec_file), "--lake", str(lake_root)], outputs)
        assert re.search(r"^\s+total\s+0$", status, re.MULTILINE), status
        shown = _cli(["metrics", "show", "--spec", str(spec_file), "--lake", str(lake_root)], outputs)
        assert re.search(r"^rt_training_kafka_up\{[^}]*\} 1\.0$", shown, re.MULTILINE), shown
        end_metrics = re.findall(r"^rt_training_kafka_end_offset\{[^}]*\} ([0-9.e+]+)$", shown, re.MULTILINE)
        assert sum(float(v) for v in end_metrics) == COUNT
        outputs["metrics serve"] = _serve_once(spec_file, lake_root)
        assert re.search(r"^rt_training_kafka_up\{[^}]*\} 1\.0$", outputs["metrics serve"], re.MULTILINE)
    finally:
        delete_topic(secured, topic)

    if secured.sasl_password:
        captured = capfd.readouterr()
        texts = {**outputs, **run_texts, "stdout": captured.out, "stderr": captured.err, "logs": caplog.text}
        assert scan_for(secured.sasl_password, [lake_root, home, tmp_path], texts) == []


def _serve_once(spec_file: Path, lake_root: Path) -> str:
    """``rt-training metrics serve`` (environment inherited) read once: its /metrics body and stderr."""
    served = serve_metrics_once(
        ["--spec", str(spec_file), "--lake", str(lake_root)], env={**os.environ, "PYTHONPATH": os.getcwd()}
    )
    return served.body + served.stderr
