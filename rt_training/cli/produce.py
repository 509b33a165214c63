"""``rt-training produce``: send a pipeline's synthetic event stream to Kafka.

Examples::

    rt-training produce --count 100000 --rate 0                 # as fast as possible, then stop
    rt-training produce --rate 200 --drift-at 600 --bad-ratio 0.02   # the demo: until Ctrl-C
"""

from __future__ import annotations

import click

from rt_training.spec import SPEC_ENV_VAR, SpecError, load_spec


@click.command()
@click.option(
    "--spec", "spec_path", default=None, help=f"Pipeline spec YAML (default: ${SPEC_ENV_VAR} or the demo)."
)
@click.option("--topic", default=None, help="Topic to send to (default: the spec's source topic).")
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=None,
    help="Partitions of the topic when it is created (default: the spec's); an existing topic must match.",
)
@click.option(
    "--rate", type=click.FloatRange(min=0), default=200.0, show_default=True, help="Events/s; 0 = no limit."
)
@click.option(
    "--count", type=click.IntRange(min=0), default=0, help="Stop after this many events (0: no limit)."
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Stop after this many seconds (0: no limit).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the stream and its hidden model."
)
@click.option(
    "--drift-at",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds after the first event at which drift starts (default: no drift).",
)
@click.option(
    "--drift-strength",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Shift of drifting numeric features, in standard deviations (also scales mix and concept change).",
)
@click.option(
    "--bad-ratio",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of bad records (malformed JSON, missing field, wrong type, NaN, out of range, duplicate id, "
    "oversized, not UTF-8).",
)
@click.option(
    "--bootstrap-servers",
    default=None,
    help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092).",
)
@click.option(
    "--progress-every", type=click.FloatRange(min=0.1), default=5.0, show_default=True, help="Seconds."
)
def produce(
    spec_path: str | None,
    topic: str | None,
    partitions: int | None,
    rate: float,
    count: int,
    duration: float,
    seed: int,
    drift_at: float | None,
    drift_strength: float,
    bad_ratio: float,
    bootstrap_servers: str | None,
    progress_every: float,
) -> None:
    """Send synthetic events of a pipeline spec to Kafka, until --count, --duration or Ctrl-C."""
    from rt_training.stream.admin import TopicConflictError
    from rt_training.stream.client import KafkaSettings, KafkaUnreachableError
    from rt_training.stream.producer import ProduceError, ensure_topic
    from rt_training.stream.producer import produce as run_producer

    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    overrides = {"client_id": "rt-training-producer"}
    if bootstrap_servers:
        overrides["bootstrap_servers"] = bootstrap_servers
    settings = KafkaSettings.from_env(**overrides)
    name = topic or spec.source.topic
    limits = [f"{count:,} events" if count else "", f"{duration:g}s" if duration else ""]
    click.echo(
        f"produce: spec {spec.name!r} -> topic {name} on {settings.bootstrap_servers}, "
        f"{f'{rate:g} events/s' if rate else 'as fast as possible'}, "
        f"until {' or '.join(x for x in limits if x) or 'Ctrl-C'}; seed {seed}, bad ratio {bad_ratio:g}, "
        + (f"drift at {drift_at:g}s (strength {drift_strength:g})" if drift_at is not None else "no drift")
    )
    try:
        partitions, created = ensure_topic(settings, spec, name, partitions)
        if created:
            click.echo(f"produce: created topic {name} with {partitions} partitions")
        summary = run_producer(
            settings,
            spec,
            name,
            count=count,
            duration_s=duration,
            rate=rate,
            seed=seed,
            drift_at=drift_at,
            drift_strength=drift_strength,
            bad_ratio=bad_ratio,
            partitions=partitions,
            progress=lambda p: click.echo(p.line()),
            progress_every_s=progress_every,
        )
    except (KafkaUnreachableError, TopicConflictError, ProduceError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(summary.line())
