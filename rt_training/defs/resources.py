"""Dagster resources: thin configurable wrappers that hand plain settings to the domain library."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from rt_training.ingest.batch import LakeLocation
from rt_training.lake.tables import LAKE_ENV_VAR, lake_root
from rt_training.stream.client import ENV_VARS, SECRET_FIELDS, KafkaSettings


class KafkaResource(dg.ConfigurableResource):
    """Connection to the Kafka cluster: the fields of :class:`KafkaSettings`, which :meth:`settings` builds.

    :meth:`from_env` reads the same ``KAFKA_*`` variables as every other entry point; the secrets (SASL and SSL
    key passwords) stay ``EnvVar`` references, so run config and the UI show the variable's name, never its
    value, and ``repr`` masks them once resolved.
    """

    bootstrap_servers: str = Field(description="Comma-separated host:port list of brokers.")
    client_id: str = "rt-training"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER."
    )
    sasl_username: str | None = None
    sasl_password: str | None = Field(default=None, description="Give it as EnvVar, never as a value.")
    sasl_oauth_token_provider: str | None = Field(
        default=None, description="OAUTHBEARER: package.module:factory returning an AbstractTokenProvider."
    )
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = Field(default=None, description="Give it as EnvVar, never as a value.")
    ssl_check_hostname: bool = True
    connect_timeout_s: float = Field(default=10.0, description="Unreachable brokers are reported after this.")
    request_timeout_s: float = 15.0

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, "***" if name in SECRET_FIELDS and value is not None else value

    def settings(self) -> KafkaSettings:
        """The checked client settings (raises ``KafkaSettingsError`` naming the setting at fault)."""
        return KafkaSettings(**{f.name: getattr(self, f.name) for f in fields(KafkaSettings)})

    @classmethod
    def from_env(cls) -> KafkaResource:
        """The settings of ``KafkaSettings.from_env()`` (checked now), with the secrets as ``EnvVar``."""
        settings = KafkaSettings.from_env()
        values: dict[str, Any] = {f.name: getattr(settings, f.name) for f in fields(KafkaSettings)}
        for name in SECRET_FIELDS:
            if values[name] is not None:
                values[name] = dg.EnvVar(ENV_VARS[name])
        return cls(**values)


class LakeResource(dg.ConfigurableResource):
    """Where the Delta tables live: a local folder or an object-store URI with ``storage_options``."""

    root: str = Field(description=f"Lake root; default ${LAKE_ENV_VAR} or .data/lake.")
    storage_options: dict[str, str] = Field(default_factory=dict)

    def location(self) -> LakeLocation:
        return LakeLocation(lake_root(self.root), self.storage_options or None)

    def table_uri(self, pipeline: str, table: str) -> str:
        return self.location().uri(pipeline, table)

    @classmethod
    def from_env(cls) -> LakeResource:
        return cls(root=lake_root())
