"""Shared fixtures: a real Kafka broker for the test session, and unique topics on it."""

from __future__ import annotations

import re
import secrets
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import pytest

from rt_training.ops.kafka_local import (
    BrokerStatus,
    LocalKafkaConfig,
    external_bootstrap,
    free_port,
    start_broker,
    stop_broker,
)
from rt_training.stream.client import BOOTSTRAP_ENV_VAR, KafkaSettings

_BROKER_FIXTURES = {"kafka_broker", "secured_broker", "sasl_broker", "ssl_broker"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use a broker carry the ``kafka`` marker, so ``-m "not kafka"`` runs without Java."""
    for item in items:
        if _BROKER_FIXTURES & set(getattr(item, "fixturenames", ())):
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


@dataclass(frozen=True)
class SecuredBroker:
    """A local broker with PLAINTEXT, SASL_PLAINTEXT (SCRAM-SHA-512 and -256) and SSL listeners.

    ``ssl`` is None when openssl is missing (no SSL listener). ``password`` is random per session, so a test
    can look for it in anything the project wrote.
    """

    status: BrokerStatus
    username: str
    password: str = field(repr=False)

    @property
    def plaintext(self) -> KafkaSettings:
        return self.status.settings()

    def sasl(self, mechanism: str = "SCRAM-SHA-512") -> KafkaSettings:
        return self.status.sasl_settings(self.username, self.password, mechanism)

    @property
    def ssl(self) -> KafkaSettings | None:
        state = self.status.state
        return self.status.ssl_settings() if state is not None and state.ssl_port else None


@pytest.fixture(scope="session")
def secured_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    """One local KRaft broker with three listeners (PLAINTEXT, SASL_PLAINTEXT, SSL from a CA made with openssl),
    started by the project's own script even when ``KAFKA_BOOTSTRAP_SERVERS`` names another cluster, and
    stopped at the end of the session."""
    password = secrets.token_urlsafe(18)
    config = LocalKafkaConfig(
        data_dir=tmp_path_factory.mktemp("secured-kafka"),
        port=free_port(),
        sasl_users={"alice": password},
        ssl=shutil.which("openssl") is not None,
    )
    with pytest.MonkeyPatch.context() as env:
        env.delenv(BOOTSTRAP_ENV_VAR, raising=False)
        started = start_broker(config)
    try:
        yield SecuredBroker(started, "alice", password)
    finally:
        stop_broker(config)


@pytest.fixture(scope="session")
def sasl_broker(secured_broker: SecuredBroker) -> KafkaSettings:
    """Settings for the SASL_PLAINTEXT listener as user ``alice`` with SCRAM-SHA-512 (password in the settings)."""
    return secured_broker.sasl()


@pytest.fixture(scope="session")
def ssl_broker(secured_broker: SecuredBroker) -> KafkaSettings:
    """Settings for the SSL listener; ``ssl_cafile`` is the path of the CA that signed the broker's certificate."""
    if secured_broker.ssl is None:
        pytest.skip(
            "the SSL listener needs the openssl command to make its certificates (apt-get install openssl)"
        )
    return secured_broker.ssl


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
