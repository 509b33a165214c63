"""``rt-training metrics``: the Prometheus exporter of a pipeline's lag, freshness, quality, drift and models."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from rt_training.cli.kafka_options import KafkaFlags, kafka_options
from rt_training.spec import PipelineSpec, SpecError, load_spec

if TYPE_CHECKING:
    from rt_training.stream.client import KafkaSettings

_spec_option = click.option(
    "--spec",
    "spec_path",
    default=None,
    help="Pipeline spec YAML (default: $RT_TRAINING_SPEC or the demo spec).",
)
_lake_option = click.option(
    "--lake", default=None, help="Lake root folder or URI (default: $RT_TRAINING_LAKE or .data/lake)."
)
_kafka_option = click.option(
    "--kafka/--no-kafka",
    default=True,
    show_default=True,
    help="Query Kafka (the cluster of the Kafka flags and $KAFKA_* variables) for end offsets and lag.",
)


def _load(spec_path: str | None) -> PipelineSpec:
    try:
        return load_spec(spec_path)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None


def _lake_root(lake: str | None) -> str:
    from rt_training.lake.tables import lake_root

    return lake_root(lake)


def _kafka_settings(enabled: bool, flags: KafkaFlags) -> KafkaSettings | None:
    return flags.settings() if enabled else None


@click.group()
def metrics() -> None:
    """Expose pipeline metrics to Prometheus."""


@metrics.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=9108, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free)."
)
@_spec_option
@_lake_option
@_kafka_option
@kafka_options
def serve(
    host: str, port: int, spec_path: str | None, lake: str | None, kafka: bool, kafka_flags: KafkaFlags
) -> None:
    """Serve /metrics until interrupted (Ctrl-C or SIGTERM)."""
    import logging

    from rt_training.monitoring.exporter import serve as serve_metrics

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = _load(spec_path)
    root = _lake_root(lake)
    settings = _kafka_settings(kafka, kafka_flags)

    def ready(url: str) -> None:
        click.echo(f"serving metrics of pipeline {spec.name!r} (lake {root}) at {url}", err=True)

    try:
        serve_metrics(host, port, spec, root, settings, ready=ready)
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}. Pick another port with --port."
        ) from None


@metrics.command("show")
@_spec_option
@_lake_option
@_kafka_option
@kafka_options
def show(spec_path: str | None, lake: str | None, kafka: bool, kafka_flags: KafkaFlags) -> None:
    """Print the current metrics once, in the Prometheus text format."""
    from prometheus_client import generate_latest

    from rt_training.monitoring.exporter import build_registry
    from rt_training.monitoring.snapshot import SnapshotGatherer

    gatherer = SnapshotGatherer(_load(spec_path), _lake_root(lake), _kafka_settings(kafka, kafka_flags))
    try:
        click.echo(generate_latest(build_registry(gatherer)).decode(), nl=False)
    finally:
        gatherer.close()
