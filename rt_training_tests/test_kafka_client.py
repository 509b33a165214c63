"""KafkaSettings (pure) and topic administration on the session broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from rt_training.stream.admin import TopicConflictError, create_topic, delete_topic, partition_count
from rt_training.stream.client import BOOTSTRAP_ENV_VAR, KafkaSettings, make_consumer


def _pem_files(folder: Path, *names: str) -> list[str]:
    """Placeholder files: the settings check that they exist; kafka-python reads them only when it connects."""
    paths = [folder / name for name in names]
    for path in paths:
        path.write_text("-----BEGIN CERTIFICATE-----\n")
    return [str(p) for p in paths]


def test_plaintext_client_kwargs() -> None:
    settings = KafkaSettings(
        bootstrap_servers=" a:9092, b:9093 ,", connect_timeout_s=2.5, request_timeout_s=7
    )
    assert settings.client_kwargs() == {
        "bootstrap_servers": ["a:9092", "b:9093"],
        "client_id": "rt-training",
        "security_protocol": "PLAINTEXT",
        "request_timeout_ms": 7000,
        "bootstrap_timeout_ms": 2500,
        "reconnect_backoff_max_ms": 1000,
    }


def test_sasl_ssl_client_kwargs_carry_credentials_and_certificates(tmp_path: Path) -> None:
    ca, cert, key = _pem_files(tmp_path, "ca.pem", "client.pem", "client.key")
    settings = KafkaSettings(
        bootstrap_servers="broker:9094",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password="s3cret",
        ssl_cafile=ca,
        ssl_certfile=cert,
        ssl_keyfile=key,
        ssl_password="k3y-pass",
    )
    kwargs = settings.client_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert (kwargs["sasl_mechanism"], kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == (
        "SCRAM-SHA-512",
        "svc",
        "s3cret",
    )
    assert (kwargs["ssl_cafile"], kwargs["ssl_certfile"], kwargs["ssl_keyfile"]) == (ca, cert, key)
    assert (kwargs["ssl_password"], kwargs["ssl_check_hostname"]) == ("k3y-pass", True)
    assert "s3cret" not in repr(settings) and "k3y-pass" not in str(settings)


def test_plaintext_kwargs_have_no_security_options() -> None:
    kwargs = KafkaSettings().client_kwargs()
    assert not [k for k in kwargs if k.startswith(("sasl_", "ssl_"))]


@pytest.mark.parametrize("client", ["KafkaConsumer", "KafkaProducer", "KafkaAdminClient"])
def test_every_client_accepts_the_shared_kwargs(client: str, tmp_path: Path) -> None:
    # kafka-python rejects unknown configuration keys when a client is built.
    import kafka
    import kafka.admin

    cls = getattr(kafka.admin if client == "KafkaAdminClient" else kafka, client)
    (ca,) = _pem_files(tmp_path, "ca.pem")
    full = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password="p",
        ssl_cafile=ca,
        ssl_password="k",
    )
    assert set(full.client_kwargs()) <= set(cls.DEFAULT_CONFIG)


def test_from_env_reads_bootstrap_and_applies_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BOOTSTRAP_ENV_VAR, "k1:9092,k2:9092")
    settings = KafkaSettings.from_env(client_id="ingest", request_timeout_s=3.0)
    assert (settings.servers, settings.client_id, settings.request_timeout_s) == (
        ["k1:9092", "k2:9092"],
        "ingest",
        3.0,
    )
    monkeypatch.delenv(BOOTSTRAP_ENV_VAR)
    assert KafkaSettings.from_env().bootstrap_servers == "127.0.0.1:9092"
    monkeypatch.setenv(BOOTSTRAP_ENV_VAR, "")
    assert KafkaSettings.from_env().bootstrap_servers == "127.0.0.1:9092"


@pytest.mark.kafka
def test_create_topic_is_idempotent_and_visible_in_metadata(
    kafka_broker: KafkaSettings, topic_factory
) -> None:
    name = topic_factory(partitions=3, config={"retention.ms": "600000"})
    assert partition_count(kafka_broker, name) == 3
    consumer = make_consumer(kafka_broker)
    try:
        assert consumer.partitions_for_topic(name) == {0, 1, 2}
    finally:
        consumer.close()
    assert create_topic(kafka_broker, name, 3) is False
    with pytest.raises(
        TopicConflictError, match=rf"topic '{name}' already exists on .* with 3 partitions, not 2"
    ):
        create_topic(kafka_broker, name, 2)


@pytest.mark.kafka
def test_delete_topic(kafka_broker: KafkaSettings, topic_factory) -> None:
    name = topic_factory()
    assert delete_topic(kafka_broker, name) is True
    assert partition_count(kafka_broker, name) is None
    assert delete_topic(kafka_broker, name) is False
