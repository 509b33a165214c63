"""Kafka connection settings and client factories with short, bounded timeouts.

kafka-python 3 waits 30 s and raises a bare ``KafkaTimeoutError`` when no broker answers; every factory here
bounds that wait and turns it into :class:`KafkaUnreachableError`, which names the address tried.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

BOOTSTRAP_ENV_VAR = "KAFKA_BOOTSTRAP_SERVERS"
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]


class KafkaUnreachableError(ConnectionError):
    """No broker of the configured cluster answered within the timeout."""

    def __init__(self, bootstrap_servers: str, waited_s: float, cause: str = ""):
        self.bootstrap_servers = bootstrap_servers
        self.waited_s = waited_s
        detail = f" ({cause})" if cause else ""
        super().__init__(
            f"Kafka is unreachable at {bootstrap_servers}: no broker answered within {waited_s:.1f}s{detail}. "
            f"Start the local broker with `rt-training kafka start`, or set {BOOTSTRAP_ENV_VAR} to a running cluster."
        )


@dataclass(frozen=True)
class KafkaSettings:
    """Everything needed to talk to a cluster. Secrets are plain values here; the Dagster resource reads them
    from the environment through ``EnvVar``."""

    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    client_id: str = "rt-training"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    connect_timeout_s: float = 10.0
    request_timeout_s: float = 15.0

    @classmethod
    def from_env(cls, **overrides: Any) -> KafkaSettings:
        """Settings from ``KAFKA_BOOTSTRAP_SERVERS`` (default 127.0.0.1:9092) plus explicit overrides."""
        base = cls(bootstrap_servers=os.environ.get(BOOTSTRAP_ENV_VAR) or DEFAULT_BOOTSTRAP)
        return replace(base, **overrides)

    @property
    def servers(self) -> list[str]:
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by KafkaConsumer, KafkaProducer and KafkaAdminClient."""
        kw: dict[str, Any] = {
            "bootstrap_servers": self.servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": int(self.request_timeout_s * 1000),
            "bootstrap_timeout_ms": int(self.connect_timeout_s * 1000),
            "reconnect_backoff_max_ms": 1000,
        }
        if self.sasl_mechanism:
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = self.sasl_password
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(self, key):
                kw[key] = getattr(self, key)
        return kw


def check_reachable(settings: KafkaSettings, timeout_s: float | None = None) -> None:
    """Fail fast with :class:`KafkaUnreachableError` unless some bootstrap server accepts a TCP connection.

    A TCP probe answers in milliseconds where kafka-python's own bootstrap would retry for its full timeout.
    """
    timeout = settings.connect_timeout_s if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        for server in settings.servers:
            host, _, port = server.rpartition(":")
            try:
                with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=2.0):
                    return
            except (OSError, ValueError) as exc:
                last_error = f"{server}: {exc}"
        if time.monotonic() >= deadline:
            raise KafkaUnreachableError(settings.bootstrap_servers, timeout, last_error)
        time.sleep(0.25)


@contextmanager
def translate_timeouts(settings: KafkaSettings, started: float | None = None) -> Iterator[None]:
    """Turn kafka-python's bare timeout/connection errors into :class:`KafkaUnreachableError`."""
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError

    t0 = time.monotonic() if started is None else started
    try:
        yield
    except (KafkaTimeoutError, KafkaConnectionError) as exc:
        raise KafkaUnreachableError(settings.bootstrap_servers, time.monotonic() - t0, repr(exc)) from exc


def make_consumer(settings: KafkaSettings, **kwargs: Any):
    """A KafkaConsumer with no group subscription (callers assign partitions), read_committed by default."""
    from kafka import KafkaConsumer

    check_reachable(settings)
    opts: dict[str, Any] = {
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
        "auto_offset_reset": "none",
        "group_id": None,
    }
    opts.update(kwargs)
    with translate_timeouts(settings):
        return KafkaConsumer(**settings.client_kwargs(), **opts)


def make_producer(settings: KafkaSettings, **kwargs: Any):
    """A KafkaProducer with bounded metadata waits."""
    from kafka import KafkaProducer

    check_reachable(settings)
    opts: dict[str, Any] = {"max_block_ms": int(settings.request_timeout_s * 1000)}
    opts.update(kwargs)
    with translate_timeouts(settings):
        return KafkaProducer(**settings.client_kwargs(), **opts)


def make_admin(settings: KafkaSettings, **kwargs: Any):
    """A KafkaAdminClient with bounded waits."""
    from kafka.admin import KafkaAdminClient

    check_reachable(settings)
    with translate_timeouts(settings):
        return KafkaAdminClient(**settings.client_kwargs(), **kwargs)
