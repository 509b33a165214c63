"""``rt-training ingest``: where ingestion stands."""

from __future__ import annotations

import click


@click.group()
def ingest() -> None:
    """Inspect ingestion from Kafka into the lake."""


@ingest.command("status")
@click.option(
    "--spec", "spec_path", default=None, help="Pipeline spec (default $RT_TRAINING_SPEC or the demo)."
)
@click.option("--lake", default=None, help="Lake root (default $RT_TRAINING_LAKE or .data/lake).")
@click.option(
    "--bootstrap-servers", default=None, help="Kafka (default $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092)."
)
def status(spec_path: str | None, lake: str | None, bootstrap_servers: str | None) -> None:
    """Per partition: committed offset, Kafka end offset, lag; last commit time of each table."""
    from rt_training.ingest.batch import LakeLocation
    from rt_training.ingest.status import format_status, ingest_status
    from rt_training.lake.tables import lake_root
    from rt_training.spec import SpecError, load_spec
    from rt_training.stream.client import KafkaSettings

    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    settings = KafkaSettings.from_env(connect_timeout_s=5.0)
    if bootstrap_servers:
        settings = KafkaSettings(bootstrap_servers=bootstrap_servers, connect_timeout_s=5.0)
    result = ingest_status(spec, LakeLocation(lake_root(lake)), settings)
    click.echo(format_status(result))
    if result.kafka_error:
        raise SystemExit(1)
