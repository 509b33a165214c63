"""``rt-training ingest``: where ingestion from Kafka into the lake stands."""

from __future__ import annotations

import click

from rt_training.cli.kafka_options import KafkaFlags, kafka_options


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
@kafka_options
def status(spec_path: str | None, lake: str | None, kafka_flags: KafkaFlags) -> None:
    """Per partition: committed offset, Kafka's end offset, lag; each table's last commit.

    The committed offset is the slowest of bronze, silver and dead letters (each table's is listed when they
    differ). Exits 1 when Kafka cannot be reached (the lake side is still printed) or the topic does not exist.
    """
    import logging

    from rt_training.ingest.batch import LakeLocation
    from rt_training.ingest.status import format_status, ingest_status
    from rt_training.lake.tables import lake_root
    from rt_training.spec import SpecError, load_spec

    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    settings = kafka_flags.settings()
    # The snapshot logs what it could not read; the status prints the same, once.
    logging.getLogger("rt_training.monitoring.snapshot").setLevel(logging.CRITICAL)
    result = ingest_status(spec, LakeLocation(lake_root(lake)), settings)
    click.echo(format_status(result))
    if not result.ok:
        raise SystemExit(1)
