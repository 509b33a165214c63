"""``rt-training ingest``: where ingestion from Kafka into the lake stands."""

from __future__ import annotations

import click


@click.group()
def ingest() -> None:
    """Inspect ingestion from Kafka into the lake."""


@ingest.command("status")
@click.option(
    "--spec",
    "spec_path",
    default=None,
    help="Pipeline spec YAML (default: $RT_TRAINING_SPEC or the demo spec).",
)
@click.option(
    "--lake", default=None, help="Lake root folder or URI (default: $RT_TRAINING_LAKE or .data/lake)."
)
@click.option(
    "--bootstrap-servers",
    default=None,
    help="Kafka brokers, host:port[,host:port] (default: $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092).",
)
def status(spec_path: str | None, lake: str | None, bootstrap_servers: str | None) -> None:
    """Per partition: committed offset, Kafka's end offset, lag; each table's last commit.

    The committed offset is the slowest of bronze, silver and dead letters (each table's is listed when they
    differ). Exits 1 when Kafka cannot be reached (the lake side is still printed) or the topic does not exist.
    """
    import logging

    from rt_training.ingest.batch import LakeLocation
    from rt_training.ingest.status import format_status, ingest_status
    from rt_training.lake.tables import lake_root
    from rt_training.spec import SpecError, load_spec
    from rt_training.stream.client import KafkaSettings

    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    settings = KafkaSettings.from_env()
    if bootstrap_servers:
        settings = KafkaSettings.from_env(bootstrap_servers=bootstrap_servers)
    # The snapshot logs what it could not read; the status prints the same, once.
    logging.getLogger("rt_training.monitoring.snapshot").setLevel(logging.CRITICAL)
    result = ingest_status(spec, LakeLocation(lake_root(lake)), settings)
    click.echo(format_status(result))
    if not result.ok:
        raise SystemExit(1)
