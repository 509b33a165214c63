"""One source of Kafka settings: environment variables, CLI flags over them, checks that name the setting and the
fix, and secrets kept out of ``repr``. Plain data only; the broker tests are in test_kafka_secured.py."""

from __future__ import annotations

from pathlib import Path

import click
import dagster as dg
import pytest
from click.testing import CliRunner
from kafka.net.sasl.oauth import AbstractTokenProvider

from rt_training.cli.kafka_options import KafkaFlags, kafka_options
from rt_training.cli.main import cli
from rt_training.defs.resources import KafkaResource
from rt_training.stream.client import ENV_VARS, KafkaSettings, KafkaSettingsError

PASSWORD = "pw-7f3a-never-shown"
KEY_PASSWORD = "key-pw-91c2-never-shown"


class StaticTokenProvider(AbstractTokenProvider):
    def token(self) -> str:
        return "header.payload.signature"


def static_token_provider() -> StaticTokenProvider:
    return StaticTokenProvider()


NOT_CALLABLE = 42


def not_a_provider() -> str:
    return "a string"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    files = {}
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n")
        files[name] = str(tmp_path / name)
    return files


def test_from_env_reads_every_setting(pem: dict[str, str]) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "b-1.example.com:9096,b-2.example.com:9096",
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "KAFKA_SASL_MECHANISM": "scram-sha-512",
        "KAFKA_SASL_USERNAME": "svc-ingest",
        "KAFKA_SASL_PASSWORD": PASSWORD,
        "KAFKA_SSL_CAFILE": pem["ca.pem"],
        "KAFKA_SSL_CERTFILE": pem["client.pem"],
        "KAFKA_SSL_KEYFILE": pem["client.key"],
        "KAFKA_SSL_PASSWORD": KEY_PASSWORD,
        "KAFKA_SSL_CHECK_HOSTNAME": "false",
        "KAFKA_CLIENT_ID": "ingest-7",
        "KAFKA_CONNECT_TIMEOUT_S": "4.5",
        "KAFKA_REQUEST_TIMEOUT_S": "20",
    }
    settings = KafkaSettings.from_env(env)
    assert settings == KafkaSettings(
        bootstrap_servers="b-1.example.com:9096,b-2.example.com:9096",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc-ingest",
        sasl_password=PASSWORD,
        ssl_cafile=pem["ca.pem"],
        ssl_certfile=pem["client.pem"],
        ssl_keyfile=pem["client.key"],
        ssl_password=KEY_PASSWORD,
        ssl_check_hostname=False,
        client_id="ingest-7",
        connect_timeout_s=4.5,
        request_timeout_s=20.0,
    )
    assert settings.client_kwargs() == {
        "bootstrap_servers": ["b-1.example.com:9096", "b-2.example.com:9096"],
        "client_id": "ingest-7",
        "security_protocol": "SASL_SSL",
        "request_timeout_ms": 20000,
        "bootstrap_timeout_ms": 4500,
        "reconnect_backoff_max_ms": 1000,
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc-ingest",
        "sasl_plain_password": PASSWORD,
        "ssl_check_hostname": False,
        "ssl_cafile": pem["ca.pem"],
        "ssl_certfile": pem["client.pem"],
        "ssl_keyfile": pem["client.key"],
        "ssl_password": KEY_PASSWORD,
    }
    assert settings.to_env() == {**env, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                                 "KAFKA_CONNECT_TIMEOUT_S": "4.5", "KAFKA_REQUEST_TIMEOUT_S": "20.0"}  # fmt: skip
    assert KafkaSettings.from_env(settings.to_env()) == settings


def test_precedence_overrides_over_environment_over_defaults() -> None:
    env = {
        "KAFKA_CLIENT_ID": "from-env",
        "KAFKA_BOOTSTRAP_SERVERS": "env:9092",
        "KAFKA_CONNECT_TIMEOUT_S": " ",
    }
    defaults = {"client_id": "default-id", "bootstrap_servers": "default:9092", "connect_timeout_s": 3.0}
    settings = KafkaSettings.from_env(env, defaults, bootstrap_servers="flag:9092")
    assert (settings.bootstrap_servers, settings.client_id, settings.connect_timeout_s) == (
        "flag:9092",
        "from-env",
        3.0,
    )
    assert KafkaSettings.from_env({}) == KafkaSettings()


def test_oauthbearer_builds_the_token_provider_per_client() -> None:
    path = f"{__name__}:static_token_provider"
    settings = KafkaSettings.from_env(
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "OAUTHBEARER",
            "KAFKA_SASL_OAUTH_TOKEN_PROVIDER": path,
        }
    )
    first, second = settings.client_kwargs(), settings.client_kwargs()
    assert isinstance(first["sasl_oauth_token_provider"], StaticTokenProvider)
    assert first["sasl_oauth_token_provider"] is not second["sasl_oauth_token_provider"]
    assert "sasl_plain_password" not in first and "ssl_check_hostname" not in first


