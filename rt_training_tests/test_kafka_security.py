"""Secured listeners of the local broker (SASL_PLAINTEXT with SCRAM, SSL from a private CA) and the errors a
client meets there: a refused login, an untrusted CA, a wrong protocol, each named within 5 s."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from rt_training.ops.tls import make_certificate_authority
from rt_training.stream.admin import create_topic, delete_topic
from rt_training.stream.client import (
    KafkaAuthenticationError,
    KafkaConnectionProblem,
    KafkaProtocolMismatchError,
    KafkaSettings,
    KafkaTLSError,
    make_admin,
    make_consumer,
    make_producer,
)
from rt_training_tests.conftest import SecuredBroker

FACTORIES = [make_consumer, make_producer, make_admin]
FACTORY_IDS = ["consumer", "producer", "admin"]


def _round_trip(settings: KafkaSettings, topic: str) -> list[tuple[bytes, bytes]]:
    """Create ``topic``, write three records and read them back, all through ``settings``."""
    from kafka import TopicPartition

    create_topic(settings, topic, 1)
    try:
        producer = make_producer(settings)
        try:
            for i in range(3):
                producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
            producer.flush(timeout=10)
        finally:
            producer.close()
        consumer = make_consumer(settings, auto_offset_reset="earliest")
        try:
            partition = TopicPartition(topic, 0)
            consumer.assign([partition])
            consumer.seek_to_beginning(partition)
            records: list[tuple[bytes, bytes]] = []
            deadline = time.monotonic() + 15
            while len(records) < 3 and time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=500).values():
                    records += [(r.key, r.value) for r in batch]
            return records
        finally:
            consumer.close()
    finally:
        delete_topic(settings, topic)


@pytest.mark.parametrize(
    "listener", ["SCRAM-SHA-512", "SCRAM-SHA-256", "SSL"], ids=["sasl-scram-512", "sasl-scram-256", "ssl"]
)
def test_round_trip_over_secured_listener(secured_broker: SecuredBroker, listener: str, ssl_broker) -> None:
    settings = ssl_broker if listener == "SSL" else secured_broker.sasl(listener)
    topic = f"secured-{listener.lower()}-{time.time_ns()}"
    assert _round_trip(settings, topic) == [(b"k0", b"v0"), (b"k1", b"v1"), (b"k2", b"v2")]


def _raises_fast(factory: Callable, settings: KafkaSettings, error: type[KafkaConnectionProblem]) -> str:
    t0 = time.monotonic()
    with pytest.raises(error) as caught:
        factory(settings)
    assert time.monotonic() - t0 < 5
    return str(caught.value)


@pytest.mark.parametrize("factory", FACTORIES, ids=FACTORY_IDS)
def test_wrong_password_is_an_authentication_error(secured_broker: SecuredBroker, factory: Callable) -> None:
    wrong = "not-" + secured_broker.password
    settings = replace(secured_broker.sasl(), sasl_password=wrong)
    message = _raises_fast(factory, settings, KafkaAuthenticationError)
    assert f"Kafka authentication failed at {settings.bootstrap_servers}: user 'alice'" in message
    assert "SCRAM-SHA-512" in message and "invalid credentials" in message
    assert wrong not in message and secured_broker.password not in message


def test_mechanism_the_listener_does_not_enable(secured_broker: SecuredBroker) -> None:
    settings = secured_broker.sasl("PLAIN")
    message = _raises_fast(make_consumer, settings, KafkaAuthenticationError)
    assert "mechanism PLAIN: the listener does not enable this mechanism; it enables SCRAM-SHA-512" in message
    assert secured_broker.password not in message


@pytest.mark.parametrize("factory", FACTORIES, ids=FACTORY_IDS)
def test_untrusted_ca_is_a_tls_error(ssl_broker: KafkaSettings, tmp_path: Path, factory: Callable) -> None:
    other_ca = make_certificate_authority(tmp_path / "other-ca", name="some other CA")
    message = _raises_fast(factory, replace(ssl_broker, ssl_cafile=str(other_ca.cert)), KafkaTLSError)
    assert f"TLS handshake with Kafka at {ssl_broker.bootstrap_servers} failed: unknown CA" in message
    assert str(other_ca.cert) in message


def test_system_trust_store_does_not_know_the_local_ca(ssl_broker: KafkaSettings) -> None:
    message = _raises_fast(make_admin, replace(ssl_broker, ssl_cafile=None), KafkaTLSError)
    assert "unknown CA" in message and "the system's trusted CAs" in message


def _wrong_protocol_cases(broker: SecuredBroker) -> dict[str, tuple[KafkaSettings, str]]:
    sasl, plain = broker.sasl(), broker.plaintext
    cases = {
        "plaintext-client-on-sasl": (
            KafkaSettings(bootstrap_servers=sasl.bootstrap_servers),
            "the listener requires SASL authentication (mechanisms SCRAM-SHA-512, SCRAM-SHA-256, OAUTHBEARER)",
        ),
        "sasl-client-on-plaintext": (
            replace(sasl, bootstrap_servers=plain.bootstrap_servers),
            "the listener does not use SASL authentication",
        ),
    }
    if broker.ssl is not None:
        cases |= {
            "plaintext-client-on-ssl": (
                KafkaSettings(bootstrap_servers=broker.ssl.bootstrap_servers),
                "the listener speaks TLS",
            ),
            "sasl-client-on-ssl": (
                replace(sasl, bootstrap_servers=broker.ssl.bootstrap_servers),
                "the listener speaks TLS",
            ),
            "ssl-client-on-plaintext": (
                replace(broker.ssl, bootstrap_servers=plain.bootstrap_servers),
                "the listener does not speak TLS",
            ),
            "sasl-ssl-client-on-sasl-plaintext": (
                replace(sasl, security_protocol="SASL_SSL", ssl_cafile=broker.ssl.ssl_cafile),
                "the listener does not speak TLS",
            ),
        }
    return cases


@pytest.mark.parametrize(
    "case",
    [
        "plaintext-client-on-sasl",
        "sasl-client-on-plaintext",
        "plaintext-client-on-ssl",
        "sasl-client-on-ssl",
        "ssl-client-on-plaintext",
        "sasl-ssl-client-on-sasl-plaintext",
    ],
)
def test_wrong_protocol_is_a_protocol_mismatch(secured_broker: SecuredBroker, case: str) -> None:
    cases = _wrong_protocol_cases(secured_broker)
    if case not in cases:
        pytest.skip("no SSL listener: the openssl command is missing")
    settings, finding = cases[case]
    message = _raises_fast(make_consumer, settings, KafkaProtocolMismatchError)
    assert f"the client uses {settings.security_protocol} but {finding}" in message
    assert secured_broker.password not in message


def test_state_and_configuration_record_listeners_but_no_password(secured_broker: SecuredBroker) -> None:
    state = secured_broker.status.state
    assert state is not None
    recorded = json.loads(Path(state.data_dir, "state.json").read_text())
    assert recorded["sasl_port"] == state.sasl_port and recorded["sasl_usernames"] == ["alice"]
    assert recorded["sasl_mechanisms"] == ["SCRAM-SHA-512", "SCRAM-SHA-256", "OAUTHBEARER"]
    if secured_broker.ssl is not None:
        assert recorded["ssl_cafile"] == str(Path(state.data_dir, "tls", "ca.pem"))
        assert Path(state.data_dir, "tls", "broker.key").stat().st_mode & 0o077 == 0
    for path in Path(state.data_dir).rglob("*"):
        if path.is_file() and path.suffix in (".json", ".properties", ".log", ".pem"):
            assert secured_broker.password not in path.read_text(errors="replace"), path


def test_cli_starts_secured_listeners_and_prints_the_environment_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from rt_training.cli.main import cli
    from rt_training.ops.kafka_local import (
        BOOTSTRAP_ENV_VAR,
        LocalKafkaConfig,
        free_port,
        read_state,
        stop_broker,
    )

    monkeypatch.delenv(BOOTSTRAP_ENV_VAR, raising=False)
    password = "cli-" + str(time.time_ns())
    data_dir = tmp_path / "kafka"
    port = free_port()
    runner = CliRunner()
    try:
        args = ["kafka", "start", "--port", str(port), "--sasl-user", f"bob:{password}", "--ssl"]
        done = runner.invoke(cli, [*args, "--data-dir", str(data_dir)])
        assert done.exit_code == 0, done.output
        state = read_state(data_dir / "state.json")
        assert state is not None and state.sasl_port and state.ssl_port
        assert f"export {BOOTSTRAP_ENV_VAR}=127.0.0.1:{state.sasl_port}" in done.output
        assert (
            "export KAFKA_SASL_USERNAME=bob KAFKA_SASL_PASSWORD=...  # the password given to --sasl-user"
            in (done.output)
        )
        assert (
            f"export KAFKA_SECURITY_PROTOCOL=SSL KAFKA_SSL_CAFILE={data_dir / 'tls' / 'ca.pem'}"
            in done.output
        )
        assert password not in done.output
        settings = KafkaSettings(
            bootstrap_servers=f"127.0.0.1:{state.sasl_port}",
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_username="bob",
            sasl_password=password,
        )
        admin = make_admin(settings)
        admin.close()
    finally:
        stop_broker(LocalKafkaConfig(data_dir=data_dir))
