"""infra/docker-compose.yml: every published port binds an address (localhost by default), no password has a
default, and Kafka's clients (the pipeline's containers) log in with the user its SASL listeners accept.

Docker is not needed: the file is parsed as YAML and its ``${...}`` references are resolved the way Compose
resolves them (``${VAR:-default}``, ``${VAR:?message}``, ``$$``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[1] / "infra" / "docker-compose.yml"
REFERENCE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")
REQUIRED_SECRETS = {
    "GRAFANA_ADMIN_PASSWORD",
    "DAGSTER_POSTGRES_PASSWORD",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_BROKER_PASSWORD",
}
SECRETS = {name: f"secret-of-{name.lower()}" for name in REQUIRED_SECRETS}


def _interpolate(text: str, env: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        value = env.get(name, "")
        if op == ":?" and not value:
            raise KeyError(f"{name}: {arg}")
        if op == ":-" and not value:
            return arg
        return value

    return REFERENCE.sub(one, text)


def _resolve(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: _resolve(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve(value, env) for value in node]
    if isinstance(node, str):
        return _interpolate(node, env)
    return node


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_every_published_port_binds_localhost_unless_a_host_is_set(compose: dict[str, Any]) -> None:
    published = {name: svc["ports"] for name, svc in compose["services"].items() if "ports" in svc}
    assert set(published) == {"kafka", "dagster-webserver", "exporter", "prometheus", "grafana"}
    for name, ports in published.items():
        for entry in ports:
            assert isinstance(entry, str), (name, entry)
            assert re.fullmatch(r"\$\{RT_TRAINING(_DAGSTER)?_BIND:-127\.0\.0\.1\}:\d+:\d+", entry), (
                name,
                entry,
            )

    default = _resolve(compose, SECRETS)["services"]
    assert {name: svc["ports"] for name, svc in default.items() if "ports" in svc} == {
        "kafka": ["127.0.0.1:9092:9092"],
        "dagster-webserver": ["127.0.0.1:3000:3000"],
        "exporter": ["127.0.0.1:9108:9108"],
        "prometheus": ["127.0.0.1:9090:9090"],
        "grafana": ["127.0.0.1:3001:3000"],
    }
    chosen = _resolve(
        compose, {**SECRETS, "RT_TRAINING_BIND": "10.0.0.5", "RT_TRAINING_DAGSTER_BIND": "10.0.0.6"}
    )
    assert chosen["services"]["grafana"]["ports"] == ["10.0.0.5:3001:3000"]
    assert chosen["services"]["dagster-webserver"]["ports"] == ["10.0.0.6:3000:3000"]


def test_no_password_has_a_default(compose: dict[str, Any]) -> None:
    references = [m for text in _strings(compose) for m in REFERENCE.finditer(text) if m.group("name")]
    secret_refs = [m for m in references if re.search("PASSWORD|SECRET|TOKEN", m.group("name"))]
    assert {m.group("name") for m in secret_refs} == REQUIRED_SECRETS
    for m in secret_refs:
        assert m.group("op") == ":?", f"{m.group(0)} must be required (${{VAR:?message}}), not defaulted"

    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if "PASSWORD" in key:
                assert REFERENCE.fullmatch(str(value)), (
                    f"{name}.{key} is a literal, not taken from the environment"
                )
    assert (
        compose["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
        == "${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD}"
    )


@pytest.mark.parametrize("missing", sorted(REQUIRED_SECRETS))
def test_the_stack_refuses_to_resolve_without_each_secret(compose: dict[str, Any], missing: str) -> None:
    env = {name: value for name, value in SECRETS.items() if name != missing}
    with pytest.raises(KeyError, match=f"{missing}: set {missing}"):
        _resolve(compose, env)


def test_kafka_requires_sasl_and_the_pipeline_logs_in(compose: dict[str, Any]) -> None:
    resolved = _resolve(compose, SECRETS)
    kafka = resolved["services"]["kafka"]["environment"]
    protocols = dict(item.split(":") for item in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert protocols == {"CONTROLLER": "PLAINTEXT", "INTERNAL": "SASL_PLAINTEXT", "HOST": "SASL_PLAINTEXT"}
    assert "CONTROLLER://localhost:9093" in kafka["KAFKA_LISTENERS"].split(",")
    assert kafka["KAFKA_SASL_ENABLED_MECHANISMS"] == "PLAIN"

    app = resolved["x-app"]["environment"]
    assert app["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"
    assert app["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert app["KAFKA_SASL_MECHANISM"] == "PLAIN"
    user, password = app["KAFKA_SASL_USERNAME"], app["KAFKA_SASL_PASSWORD"]
    assert password == SECRETS["KAFKA_SASL_PASSWORD"]
    for listener in ("INTERNAL", "HOST"):
        jaas = kafka[f"KAFKA_LISTENER_NAME_{listener}_PLAIN_SASL_JAAS_CONFIG"]
        assert jaas.startswith("org.apache.kafka.common.security.plain.PlainLoginModule required ")
        assert jaas.endswith(";")
        assert f'user_{user}="{password}"' in jaas.removesuffix(";").split()
    internal = kafka["KAFKA_LISTENER_NAME_INTERNAL_PLAIN_SASL_JAAS_CONFIG"].removesuffix(";").split()
    broker = SECRETS["KAFKA_BROKER_PASSWORD"]
    assert {'username="admin"', f'password="{broker}"', f'user_admin="{broker}"'} <= set(internal)

    healthcheck = resolved["services"]["kafka"]["healthcheck"]["test"]
    assert healthcheck[0] == "CMD-SHELL"
    assert '"$HEALTHCHECK_SASL_PASSWORD"' in healthcheck[1]
    assert "--command-config /tmp/healthcheck.properties" in healthcheck[1]
    assert kafka["HEALTHCHECK_SASL_PASSWORD"] == broker
    for name in ("dagster-webserver", "dagster-daemon", "exporter"):
        assert resolved["services"][name]["environment"]["KAFKA_SASL_PASSWORD"] == password
