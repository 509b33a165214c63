"""Kafka connection settings and client factories with short, bounded timeouts.

:class:`KafkaSettings` is the one source of connection settings: the CLI, the exporter, the producer, the Dagster
resource and the tests all build it, from the environment (:data:`ENV_VARS`) and from flags that override it.
kafka-python 3 waits 30 s and raises a bare ``KafkaTimeoutError`` when no broker answers, and reports a wrong
password or an untrusted certificate only in its log. Every factory here first probes the cluster
(:func:`check_reachable`: TCP, then the TLS handshake and the SASL exchange the settings ask for) and raises one
subclass of :class:`KafkaConnectionProblem` that names what failed, where, and what to do:
:class:`KafkaUnreachableError`, :class:`KafkaAuthenticationError`, :class:`KafkaTLSError` or
:class:`KafkaProtocolMismatchError`.
"""

from __future__ import annotations

import importlib
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

BOOTSTRAP_ENV_VAR = "KAFKA_BOOTSTRAP_SERVERS"
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SECURITY_PROTOCOLS: tuple[str, ...] = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")

#: Every setting's environment variable, by KafkaSettings field. The README's settings table lists the same.
ENV_VARS: dict[str, str] = {
    "bootstrap_servers": BOOTSTRAP_ENV_VAR,
    "security_protocol": "KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "KAFKA_SASL_MECHANISM",
    "sasl_username": "KAFKA_SASL_USERNAME",
    "sasl_password": "KAFKA_SASL_PASSWORD",
    "sasl_oauth_token_provider": "KAFKA_SASL_OAUTH_TOKEN_PROVIDER",
    "ssl_cafile": "KAFKA_SSL_CAFILE",
    "ssl_certfile": "KAFKA_SSL_CERTFILE",
    "ssl_keyfile": "KAFKA_SSL_KEYFILE",
    "ssl_password": "KAFKA_SSL_PASSWORD",
    "ssl_check_hostname": "KAFKA_SSL_CHECK_HOSTNAME",
    "client_id": "KAFKA_CLIENT_ID",
    "connect_timeout_s": "KAFKA_CONNECT_TIMEOUT_S",
    "request_timeout_s": "KAFKA_REQUEST_TIMEOUT_S",
}
#: The command-line flag of each setting; secrets have none (their flags name a file to read them from).
FLAGS: dict[str, str] = {
    "bootstrap_servers": "--bootstrap-servers",
    "security_protocol": "--security-protocol",
    "sasl_mechanism": "--sasl-mechanism",
    "sasl_username": "--sasl-username",
    "sasl_password": "--sasl-password-file",
    "sasl_oauth_token_provider": "--sasl-oauth-token-provider",
    "ssl_cafile": "--ssl-cafile",
    "ssl_certfile": "--ssl-certfile",
    "ssl_keyfile": "--ssl-keyfile",
    "ssl_password": "--ssl-password-file",
    "ssl_check_hostname": "--ssl-check-hostname/--no-ssl-check-hostname",
    "client_id": "--client-id",
    "connect_timeout_s": "--connect-timeout",
    "request_timeout_s": "--request-timeout",
}
SECRET_FIELDS: frozenset[str] = frozenset({"sasl_password", "ssl_password"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class KafkaSettingsError(ValueError):
    """A Kafka setting is missing, malformed or contradicts another; the message names the setting and the fix."""


def setting_name(field_name: str) -> str:
    """How a user names a setting: its environment variable and its flag, e.g. ``KAFKA_SASL_MECHANISM
    (--sasl-mechanism)``."""
    return f"{ENV_VARS[field_name]} ({FLAGS[field_name]})"


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
        self,
        bootstrap_servers: str,
        server: str,
        mechanism: str,
        username: str | None,
        reason: str,
        token_provider: str | None = None,
    ):
        self.server = server
        self.mechanism = mechanism
        self.username = username
        self.reason = reason
        if mechanism == "OAUTHBEARER":
            who = f"SASL mechanism {mechanism} with token provider {token_provider or '(none)'}"
            fix = (
                "Check the token provider and the token's claims and scopes your cluster's operator requires."
            )
        else:
            who = f"user {username!r} with SASL mechanism {mechanism}"
            fix = "Check the user name, password and mechanism your cluster's operator gave you."
        super().__init__(
            bootstrap_servers, f"Kafka authentication failed at {server}: {who}: {reason}. {fix}"
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


@dataclass(frozen=True, repr=False)
class KafkaSettings:
    """Everything needed to talk to a cluster, checked when built; every entry point builds it the same way.

    :meth:`from_env` reads each field from its environment variable (:data:`ENV_VARS`); the CLI's Kafka flags
    and the Dagster ``KafkaResource`` override or supply the same fields. ``repr`` hides the two secrets.

    Raises
    ------
    KafkaSettingsError
        An unknown protocol or mechanism, a SASL mechanism without its credentials (or with a protocol that
        does not use SASL), an SSL file that does not exist, a token provider that cannot be imported, a
        malformed broker address or a timeout that is not positive.
    """

    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    client_id: str = "rt-training"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    sasl_oauth_token_provider: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = None
    ssl_check_hostname: bool = True
    connect_timeout_s: float = 10.0
    request_timeout_s: float = 15.0

    def __post_init__(self) -> None:
        protocol = str(self.security_protocol).strip().upper()
        if protocol not in SECURITY_PROTOCOLS:
            raise KafkaSettingsError(
                f"{setting_name('security_protocol')} is {self.security_protocol!r}, not a Kafka security "
                f"protocol: use one of {', '.join(SECURITY_PROTOCOLS)} (the cluster's listener says which)."
            )
        object.__setattr__(self, "security_protocol", protocol)
        if self.sasl_mechanism:
            object.__setattr__(self, "sasl_mechanism", self.sasl_mechanism.strip().upper())
        self._check_servers()
        self._check_sasl()
        self._check_ssl()
        for name in ("connect_timeout_s", "request_timeout_s"):
            if not float(getattr(self, name)) > 0:
                raise KafkaSettingsError(
                    f"{setting_name(name)} is {getattr(self, name)!r}: give a number of seconds above 0."
                )

    def _check_servers(self) -> None:
        if not self.servers:
            raise KafkaSettingsError(
                f"{setting_name('bootstrap_servers')} is empty: give the brokers as host:port[,host:port]."
            )
        for server in self.servers:
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise KafkaSettingsError(
                    f"{setting_name('bootstrap_servers')}: {server!r} is not host:port; give the brokers as "
                    "host:port[,host:port] (e.g. b-1.kafka.example.com:9096)."
                )

    def _check_sasl(self) -> None:
        uses_sasl = self.security_protocol.startswith("SASL_")
        mechanism = self.sasl_mechanism
        if not uses_sasl:
            if mechanism:
                raise KafkaSettingsError(
                    f"{setting_name('sasl_mechanism')} is {mechanism} but {setting_name('security_protocol')} "
                    f"is {self.security_protocol}, which does not authenticate with SASL: set the protocol to "
                    "SASL_SSL (or SASL_PLAINTEXT), or unset the mechanism."
                )
            return
        if not mechanism:
            raise KafkaSettingsError(
                f"{setting_name('security_protocol')} is {self.security_protocol} but no SASL mechanism is set: "
                f"set {setting_name('sasl_mechanism')} to one of {', '.join(SASL_MECHANISMS)}."
            )
        if mechanism not in SASL_MECHANISMS:
            raise KafkaSettingsError(
                f"{setting_name('sasl_mechanism')} is {mechanism!r}, not a supported SASL mechanism: use one of "
                f"{', '.join(SASL_MECHANISMS)}."
            )
        if mechanism == "OAUTHBEARER":
            if not self.sasl_oauth_token_provider:
                raise KafkaSettingsError(
                    f"{setting_name('sasl_mechanism')} is OAUTHBEARER but no token provider is set: set "
                    f"{setting_name('sasl_oauth_token_provider')} to package.module:factory, a callable that "
                    "returns a kafka-python AbstractTokenProvider."
                )
            resolve_token_provider_factory(self.sasl_oauth_token_provider)
            return
        missing = [
            f"{ENV_VARS['sasl_username']} ({FLAGS['sasl_username']})" if not self.sasl_username else "",
            f"{ENV_VARS['sasl_password']} ({FLAGS['sasl_password']})" if not self.sasl_password else "",
        ]
        if any(missing):
            raise KafkaSettingsError(
                f"{setting_name('sasl_mechanism')} is {mechanism} but {' and '.join(m for m in missing if m)} "
                f"{'is' if sum(map(bool, missing)) == 1 else 'are'} not set: {mechanism} needs a user name and "
                "a password."
            )

    def _check_ssl(self) -> None:
        files = [n for n in ("ssl_cafile", "ssl_certfile", "ssl_keyfile") if getattr(self, n)]
        if files and not self.security_protocol.endswith("SSL"):
            raise KafkaSettingsError(
                f"{setting_name(files[0])} is set but {setting_name('security_protocol')} is "
                f"{self.security_protocol}, which does not use TLS: set the protocol to SSL or SASL_SSL, or unset "
                "the SSL files."
            )
        for name in files:
            path = Path(getattr(self, name)).expanduser()
            if not path.is_file():
                raise KafkaSettingsError(
                    f"{setting_name(name)} is {str(path)!r}, which is not a readable file: give the path of the "
                    "PEM file (relative paths start at the working directory)."
                )
        if self.ssl_keyfile and not self.ssl_certfile:
            raise KafkaSettingsError(
                f"{setting_name('ssl_keyfile')} is set without {setting_name('ssl_certfile')}: a client key "
                "needs its certificate (mutual TLS needs both)."
            )

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            shown = "'***'" if f.name in SECRET_FIELDS and value is not None else repr(value)
            parts.append(f"{f.name}={shown}")
        return f"{type(self).__name__}({', '.join(parts)})"

    __str__ = __repr__

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        defaults: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> KafkaSettings:
        """Settings from the environment variables of :data:`ENV_VARS`.

        Parameters
        ----------
        environ
            Where to read the variables (default ``os.environ``); an empty value counts as unset.
        defaults
            Values used where a variable is unset (below the environment, above the built-in defaults).
        **overrides
            Values that win over the environment (the CLI's flags).

        Raises
        ------
        KafkaSettingsError
            A variable cannot be parsed, or the settings do not fit together (see the class).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = dict(defaults or {})
        for name, var in ENV_VARS.items():
            raw = (env.get(var) or "").strip()
            if raw:
                values[name] = _parse(name, raw)
        values.update(overrides)
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables (secrets included), for a child process that reads them."""
        env: dict[str, str] = {}
        for name, var in ENV_VARS.items():
            value = getattr(self, name)
            if value is None:
                continue
            env[var] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return env

    @property
    def servers(self) -> list[str]:
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by KafkaConsumer, KafkaProducer and KafkaAdminClient.

        An OAUTHBEARER token provider is built here, once per call, from its factory.
        """
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
            if self.sasl_mechanism == "OAUTHBEARER":
                kw["sasl_oauth_token_provider"] = build_token_provider(self.sasl_oauth_token_provider or "")
            else:
                kw["sasl_plain_username"] = self.sasl_username
                kw["sasl_plain_password"] = self.sasl_password
        if self.security_protocol.endswith("SSL"):
            kw["ssl_check_hostname"] = self.ssl_check_hostname
            for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"):
                if getattr(self, key):
                    kw[key] = getattr(self, key)
        return kw


def _parse(name: str, raw: str) -> Any:
    """One environment variable's text as the type of its field."""
    if name == "ssl_check_hostname":
        if raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise KafkaSettingsError(f"{ENV_VARS[name]} is {raw!r}: use true or false.")
    if name in ("connect_timeout_s", "request_timeout_s"):
        try:
            return float(raw)
        except ValueError:
            raise KafkaSettingsError(
                f"{ENV_VARS[name]} is {raw!r}: give a number of seconds, e.g. 10."
            ) from None
    return raw


def resolve_token_provider_factory(path: str) -> Callable[[], Any]:
    """The callable named by ``package.module:factory``.

    Raises
    ------
    KafkaSettingsError
        The path is not ``module:name``, the module cannot be imported, or the name is missing or not callable.
    """
    label = setting_name("sasl_oauth_token_provider")
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise KafkaSettingsError(
            f"{label} is {path!r}: write it as package.module:factory (a callable returning a kafka-python "
            "AbstractTokenProvider)."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise KafkaSettingsError(
            f"{label} is {path!r}, but module {module_name!r} cannot be imported ({exc}): install the package "
            "that provides it or fix the module path."
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        what = "does not exist" if factory is None else f"is a {type(factory).__name__}, not callable"
        raise KafkaSettingsError(
            f"{label} is {path!r}, but {attr!r} in module {module_name!r} {what}: name a function or class "
            "that returns a kafka-python AbstractTokenProvider."
        )
    return factory


def build_token_provider(path: str) -> Any:
    """Call the token-provider factory at ``path`` and check it returned an ``AbstractTokenProvider``."""
    from kafka.net.sasl.oauth import AbstractTokenProvider

    provider = resolve_token_provider_factory(path)()
    if not isinstance(provider, AbstractTokenProvider):
        raise KafkaSettingsError(
            f"{setting_name('sasl_oauth_token_provider')}: {path} returned a {type(provider).__name__}, not a "
            "kafka.net.sasl.oauth.AbstractTokenProvider; subclass it and implement token()."
        )
    return provider


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
            settings.sasl_oauth_token_provider,
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
