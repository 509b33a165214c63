"""``rt-training history``: make a realistic historical event stream to backtest a pipeline with.

Examples::

    rt-training history generate --events 300000 --out retail_history.jsonl --seed 7
    rt-training backtest rt_training/specs/retail_history.yaml --events retail_history.jsonl --step 30d
"""

from __future__ import annotations

from datetime import UTC, datetime

import click


def _instant(ctx: click.Context, param: click.Parameter, value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO-8601 date or date-time, e.g. 2021-01-01") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


@click.group()
def history() -> None:
    """Historical event streams for backtests."""


@history.command("generate")
@click.option("--events", "n_events", type=click.IntRange(min=1), required=True, help="Records to write.")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="JSONL file to write.")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the whole stream.")
@click.option(
    "--start", default="2021-01-01", show_default=True, callback=_instant, help="First event time (UTC)."
)
@click.option("--end", default="2022-01-01", show_default=True, callback=_instant, help="End of event times.")
def generate(n_events: int, out: str, seed: int, start: datetime, end: datetime) -> None:
    """Write a year of a web shop's product views (spec rt_training/specs/retail_history.yaml) in arrival order.

    The stream has daily and weekly seasonality, a price rise and redesign, a new category, slowly trending
    categories, about 2.5% late events, null discounts and about 0.2% bad records (see
    rt_training/stream/historical.py).
    """
    from rt_training.stream.historical import HistoricalStream, write_jsonl

    try:
        stream = HistoricalStream(n_events, seed, start, end)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    written = write_jsonl(out, stream.records())
    click.echo(
        f"history: wrote {written:,} records to {out} (seed {seed}), event times {stream.start:%Y-%m-%d} to "
        f"{stream.end:%Y-%m-%d}; level shift {stream.shift_time:%Y-%m-%d}, new category "
        f"{stream.effects.new_category!r} from {stream.new_category_time:%Y-%m-%d}; "
        f"{int(stream.late.sum()):,} late, {int((stream.bad != '').sum()):,} bad records"
    )