OAUTH = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "OAUTHBEARER"}
SCRAM = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"KAFKA_SECURITY_PROTOCOL": "TLS"},
            "KAFKA_SECURITY_PROTOCOL (--security-protocol) is 'TLS', not a Kafka security protocol: use one of "
            "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            "no SASL mechanism is set: set KAFKA_SASL_MECHANISM (--sasl-mechanism) to one of PLAIN, SCRAM-SHA-256, "
            "SCRAM-SHA-512, OAUTHBEARER",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI"},
            "KAFKA_SASL_MECHANISM (--sasl-mechanism) is 'GSSAPI', not a supported SASL mechanism",
        ),
        (
            {"KAFKA_SASL_MECHANISM": "PLAIN"},
            "is PLAINTEXT, which does not authenticate with SASL: set the protocol to SASL_SSL",
        ),
        (
            SCRAM,
            "KAFKA_SASL_MECHANISM (--sasl-mechanism) is SCRAM-SHA-256 but KAFKA_SASL_USERNAME (--sasl-username) and "
            "KAFKA_SASL_PASSWORD (--sasl-password-file) are not set",
        ),
        (
            {**SCRAM, "KAFKA_SASL_USERNAME": "svc"},
            "but KAFKA_SASL_PASSWORD (--sasl-password-file) is not set: SCRAM-SHA-256 needs a user name and a "
            "password",
        ),
        (OAUTH, "is OAUTHBEARER but no token provider is set: set KAFKA_SASL_OAUTH_TOKEN_PROVIDER"),
        (
            {**OAUTH, "KAFKA_SASL_OAUTH_TOKEN_PROVIDER": "mycorp.tokens.provider"},
            "is 'mycorp.tokens.provider': write it as package.module:factory",
        ),
        (
            {**OAUTH, "KAFKA_SASL_OAUTH_TOKEN_PROVIDER": "no_such_pkg_k11.tokens:make"},
            "module 'no_such_pkg_k11.tokens' cannot be imported",
        ),
        (
            {**OAUTH, "KAFKA_SASL_OAUTH_TOKEN_PROVIDER": f"{__name__}:missing"},
            f"'missing' in module '{__name__}' does not exist",
        ),
        (
            {**OAUTH, "KAFKA_SASL_OAUTH_TOKEN_PROVIDER": f"{__name__}:NOT_CALLABLE"},
            "is a int, not callable",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
            "KAFKA_SSL_CAFILE (--ssl-cafile) is '/nonexistent/ca.pem', which is not a readable file",
        ),
        (
            {"KAFKA_SSL_CAFILE": __file__},
            "KAFKA_SSL_CAFILE (--ssl-cafile) is set but KAFKA_SECURITY_PROTOCOL (--security-protocol) is "
            "PLAINTEXT, which does not use TLS",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": __file__},
            "KAFKA_SSL_KEYFILE (--ssl-keyfile) is set without KAFKA_SSL_CERTFILE (--ssl-certfile)",
        ),
        ({"KAFKA_BOOTSTRAP_SERVERS": "broker.example.com"}, "'broker.example.com' is not host:port"),
        ({"KAFKA_BOOTSTRAP_SERVERS": ","}, "KAFKA_BOOTSTRAP_SERVERS (--bootstrap-servers) is empty"),
        ({"KAFKA_CONNECT_TIMEOUT_S": "ten"}, "KAFKA_CONNECT_TIMEOUT_S is 'ten': give a number of seconds"),
        ({"KAFKA_REQUEST_TIMEOUT_S": "0"}, "KAFKA_REQUEST_TIMEOUT_S (--request-timeout) is 0.0"),
        ({"KAFKA_SSL_CHECK_HOSTNAME": "maybe"}, "KAFKA_SSL_CHECK_HOSTNAME is 'maybe': use true or false"),
    ],
)
def test_invalid_settings_name_the_variable_and_the_fix(env: dict[str, str], message: str) -> None:
    with pytest.raises(KafkaSettingsError) as info:
        KafkaSettings.from_env(env)
    assert message in str(info.value)


def test_a_token_provider_of_the_wrong_type_is_refused_when_a_client_is_built() -> None:
    settings = KafkaSettings.from_env(
        {**OAUTH, "KAFKA_SASL_OAUTH_TOKEN_PROVIDER": f"{__name__}:not_a_provider"}
    )
    with pytest.raises(
        KafkaSettingsError, match=r"returned a str, not a kafka\.net\.sasl\.oauth\.AbstractTokenProvider"
    ):
        settings.client_kwargs()


