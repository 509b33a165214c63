"""The historical stream: deterministic for a seed, each real-world effect measurable, clean except the bad records.

Effects are measured on seeded samples with bounds around the sizes the module docstring states; the cleaning
test runs the records through the real :func:`rt_training.clean.clean_batch` with the bundled spec.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from clean_support import bronze
from click.testing import CliRunner

from rt_training.clean import clean_batch
from rt_training.cli.main import cli
from rt_training.spec import load_spec
from rt_training.stream.historical import (
    CATEGORIES,
    HistoricalStream,
    HistoryEffects,
    historical_events,
    write_jsonl,
)

SPEC_PATH = Path(__file__).resolve().parents[1] / "rt_training" / "specs" / "retail_history.yaml"
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def year() -> HistoricalStream:
    """60k events over the default year (2021)."""
    return HistoricalStream(60_000, 3)


@pytest.fixture(scope="module")
def month_records() -> tuple[HistoricalStream, list[dict | bytes]]:
    """20k events over January 2021, with 1% of each bad kind so dead letters are many."""
    effects = HistoryEffects(malformed_share=0.01, out_of_range_share=0.01)
    stream = HistoricalStream(20_000, 11, datetime(2021, 1, 1), datetime(2021, 2, 1), effects)
    return stream, list(stream.records())


def _epoch_ms(value: int | str) -> int:
    if isinstance(value, int):
        return value
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


# -- determinism ------------------------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    paths = [tmp_path / f"{i}.jsonl" for i in range(3)]
    for path, seed in zip(paths, (5, 5, 6), strict=True):
        assert write_jsonl(path, historical_events(3000, seed=seed)) == 3000
    first, again, other = (p.read_bytes() for p in paths)
    assert first == again
    assert first != other
    assert first.count(b"\n") == 3000


def test_every_event_is_emitted_once_and_ids_are_unique(month_records) -> None:
    stream, records = month_records
    assert sorted(stream.order.tolist()) == list(range(stream.n_events))
    ids = [r["event_id"] for r in records if isinstance(r, dict)]
    assert len(ids) == len(set(ids)) == stream.n_events - int((stream.bad == "malformed_json").sum())


# -- seasonality ------------------------------------------------------------------------------------------------


def test_evenings_and_weekends_have_more_traffic_and_convert_more(year: HistoricalStream) -> None:
    t = year.times_ms
    y = year.columns["purchased"]
    hour = (t // 3_600_000) % 24
    weekend = ((t // DAY_MS) + 3) % 7 >= 5
    evening = (hour >= 18) & (hour < 22)
    night = (hour >= 2) & (hour < 6)
    # rate exp(0.8 cos): the 18-22 h block holds about 3x the views of the 2-6 h block
    assert 2.5 < evening.sum() / night.sum() < 3.8
    # logit +0.5 cos(...): evening rate about 0.14, night about 0.09
    assert 1.3 < y[evening].mean() / y[night].mean() < 2.0
    # weekend logit +0.3, and 1.3x the traffic per day: 2/7 of days hold about 34% of the views
    assert 0.32 < weekend.mean() < 0.37
    assert 0.015 < y[weekend].mean() - y[~weekend].mean() < 0.04


# -- level shift ------------------------------------------------------------------------------------------------


def test_level_shift_moves_log_price_and_turns_the_device_effect(year: HistoricalStream) -> None:
    assert year.shift_time == datetime(2021, 6, 14, 6, tzinfo=UTC)
    t = year.times_ms
    shift = int(year.shift_time.timestamp() * 1000)
    before = (t >= shift - 28 * DAY_MS) & (t < shift)
    after = (t >= shift) & (t < shift + 28 * DAY_MS)
    medians = np.array([CATEGORIES.get(c, 60.0) for c in year.columns["category"]])
    relative = np.log(year.columns["price"]) - np.log(medians)
    assert relative[after].mean() - relative[before].mean() == pytest.approx(0.25, abs=0.04)
    y, device = year.columns["purchased"], year.columns["device"]
    mobile, desktop = device == "mobile", device == "desktop"
    assert y[before & desktop].mean() - y[before & mobile].mean() > 0.03
    assert y[after & mobile].mean() - y[after & desktop].mean() > 0.03
    assert (mobile[after].mean() - mobile[before].mean()) == pytest.approx(0.10, abs=0.03)


# -- new category and trend -------------------------------------------------------------------------------------


def test_new_category_absent_before_its_start_then_ramps_to_its_share(year: HistoricalStream) -> None:
    assert year.new_category_time == datetime(2021, 8, 26, 6, tzinfo=UTC)
    t, category, y = year.times_ms, year.columns["category"], year.columns["purchased"]
    start = int(year.new_category_time.timestamp() * 1000)
    new = category == "gaming"
    assert not new[t < start].any()
    assert new[(t >= start) & (t < start + 3 * DAY_MS)].any()  # the ramp starts at 0: a few in 3 days
    ramped = t >= start + 14 * DAY_MS
    assert new[ramped].mean() == pytest.approx(0.12, abs=0.012)
    # logit +1.0 against established categories around 0: clearly more purchases
    assert y[new].mean() - y[ramped & ~new].mean() > 0.05
    assert "gaming" not in load_spec(SPEC_PATH).features.categorical[1].vocabulary


def test_category_popularity_trends_over_the_year(year: HistoricalStream) -> None:
    t, category = year.times_ms, year.columns["category"]
    january = t < t.min() + 31 * DAY_MS
    december = (t >= t.max() - 31 * DAY_MS) & (category != "gaming")
    changes = [abs((category[december] == c).mean() - (category[january] == c).mean()) for c in CATEGORIES]
    # log weights move by N(0, 0.8) each: several established categories gain or lose 5+ points of share
    assert sum(change > 0.05 for change in changes) >= 3


# -- late events, nulls, time formats ---------------------------------------------------------------------------


def test_out_of_order_records_are_exactly_the_late_ones_with_delays_in_bounds(month_records) -> None:
    stream, records = month_records
    valid_ids = {f"ev11-{i:08d}" for i in np.flatnonzero(stream.bad == "").tolist()}
    good = [r for r in records if isinstance(r, dict) and r["event_id"] in valid_ids]
    newest = -1
    out_of_order = set()
    delays = {}
    for record in good:
        t = _epoch_ms(record["event_time"])
        if t < newest:
            out_of_order.add(record["event_id"])
            delays[record["event_id"]] = record["received_at"] - t
        newest = max(newest, t)
    late_ids = {f"ev11-{i:08d}" for i in np.flatnonzero(stream.late).tolist()}
    assert out_of_order == late_ids
    assert 0.015 < len(late_ids) / len(good) < 0.03  # 2.5% delayed; a few short delays overtake nothing
    assert all(120_000 <= d <= 3 * DAY_MS for d in delays.values())
    arrivals = [r["received_at"] for r in good]
    assert arrivals == sorted(arrivals)
    assert not (stream.late & (stream.bad != "")).any()


def test_discount_null_outside_promotions_and_both_time_formats(month_records) -> None:
    _, records = month_records
    objects = [r for r in records if isinstance(r, dict)]
    nulls = sum(r["discount"] is None for r in objects) / len(objects)
    assert nulls == pytest.approx(0.7, abs=0.02)
    iso = [r["event_time"] for r in objects if isinstance(r["event_time"], str)]
    assert len(iso) / len(objects) == pytest.approx(0.3, abs=0.02)
    zulu = sum(s.endswith("Z") for s in iso)
    assert zulu / len(iso) == pytest.approx(0.7, abs=0.04)  # 2/3 by choice, plus GB's +00:00 written as Z
    assert {s[-6:] for s in iso if not s.endswith("Z")} == {"+01:00", "-05:00", "-03:00"}


# -- the real cleaning ------------------------------------------------------------------------------------------


def test_cleaning_dead_letters_exactly_the_bad_records(month_records) -> None:
    stream, records = month_records
    spec = load_spec(SPEC_PATH)
    values = [r if isinstance(r, bytes) else json.dumps(r, separators=(",", ":")).encode() for r in records]
    result = clean_batch(bronze(values, topic=spec.source.topic), spec)
    expected = {kind: int((stream.bad == kind).sum()) for kind in ("malformed_json", "out_of_range")}
    assert min(expected.values()) > 100
    assert result.dead_letter_rows == sum(expected.values())
    assert {k: v for k, v in result.reason_counts.items() if v} == expected
    valid = np.flatnonzero(stream.bad[stream.order] == "")
    events = stream.order[valid]
    silver = result.silver
    assert silver.num_rows == len(events)
    event_us = silver.column("event_time").cast("int64").to_numpy()
    assert np.array_equal(event_us, stream.times_ms[events] * 1000)
    discount = silver.column("discount").to_numpy()
    assert np.array_equal(discount, np.nan_to_num(stream.columns["discount"][events]))
    assert silver.column("purchased").to_pylist() == stream.columns["purchased"][events].tolist()


def test_cli_generate_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "h.jsonl"
    result = CliRunner().invoke(
        cli,
        ["history", "generate", "--events", "500", "--out", str(out), "--seed", "2", "--end", "2021-03-01"],
    )
    assert result.exit_code == 0, result.output
    assert "wrote 500 records" in result.output
    expected = tmp_path / "expected.jsonl"
    write_jsonl(expected, historical_events(500, seed=2, end=datetime(2021, 3, 1, tzinfo=UTC)))
    assert out.read_bytes() == expected.read_bytes()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match=r"end .* must be after start"):
        HistoricalStream(10, 0, datetime(2021, 2, 1), datetime(2021, 1, 1))
    with pytest.raises(ValueError, match="late_share must be in"):
        HistoryEffects(late_share=1.5)
