"""``rt-training kafka``: run a local single-node Kafka for development, and create topics on it."""

from __future__ import annotations

from pathlib import Path

import click

from rt_training.cli.kafka_options import KafkaFlags, kafka_options
from rt_training.ops.kafka_local import (
    DEFAULT_PORT,
    BrokerState,
    BrokerStatus,
    LocalKafkaConfig,
    LocalKafkaError,
    broker_status,
    start_broker,
    stop_broker,
)
from rt_training.stream.client import BOOTSTRAP_ENV_VAR, KafkaConnectionProblem, KafkaSettings

_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".data/kafka"),
    show_default=True,
    help="Folder of the broker's data, configuration, log file and state file.",
)


@click.group()
def kafka() -> None:
    """Start, stop and inspect the local Kafka broker (KRaft, one node on 127.0.0.1).

    When KAFKA_BOOTSTRAP_SERVERS is set, that cluster is used and nothing is started.
    """


def _parse_sasl_user(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    users = {}
    for value in values:
        name, sep, password = value.partition(":")
        if not sep or not name or not password:
            raise click.BadParameter(
                "expected NAME:PASSWORD with both parts non-empty", param_hint="--sasl-user"
            )
        users[name] = password
    return users


@kafka.command("start")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help="Client port of the broker.")
@click.option(
    "--sasl-user",
    "sasl_users",
    multiple=True,
    metavar="NAME:PASSWORD",
    callback=_parse_sasl_user,
    help="Also open a SASL_PLAINTEXT listener (SCRAM-SHA-512 and SCRAM-SHA-256) with this user (repeatable).",
)
@click.option(
    "--ssl",
    "ssl",
    is_flag=True,
    help="Also open an SSL listener; its CA and certificate are made with openssl.",
)
@_data_dir_option
def start(port: int, sasl_users: dict[str, str], ssl: bool, data_dir: Path) -> None:
    """Start the broker unless it already runs (the first start downloads Kafka's jars with Maven)."""
    try:
        config = LocalKafkaConfig(data_dir=data_dir.resolve(), port=port, sasl_users=sasl_users, ssl=ssl)
        result = start_broker(config)
    except (LocalKafkaError, KafkaConnectionProblem) as exc:
        raise click.ClickException(str(exc)) from None
    if result.kind == "external":
        click.echo(
            f"{BOOTSTRAP_ENV_VAR}={result.bootstrap_servers} is set: using that cluster, nothing started."
        )
        return
    state = result.state
    assert state is not None
    if result.kind == "started":
        click.echo(
            f"Kafka started at {result.bootstrap_servers} (pid {state.pid}, ready in {result.startup_s:.1f}s)"
        )
    else:
        click.echo(f"Kafka already running at {result.bootstrap_servers} (pid {state.pid})")
        if state.port != port:
            click.echo(
                f"  note: it listens on port {state.port}, not {port}; stop it first to change the port"
            )
    _echo_where(result)
    if ssl and state.ssl_port is None:
        click.echo("  note: it runs without an SSL listener; stop it first to add one")
    _echo_secured_env(state, sorted(sasl_users))
    click.echo("  stop it with: rt-training kafka stop" + _data_dir_flag(data_dir))


def _echo_secured_env(state: BrokerState, users: list[str]) -> None:
    """The environment a client sets to use the SASL and SSL listeners (never a password)."""
    if state.sasl_bootstrap_servers is not None:
        user = users[0] if users else (state.sasl_usernames or ("NAME",))[0]
        click.echo("  SASL_PLAINTEXT listener (SCRAM-SHA-512 or SCRAM-SHA-256); connect with:")
        click.echo(f"    export {BOOTSTRAP_ENV_VAR}={state.sasl_bootstrap_servers}")
        click.echo("    export KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT KAFKA_SASL_MECHANISM=SCRAM-SHA-512")
        click.echo(
            f"    export KAFKA_SASL_USERNAME={user} KAFKA_SASL_PASSWORD=...  # the password given to --sasl-user"
        )
    if state.ssl_bootstrap_servers is not None:
        click.echo("  SSL listener (certificate signed by a local CA); connect with:")
        click.echo(f"    export {BOOTSTRAP_ENV_VAR}={state.ssl_bootstrap_servers}")
        click.echo(f"    export KAFKA_SECURITY_PROTOCOL=SSL KAFKA_SSL_CAFILE={state.ssl_cafile}")


