"""Dagster resources: thin configurable wrappers that hand plain settings to the domain library."""

from __future__ import annotations

import os
from typing import Literal

import dagster as dg
from pydantic import Field

from rt_training.ingest.batch import LakeLocation
from rt_training.lake.tables import LAKE_ENV_VAR, lake_root
from rt_training.stream.client import BOOTSTRAP_ENV_VAR, DEFAULT_BOOTSTRAP, KafkaSettings


class KafkaResource(dg.ConfigurableResource):
    """Connection to the Kafka cluster. Secrets (SASL password) come from the environment through ``EnvVar``."""

    bootstrap_servers: str = Field(description="Comma-separated host:port list of brokers.")
    client_id: str = "rt-training"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    connect_timeout_s: float = Field(default=10.0, description="Unreachable brokers are reported after this.")
    request_timeout_s: float = 15.0

    def settings(self) -> KafkaSettings:
        return KafkaSettings(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            security_protocol=self.security_protocol,
            sasl_mechanism=self.sasl_mechanism,
            sasl_username=self.sasl_username,
            sasl_password=self.sasl_password,
            ssl_cafile=self.ssl_cafile,
            ssl_certfile=self.ssl_certfile,
            ssl_keyfile=self.ssl_keyfile,
            connect_timeout_s=self.connect_timeout_s,
            request_timeout_s=self.request_timeout_s,
        )

    @classmethod
    def from_env(cls) -> KafkaResource:
        """``KAFKA_BOOTSTRAP_SERVERS`` (default 127.0.0.1:9092); SASL credentials from ``KAFKA_SASL_*``."""
        secret = {
            key: dg.EnvVar(var)
            for key, var in (
                ("sasl_username", "KAFKA_SASL_USERNAME"),
                ("sasl_password", "KAFKA_SASL_PASSWORD"),
            )
            if os.environ.get(var)
        }
        return cls(
            bootstrap_servers=os.environ.get(BOOTSTRAP_ENV_VAR) or DEFAULT_BOOTSTRAP,
            security_protocol=os.environ.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),  # type: ignore[arg-type]
            sasl_mechanism=os.environ.get("KAFKA_SASL_MECHANISM") or None,
            **secret,
        )


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
