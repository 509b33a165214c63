"""OAUTHBEARER against the local broker's SASL listener (unsigned JWTs checked by Kafka's default unsecured
validator), and ``rt-training backtest`` over the SASL listener, each configured through ``KAFKA_*`` variables
alone."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from rt_training.cli.main import cli
from rt_training.stream.client import (
    ENV_VARS,
    KafkaAuthenticationError,
    KafkaSettings,
    make_admin,
    make_consumer,
    make_producer,
)
from rt_training.stream.synthetic import EventGenerator, SimulatedClock
from rt_training_tests.conftest import SecuredBroker
from rt_training_tests.oauth_support import SUBJECT, unsecured_jwt
from rt_training_tests.test_backtest_e2e import RATE, START_MS, small_spec
from rt_training_tests.test_kafka_secured_settings import scan_for
from rt_training_tests.test_kafka_security import _round_trip

PROVIDERS = "rt_training_tests.oauth_support"


def _export(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    """Make ``values`` the only ``KAFKA_*`` settings in the environment."""
    for var in ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    for var, value in values.items():
        monkeypatch.setenv(var, value)


def _oauth_env(broker: SecuredBroker, factory: str) -> dict[str, str]:
    state = broker.status.state
    assert state is not None and state.sasl_bootstrap_servers is not None
    return {
        "KAFKA_BOOTSTRAP_SERVERS": state.sasl_bootstrap_servers,
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "OAUTHBEARER",
        "KAFKA_SASL_OAUTH_TOKEN_PROVIDER": f"{PROVIDERS}:{factory}",
    }


def test_unsecured_jwt_layout() -> None:
    header, claims, signature = unsecured_jwt("bob", 1_700_000_000.9, 60).split(".")
    assert header == "eyJhbGciOiJub25lIn0"  # {"alg":"none"}
    assert json.loads(_b64url(claims)) == {"sub": "bob", "iat": 1_700_000_000, "exp": 1_700_000_060}
    assert signature == ""


def _b64url(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_oauthbearer_round_trip_through_env_vars_alone(
    secured_broker: SecuredBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    _export(monkeypatch, _oauth_env(secured_broker, "provider"))
    settings = KafkaSettings.from_env()
    assert settings.sasl_mechanism == "OAUTHBEARER" and settings.sasl_username is None
    topic = f"oauth-{time.time_ns()}"
    assert _round_trip(settings, topic) == [(b"k0", b"v0"), (b"k1", b"v1"), (b"k2", b"v2")]


@pytest.mark.parametrize(
    ("factory", "reason"),
    [
        (
            "expired_provider",
            'the broker rejected the token ({"status":"invalid_token"}): it may have expired, not be valid yet',
        ),
        (
            "failing_provider",
            "the client could not make its login: TokenProviderFailure: the identity provider at "
            "https://idp.invalid did not answer",
        ),
    ],
    ids=["expired-token", "provider-raises"],
)
@pytest.mark.parametrize(
    "make", [make_consumer, make_producer, make_admin], ids=["consumer", "producer", "admin"]
)
def test_refused_token_is_an_authentication_error_within_5s(
    secured_broker: SecuredBroker, monkeypatch: pytest.MonkeyPatch, factory: str, reason: str, make: Callable
) -> None:
    _export(monkeypatch, _oauth_env(secured_broker, factory))
    settings = KafkaSettings.from_env()
    t0 = time.monotonic()
    with pytest.raises(KafkaAuthenticationError) as caught:
        make(settings)
    assert time.monotonic() - t0 < 5
    assert caught.value.mechanism == "OAUTHBEARER"
    assert str(caught.value) == (
        f"Kafka authentication failed at {settings.bootstrap_servers}: SASL mechanism OAUTHBEARER with token "
        f"provider {PROVIDERS}:{factory}: {reason}"
        + (", or lack a claim or scope the broker requires" if factory == "expired_provider" else "")
        + ". Check the token provider and the token's claims and scopes your cluster's operator requires."
    )
    assert SUBJECT not in str(caught.value)


def test_backtest_over_sasl_through_env_vars_alone(
    secured_broker: SecuredBroker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sasl = secured_broker.sasl()
    _export(monkeypatch, sasl.to_env())
    spec = small_spec()
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec.model_dump(mode="json", by_alias=True)))
    events = tmp_path / "events.jsonl"
    generator = EventGenerator(spec, 7, clock=SimulatedClock(START_MS, RATE))
    events.write_bytes(b"\n".join(generator.generate(3000).values) + b"\n")
    out = tmp_path / "out"
    args = ["backtest", str(spec_path), "--events", str(events), "--step-rows", "1000", "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--keep-lake", "--periodic-window", "1"])
    assert result.exit_code == 0, result.output
    steps = [line.split()[1] for line in result.output.splitlines() if line.startswith("step ")]
    assert steps == ["1/3", "2/3", "3/3"]
    doc = json.loads((out / "backtest.json").read_text())
    assert doc["summary"]["steps"] == 3 and doc["summary"]["events"] == 3000
    assert [row["rows"] for row in doc["steps"]] == [1000, 1000, 1000]
    assert any((out / "lake").rglob("*.parquet"))  # the kept lake is part of what the scan reads
    assert scan_for(secured_broker.password, [tmp_path], {"output": result.output}) == []