@kafka.command("stop")
@_data_dir_option
def stop(data_dir: Path) -> None:
    """Stop the broker of --data-dir (only the process recorded in its state file)."""
    config = LocalKafkaConfig(data_dir=data_dir.resolve())
    try:
        stopped = stop_broker(config)
    except LocalKafkaError as exc:
        raise click.ClickException(str(exc)) from None
    if stopped is None:
        click.echo(f"no local Kafka broker is running from {config.data_dir}")
    else:
        click.echo(f"stopped Kafka at {stopped.bootstrap_servers} (pid {stopped.pid})")


@kafka.command("status")
@_data_dir_option
def status(data_dir: Path) -> None:
    """Say whether the broker runs and where; exit status 1 when it does not."""
    result = broker_status(LocalKafkaConfig(data_dir=data_dir.resolve()))
    if result.kind == "external":
        click.echo(f"{BOOTSTRAP_ENV_VAR}={result.bootstrap_servers} is set: that cluster is used")
        return
    if result.kind == "stopped":
        click.echo(f"Kafka is not running (data dir {data_dir.resolve()})")
        raise SystemExit(1)
    state = result.state
    assert state is not None
    word = "running" if result.kind == "running" else "starting (port not answering yet)"
    click.echo(f"Kafka is {word} at {result.bootstrap_servers} (pid {state.pid})")
    _echo_where(result)


@kafka.command("create-topic")
@click.argument("name")
@click.option("--partitions", type=click.IntRange(min=1), required=True, help="Number of partitions.")
@click.option(
    "--config",
    "configs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Topic configuration, e.g. --config retention.ms=600000 (repeatable).",
)
@_data_dir_option
@kafka_options
def create_topic_command(
    name: str, partitions: int, configs: tuple[str, ...], data_dir: Path, kafka_flags: KafkaFlags
) -> None:
    """Create topic NAME (a no-op when it exists with the same partition count)."""
    from rt_training.stream.admin import TopicConflictError, create_topic

    topic_config = {}
    for item in configs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--config")
        topic_config[key] = value
    settings = _settings_for(data_dir, kafka_flags)
    try:
        created = create_topic(settings, name, partitions, topic_config)
    except (KafkaConnectionProblem, TopicConflictError) as exc:
        raise click.ClickException(str(exc)) from None
    verb = "created" if created else "already exists:"
    click.echo(f"{verb} topic {name!r} with {partitions} partitions on {settings.bootstrap_servers}")


def _settings_for(data_dir: Path, flags: KafkaFlags) -> KafkaSettings:
    """The cluster named by the flags or the environment, else the local broker of ``data_dir`` (on whatever port
    it uses)."""
    if flags.names_cluster:
        return flags.settings()
    result = broker_status(LocalKafkaConfig(data_dir=data_dir.resolve()))
    return flags.settings(defaults={"bootstrap_servers": result.bootstrap_servers} if result.is_up else None)


def _echo_where(result: BrokerStatus) -> None:
    state = result.state
    assert state is not None
    click.echo(f"  bootstrap servers: {result.bootstrap_servers}")
    click.echo(f"  data dir:          {state.data_dir}")
    click.echo(f"  log file:          {state.log_file}")
    if state.sasl_bootstrap_servers is not None:
        click.echo(
            f"  SASL_PLAINTEXT:    {state.sasl_bootstrap_servers} (users {', '.join(state.sasl_usernames)})"
        )
    if state.ssl_bootstrap_servers is not None:
        click.echo(f"  SSL:               {state.ssl_bootstrap_servers} (CA file {state.ssl_cafile})")


def _data_dir_flag(data_dir: Path) -> str:
    return "" if data_dir == Path(".data/kafka") else f" --data-dir {data_dir}"