def test_errors_and_repr_never_show_the_secrets(pem: dict[str, str]) -> None:
    settings = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="svc",
        sasl_password=PASSWORD,
        ssl_certfile=pem["client.pem"],
        ssl_keyfile=pem["client.key"],
        ssl_password=KEY_PASSWORD,
    )
    for text in (repr(settings), str(settings), f"{settings}", repr([settings])):
        assert PASSWORD not in text and KEY_PASSWORD not in text
        assert "sasl_password='***'" in text and "ssl_password='***'" in text
    with pytest.raises(KafkaSettingsError) as info:
        KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_password=PASSWORD)
    assert PASSWORD not in str(info.value)


@click.command()
@kafka_options
def _echo_settings(kafka_flags: KafkaFlags) -> None:
    settings = kafka_flags.settings(defaults={"client_id": "command-default"})
    click.echo(
        f"{settings.bootstrap_servers}|{settings.security_protocol}|{settings.sasl_mechanism}|"
        f"{settings.sasl_username}|{settings.sasl_password}|{settings.client_id}|{settings.connect_timeout_s}|"
        f"{settings.ssl_check_hostname}|{kafka_flags.names_cluster}"
    )


def test_flags_override_the_environment_and_passwords_come_from_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runner = CliRunner()
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "env-user")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "env-password")
    result = runner.invoke(_echo_settings, [])
    assert (
        result.output
        == "127.0.0.1:9092|SASL_PLAINTEXT|SCRAM-SHA-512|env-user|env-password|command-default|10.0|True|False\n"
    )

    secret = tmp_path / "password"
    secret.write_text("file-password\n")
    result = runner.invoke(
        _echo_settings,
        ["--bootstrap-servers", "flag:9093", "--sasl-mechanism", "plain", "--sasl-username", "flag-user",
         "--sasl-password-file", str(secret), "--client-id", "flag-id", "--connect-timeout", "2",
         "--no-ssl-check-hostname"],
    )  # fmt: skip
    assert result.output == "flag:9093|SASL_PLAINTEXT|PLAIN|flag-user|file-password|flag-id|2.0|False|True\n"


def test_bad_settings_are_usage_errors_and_there_is_no_password_flag() -> None:
    runner = CliRunner()
    result = runner.invoke(_echo_settings, ["--security-protocol", "SASL_SSL", "--sasl-mechanism", "PLAIN"])
    assert result.exit_code == 2
    assert (
        "KAFKA_SASL_USERNAME (--sasl-username) and KAFKA_SASL_PASSWORD (--sasl-password-file) are not set"
        in (result.output)
    )
    result = runner.invoke(_echo_settings, ["--sasl-password", PASSWORD])
    assert result.exit_code == 2 and "No such option '--sasl-password'" in result.output


@pytest.mark.parametrize(
    "command",
    [
        ["produce"],
        ["ingest", "status"],
        ["metrics", "serve"],
        ["metrics", "show"],
        ["kafka", "create-topic"],
        ["demo"],
        ["backtest"],
    ],
)
def test_every_kafka_command_has_the_shared_flags(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    flags = ["--bootstrap-servers", "--security-protocol", "--sasl-mechanism", "--sasl-username",
             "--sasl-password-file", "--sasl-oauth-token-provider", "--ssl-cafile", "--ssl-certfile",
             "--ssl-keyfile", "--ssl-password-file", "--ssl-check-hostname", "--client-id", "--connect-timeout",
             "--request-timeout"]  # fmt: skip
    assert [f for f in flags if f not in result.output] == []


def test_resource_from_env_keeps_secrets_as_env_vars_and_builds_the_same_settings(
    monkeypatch: pytest.MonkeyPatch, pem: dict[str, str]
) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "b-1:9096",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "svc",
        "KAFKA_SASL_PASSWORD": PASSWORD,
        "KAFKA_SSL_CAFILE": pem["ca.pem"],
        "KAFKA_SSL_CERTFILE": pem["client.pem"],
        "KAFKA_SSL_KEYFILE": pem["client.key"],
        "KAFKA_SSL_PASSWORD": KEY_PASSWORD,
        "KAFKA_REQUEST_TIMEOUT_S": "9",
    }
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    resource = KafkaResource.from_env()
    assert resource.sasl_password == dg.EnvVar("KAFKA_SASL_PASSWORD")
    assert resource.ssl_password == dg.EnvVar("KAFKA_SSL_PASSWORD")
    seen: list[KafkaSettings] = []
    texts: list[str] = []

    @dg.asset
    def probe(kafka: KafkaResource) -> None:
        seen.append(kafka.settings())
        texts.extend([repr(kafka), str(kafka), repr(seen[0])])

    result = dg.materialize([probe], resources={"kafka": resource})
    assert result.success
    assert seen == [KafkaSettings.from_env()]
    assert seen[0].sasl_password == PASSWORD and seen[0].ssl_password == KEY_PASSWORD
    assert [t for t in texts if PASSWORD in t or KEY_PASSWORD in t] == []
    assert all("sasl_password='***'" in t for t in texts)
    run_config = result.dagster_run.run_config
    assert PASSWORD not in repr(run_config) and KEY_PASSWORD not in repr(run_config)
