"""``rt-training backtest``: replay a history through the pipeline and compare continual training with baselines.

Examples::

    rt-training backtest my_spec.yaml --events history.jsonl --step 30d
    rt-training backtest my_spec.yaml --events history.jsonl --step-rows 25000 --out .data/backtest/mine
"""

from __future__ import annotations

from pathlib import Path

import click

from rt_training.cli.kafka_options import KafkaFlags, kafka_options
from rt_training.spec import SpecError, load_spec


@click.command()
@click.argument("spec_path", metavar="SPEC")
@click.option(
    "--events",
    "events_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSONL file of historical events, one per line, in arrival order.",
)
@click.option(
    "--step", "step", default=None, help="Step length in event time: 90s, 6h, 30d, ... (default 30d)."
)
@click.option("--step-rows", type=click.IntRange(min=1), default=None, help="Step length in records instead.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (default .data/backtest/<pipeline>-<UTC time>).",
)
@click.option(
    "--periodic-window",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Steps of data the periodic baseline is retrained on after every step.",
)
@click.option(
    "--keep-lake", is_flag=True, help="Keep the lake and checkpoints of the run under the output folder."
)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True, help="torch threads.")
@kafka_options
def backtest(
    spec_path: str,
    events_path: Path,
    step: str | None,
    step_rows: int | None,
    out_dir: Path | None,
    periodic_window: int,
    keep_lake: bool,
    threads: int,
    kafka_flags: KafkaFlags,
) -> None:
    """Replay EVENTS through the pipeline of SPEC, step by step in event time, scoring each step with the champion
    in force before it, beside a static model and a periodic retrain; writes backtest.json and a plot.

    The replay goes through the cluster of --bootstrap-servers or $KAFKA_BOOTSTRAP_SERVERS when one is named,
    else through a local broker started for the run."""
    from rt_training.backtest import BacktestConfig, run_backtest
    from rt_training.backtest.events import EventsFileError
    from rt_training.ops.kafka_local import LocalKafkaError
    from rt_training.spec.durations import parse_duration
    from rt_training.stream.client import KafkaConnectionProblem
    from rt_training.stream.producer import ProduceError

    if step is not None and step_rows is not None:
        raise click.UsageError("give --step or --step-rows, not both")
    step_s = None
    if step_rows is None:
        try:
            step_s = parse_duration(step or "30d")
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--step") from None
        if step_s <= 0:
            raise click.BadParameter("the step must be longer than 0s", param_hint="--step")
    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    config = BacktestConfig(
        events=events_path,
        step_s=step_s,
        step_rows=step_rows,
        out_dir=out_dir,
        periodic_window_steps=periodic_window,
        kafka=kafka_flags.settings() if kafka_flags.names_cluster else None,
        keep_lake=keep_lake,
        threads=threads,
    )
    try:
        run_backtest(spec, config, progress=lambda line: click.echo(line))
    except (EventsFileError, KafkaConnectionProblem, LocalKafkaError, ProduceError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
