"""The Kafka connection flags every command that talks to Kafka shares.

``@kafka_options`` adds the same flags to a command and hands it one :class:`KafkaFlags` argument named
``kafka_flags``; :meth:`KafkaFlags.settings` then builds :class:`~rt_training.stream.client.KafkaSettings` from
the environment with the flags on top. Secrets have no flag of their own: they come from the environment
(``KAFKA_SASL_PASSWORD``, ``KAFKA_SSL_PASSWORD``) or from a file named by ``--sasl-password-file`` /
``--ssl-password-file``, so they never land in shell history or in ``ps``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from rt_training.stream.client import (
    BOOTSTRAP_ENV_VAR,
    ENV_VARS,
    SASL_MECHANISMS,
    SECURITY_PROTOCOLS,
    KafkaSettings,
    KafkaSettingsError,
)

_PASSWORD_FILES = {"sasl_password_file": "sasl_password", "ssl_password_file": "ssl_password"}
_TIMEOUTS = {"connect_timeout": "connect_timeout_s", "request_timeout": "request_timeout_s"}
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _env(name: str) -> str:
    return f"${ENV_VARS[name]}"


_OPTIONS: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    click.option(
        "--bootstrap-servers",
        default=None,
        help=f"Kafka brokers, host:port[,host:port] (default: {_env('bootstrap_servers')} or 127.0.0.1:9092).",
    ),
    click.option(
        "--security-protocol",
        type=click.Choice(SECURITY_PROTOCOLS, case_sensitive=False),
        default=None,
        help=f"How to talk to the brokers (default: {_env('security_protocol')} or PLAINTEXT).",
    ),
    click.option(
        "--sasl-mechanism",
        type=click.Choice(SASL_MECHANISMS, case_sensitive=False),
        default=None,
        help=f"SASL mechanism with SASL_SSL / SASL_PLAINTEXT (default: {_env('sasl_mechanism')}).",
    ),
    click.option("--sasl-username", default=None, help=f"SASL user (default: {_env('sasl_username')})."),
    click.option(
        "--sasl-password-file",
        type=_FILE,
        default=None,
        help=f"File holding the SASL password (default: the password in {_env('sasl_password')}).",
    ),
    click.option(
        "--sasl-oauth-token-provider",
        default=None,
        metavar="MODULE:FACTORY",
        help="OAUTHBEARER: a callable returning a kafka-python AbstractTokenProvider "
        f"(default: {_env('sasl_oauth_token_provider')}).",
    ),
    click.option(
        "--ssl-cafile", default=None, help=f"PEM file of the CA to trust (default: {_env('ssl_cafile')})."
    ),
    click.option(
        "--ssl-certfile",
        default=None,
        help=f"PEM client certificate, for mutual TLS (default: {_env('ssl_certfile')}).",
    ),
    click.option(
        "--ssl-keyfile",
        default=None,
        help=f"PEM client key, for mutual TLS (default: {_env('ssl_keyfile')}).",
    ),
    click.option(
        "--ssl-password-file",
        type=_FILE,
        default=None,
        help=f"File holding the client key's password (default: the password in {_env('ssl_password')}).",
    ),
    click.option(
        "--ssl-check-hostname/--no-ssl-check-hostname",
        default=None,
        help=f"Check that the broker's certificate names its host (default: {_env('ssl_check_hostname')} or on).",
    ),
    click.option(
        "--client-id", default=None, help=f"Client id the brokers see (default: {_env('client_id')})."
    ),
    click.option(
        "--connect-timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help=f"Seconds before unreachable brokers are reported (default: {_env('connect_timeout_s')} or 10).",
    ),
    click.option(
        "--request-timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help=f"Seconds a Kafka request may take (default: {_env('request_timeout_s')} or 15).",
    ),
]
_PARAM_NAMES = (
    "bootstrap_servers",
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password_file",
    "sasl_oauth_token_provider",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_password_file",
    "ssl_check_hostname",
    "client_id",
    "connect_timeout",
    "request_timeout",
)


@dataclass(frozen=True)
class KafkaFlags:
    """The Kafka flags given on a command line, as :class:`KafkaSettings` field values (secrets read from their
    files); flags not given are absent."""

    values: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> KafkaFlags:
        """Flags from click's parameter values (``None``: not given); reads the password files."""
        values: dict[str, Any] = {}
        for name, value in params.items():
            if value is None:
                continue
            if name in _PASSWORD_FILES:
                values[_PASSWORD_FILES[name]] = _read_secret(value, f"--{name.replace('_', '-')}")
            else:
                values[_TIMEOUTS.get(name, name)] = value
        return cls(values)

    @property
    def names_cluster(self) -> bool:
        """Whether a cluster is named, by ``--bootstrap-servers`` or ``$KAFKA_BOOTSTRAP_SERVERS``."""
        return "bootstrap_servers" in self.values or bool((os.environ.get(BOOTSTRAP_ENV_VAR) or "").strip())

    def settings(self, defaults: Mapping[str, Any] | None = None) -> KafkaSettings:
        """Settings from the environment, ``defaults`` below it and the flags above it.

        Raises
        ------
        click.UsageError
            The settings are malformed or do not fit together; the message names the variable and flag.
        """
        try:
            return KafkaSettings.from_env(defaults=defaults, **self.values)
        except KafkaSettingsError as exc:
            raise click.UsageError(str(exc)) from None


def _read_secret(path: Path, flag: str) -> str:
    try:
        secret = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint=flag) from None
    if not secret:
        raise click.BadParameter(f"{path} is empty; it should hold the password alone", param_hint=flag)
    return secret


def kafka_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the Kafka flags to a click command, which receives them as one ``kafka_flags: KafkaFlags``."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        params = {name: kwargs.pop(name) for name in _PARAM_NAMES}
        return command(*args, kafka_flags=KafkaFlags.from_params(params), **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper
