"""``rt-training produce``: send a pipeline's synthetic event stream, or a user's own records, to Kafka.

Examples::

    rt-training produce --count 100000 --rate 0                 # as fast as possible, then stop
    rt-training produce --rate 200 --drift-at 600 --bad-ratio 0.02   # the demo: until Ctrl-C
    rt-training produce --from events.jsonl                     # a user's records, as fast as possible
    rt-training produce --from history.csv --rate 1000 --on-bad-line skip
    zcat dump.jsonl.gz | rt-training produce --from - --key-field user_id

SIGTERM (``kill``, a supervisor, a test stopping it) ends a run like Ctrl-C: sending stops, what was sent is
flushed within a few seconds, the summary says ``interrupted`` and the exit code is 0.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from rt_training.cli.kafka_options import KafkaFlags, kafka_options
from rt_training.spec import SPEC_ENV_VAR, SpecError, load_spec
from rt_training.stream.client import KafkaSettings

if TYPE_CHECKING:
    from rt_training.spec.models import PipelineSpec
    from rt_training.stream.file_producer import OnBadLine
    from rt_training.stream.file_source import SourceFormat

SYNTHETIC_RATE = 200.0
SYNTHETIC_ONLY = ("count", "duration", "seed", "drift_at", "drift_strength", "bad_ratio")
FILE_ONLY = ("source_format", "key_field", "on_bad_line", "event_time_timestamps")
TTY_REFRESH_S = 0.5


@click.command()
@click.option(
    "--from",
    "from_path",
    type=click.Path(dir_okay=False, allow_dash=True, exists=True),
    default=None,
    help="Send the records of this JSON-lines or CSV file ('-': stdin) instead of the synthetic stream.",
)
@click.option(
    "--format",
    "source_format",
    type=click.Choice(["jsonl", "csv"]),
    default=None,
    help="Format of --from (default: from the extension, .jsonl/.ndjson/.json or .csv; stdin: jsonl).",
)
@click.option(
    "--key-field",
    default=None,
    help="With --from: the field keying each message (default: the spec's id field).",
)
@click.option(
    "--on-bad-line",
    type=click.Choice(["fail", "skip"]),
    default="fail",
    show_default=True,
    help="With --from: a line that is not a record (bad JSON, not an object, wrong CSV cell count, a CSV cell "
    "not of its field's type). fail: a file is checked first and nothing is sent; from stdin, the records "
    "before the line are sent and nothing after. skip: send the good records, report the bad lines at the end.",
)
@click.option(
    "--timestamp-from-event-time",
    "event_time_timestamps",
    is_flag=True,
    default=False,
    help="With --from: stamp each Kafka record with its event time instead of the current time. Off by default: "
    "a topic with time-based retention deletes records whose event time is older than its retention.ms.",
)
@click.option(
    "--spec",
    "spec_path",
    default=None,
    help=f"Pipeline spec: a YAML path or a bundled name such as news (default: ${SPEC_ENV_VAR} or the demo).",
)
@click.option("--topic", default=None, help="Topic to send to (default: the spec's source topic).")
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=None,
    help="Partitions of the topic when it is created (default: the spec's); an existing topic must match.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=None,
    help=f"Records/s; 0 = no limit (default: {SYNTHETIC_RATE:g} for the synthetic stream, no limit with --from).",
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
    "--progress-every", type=click.FloatRange(min=0.1), default=5.0, show_default=True, help="Seconds."
)
@kafka_options
def produce(
    from_path: str | None,
    source_format: SourceFormat | None,
    key_field: str | None,
    on_bad_line: OnBadLine,
    event_time_timestamps: bool,
    spec_path: str | None,
    topic: str | None,
    partitions: int | None,
    rate: float | None,
    count: int,
    duration: float,
    seed: int,
    drift_at: float | None,
    drift_strength: float,
    bad_ratio: float,
    progress_every: float,
    kafka_flags: KafkaFlags,
) -> None:
    """Send synthetic events of a pipeline spec to Kafka, until --count, --duration or Ctrl-C; or, with --from,
    the records of a JSON-lines or CSV file or of stdin, keyed by a field, event times as given."""
    _check_flags(click.get_current_context(), from_path is not None)
    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    settings = kafka_flags.settings(defaults={"client_id": "rt-training-producer"})
    name = topic or spec.source.topic
    with _sigterm_as_interrupt():
        if from_path is None:
            _produce_synthetic(
                settings,
                spec,
                name,
                partitions=partitions,
                rate=SYNTHETIC_RATE if rate is None else rate,
                count=count,
                duration=duration,
                seed=seed,
                drift_at=drift_at,
                drift_strength=drift_strength,
                bad_ratio=bad_ratio,
                progress_every=progress_every,
            )
        else:
            _produce_file(
                settings,
                spec,
                name,
                from_path,
                source_format=source_format,
                key_field=key_field or spec.schema_.id_field,
                on_bad_line=on_bad_line,
                event_time_timestamps=event_time_timestamps,
                partitions=partitions,
                rate=rate or 0.0,
                progress_every=progress_every,
            )


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`KeyboardInterrupt` like Ctrl-C, so the producer stops sending,
    flushes and reports instead of dying with events in its buffer (or, with SIGTERM ignored by whoever started
    it, not stopping at all)."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_flags(ctx: click.Context, from_file: bool) -> None:
    """Refuse synthetic-stream flags with --from, and --from flags without it."""
    flags = {p.name: p.opts[0] for p in ctx.command.params}
    names = SYNTHETIC_ONLY if from_file else FILE_ONLY
    given = [flags[n] for n in names if ctx.get_parameter_source(n) is not ParameterSource.DEFAULT]
    if given and from_file:
        raise click.UsageError(
            f"{', '.join(given)} shape the synthetic stream and cannot be used with --from, which sends a file's "
            "records as they are.",
            ctx,
        )
    if given:
        raise click.UsageError(f"{', '.join(given)} apply only with --from FILE.", ctx)


def _produce_synthetic(
    settings: KafkaSettings,
    spec: PipelineSpec,
    name: str,
    *,
    partitions: int | None,
    rate: float,
    count: int,
    duration: float,
    seed: int,
    drift_at: float | None,
    drift_strength: float,
    bad_ratio: float,
    progress_every: float,
) -> None:
    from rt_training.stream.admin import TopicConflictError
    from rt_training.stream.client import KafkaConnectionProblem
    from rt_training.stream.producer import ProduceError, ensure_topic
    from rt_training.stream.producer import produce as run_producer

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
    except (KafkaConnectionProblem, TopicConflictError, ProduceError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(summary.line())


def _produce_file(
    settings: KafkaSettings,
    spec: PipelineSpec,
    name: str,
    path: str,
    *,
    source_format: SourceFormat | None,
    key_field: str,
    on_bad_line: OnBadLine,
    event_time_timestamps: bool,
    partitions: int | None,
    rate: float,
    progress_every: float,
) -> None:
    from rt_training.stream.admin import TopicConflictError
    from rt_training.stream.client import KafkaConnectionProblem
    from rt_training.stream.file_producer import (
        BadLineError,
        FileProgress,
        first_bad_line,
        send_records,
    )
    from rt_training.stream.file_source import STDIN, FileSourceError, detect_format, read_records
    from rt_training.stream.producer import ProduceError

    source = "stdin" if path == STDIN else path
    tty = sys.stderr.isatty()
    shown = False

    def show(p: FileProgress) -> None:
        nonlocal shown
        shown = True
        # On a terminal: one line rewritten in place (carriage return, then clear to the end of the line).
        click.echo(f"\r{p.line()}\x1b[K" if tty else p.line(), err=True, nl=not tty)

    try:
        fmt = detect_format(path, source_format)
        click.echo(
            f"produce: {source} ({fmt}) -> topic {name} on {settings.bootstrap_servers}, keyed by {key_field}, "
            f"{f'{rate:g} records/s' if rate else 'as fast as possible'}, bad lines: {on_bad_line}, "
            f"record timestamps: {'event time' if event_time_timestamps else 'now'}",
            err=True,
        )
        stream = sys.stdin.buffer if path == STDIN else open(path, "rb")  # noqa: SIM115
        try:
            if on_bad_line == "fail" and path != STDIN and stream.seekable():
                bad = first_bad_line(read_records(stream, fmt, spec, key_field))
                if bad is not None:
                    raise BadLineError(source, bad, 0, None)
                stream.seek(0)
            summary = send_records(
                settings,
                spec,
                name,
                read_records(stream, fmt, spec, key_field),
                source=source,
                on_bad_line=on_bad_line,
                rate=rate,
                partitions=partitions,
                event_time_timestamps=event_time_timestamps,
                progress=show,
                progress_every_s=min(progress_every, TTY_REFRESH_S) if tty else progress_every,
            )
        finally:
            if tty and shown:
                click.echo(err=True)
            if path != STDIN:
                stream.close()
    except (
        FileSourceError,
        BadLineError,
        KafkaConnectionProblem,
        TopicConflictError,
        ProduceError,
        OSError,
    ) as exc:
        raise click.ClickException(str(exc)) from None
    if summary.topic_created:
        click.echo(f"produce: created topic {name} with {summary.partitions} partitions", err=True)
    if summary.bad:
        click.echo(
            f"produce: skipped {summary.bad:,} bad lines of {source}; the first {len(summary.first_bad)}:",
            err=True,
        )
        for bad in summary.first_bad:
            click.echo(f"  {bad}", err=True)
    click.echo(summary.line())
