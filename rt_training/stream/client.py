"""Kafka connection settings and client factories with short, bounded timeouts.

kafka-python 3 waits 30 s and raises a bare ``KafkaTimeoutError`` when no broker answers, and reports a wrong
password or an untrusted certificate only in its log. Every factory here first probes the cluster
(:func:`check_reachable`: TCP, then the TLS handshake and the SASL exchange the settings ask for) and raises one
subclass of :class:`KafkaConnectionProblem` that names what failed, where, and what to do:
:class:`KafkaUnreachableError`, :class:`KafkaAuthenticationError`, :class:`KafkaTLSError` or
:class:`KafkaProtocolMismatchError`.
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


class KafkaConnectionProblem(ConnectionError):
    """No working connection to the cluster at ``bootstrap_servers``; the message says why and what to do.

    Messages name servers, protocols, mechanisms and users, never a password.
    """

    def __init__(self, bootstrap_servers: str, message: str):
        self.bootstrap_servers = bootstrap_servers
        super().__init__(message)


class KafkaUnreachableError(KafkaConnectionProblem):
    """No broker of the configured cluster answered within the timeout."""

    def __init__(self, bootstrap_servers: str, waited_s: float, cause: str = ""):
        self.waited_s = waited_s
        detail = f" ({cause})" if cause else ""
        super().__init__(
            bootstrap_servers,
            f"Kafka is unreachable at {bootstrap_servers}: no broker answered within {waited_s:.1f}s{detail}. "
            f"Start the local broker with `rt-training kafka start`, or set {BOOTSTRAP_ENV_VAR} to a running "
            f"cluster.",
        )


class KafkaAuthenticationError(KafkaConnectionProblem):
    """The broker refused the SASL credentials, or does not enable the configured mechanism."""

    def __init__(
        self, bootstrap_servers: str, server: str, mechanism: str, username: str | None, reason: str
    ):
        self.server = server
        self.mechanism = mechanism
        self.username = username
        self.reason = reason
        super().__init__(
            bootstrap_servers,
            f"Kafka authentication failed at {server}: user {username!r} with SASL mechanism {mechanism}: "
            f"{reason}. Check the user name, password and mechanism your cluster's operator gave you.",
        )


class KafkaTLSError(KafkaConnectionProblem):
    """The TLS handshake failed; ``problem`` names the certificate problem (unknown CA, hostname mismatch,
    expired certificate, ...)."""

    def __init__(self, bootstrap_servers: str, server: str, problem: str, fix: str):
        self.server = server
        self.problem = problem
        super().__init__(bootstrap_servers, f"TLS handshake with Kafka at {server} failed: {problem}. {fix}")


class KafkaProtocolMismatchError(KafkaConnectionProblem):
    """The listener speaks another security protocol than the client (TLS against plaintext, SASL expected, ...)."""

    def __init__(self, bootstrap_servers: str, server: str, client_protocol: str, finding: str, fix: str):
        self.server = server
        self.client_protocol = client_protocol
        super().__init__(
            bootstrap_servers,
            f"security protocol mismatch at {server}: the client uses {client_protocol} but {finding}. {fix}",
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
    """Fail fast unless some bootstrap server completes the connection the settings describe.

    Each server is probed in turn (:func:`rt_training.stream.handshake.probe_server`): TCP connect, the TLS
    handshake for SSL/SASL_SSL, an ApiVersions request, and the SASL handshake and authentication for
    SASL_*. A definite answer (credentials refused, certificate not trusted, another protocol on the port)
    raises at once as :class:`KafkaAuthenticationError`, :class:`KafkaTLSError` or
    :class:`KafkaProtocolMismatchError`; silence and refused connections are retried until ``timeout_s``
    (default ``settings.connect_timeout_s``) and then raise :class:`KafkaUnreachableError`. The probe answers
    in milliseconds where kafka-python's own bootstrap would retry for its full timeout.
    """
    from rt_training.stream.handshake import ServerSilent, probe_server

    timeout = settings.connect_timeout_s if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        for server in settings.servers:
            host, _, port = server.rpartition(":")
            try:
                address = (host.strip("[]") or "127.0.0.1", int(port))
                with socket.create_connection(address, timeout=2.0) as sock:
                    probe_server(settings, server, sock, min(5.0, max(1.0, deadline - time.monotonic())))
                    return
            except KafkaConnectionProblem:  # a definite answer (it is an OSError too): no retry
                raise
            except (OSError, ValueError, ServerSilent) as exc:
                last_error = f"{server}: {exc}"
        if time.monotonic() >= deadline:
            raise KafkaUnreachableError(settings.bootstrap_servers, timeout, last_error)
        time.sleep(0.25)


@contextmanager
def translate_timeouts(settings: KafkaSettings, started: float | None = None) -> Iterator[None]:
    """Turn kafka-python's bare timeout/connection errors into :class:`KafkaUnreachableError`, and its SASL
    errors into :class:`KafkaAuthenticationError`."""
    from kafka.errors import (
        KafkaConnectionError,
        KafkaTimeoutError,
        SaslAuthenticationFailedError,
        UnsupportedSaslMechanismError,
    )

    t0 = time.monotonic() if started is None else started
    try:
        yield
    except (SaslAuthenticationFailedError, UnsupportedSaslMechanismError) as exc:
        raise KafkaAuthenticationError(
            settings.bootstrap_servers,
            settings.bootstrap_servers,
            settings.sasl_mechanism or "(none)",
            settings.sasl_username,
            type(exc).__name__,
        ) from None
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
