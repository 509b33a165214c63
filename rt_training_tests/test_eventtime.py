"""The event-time clock on real Delta tables, and durations in specs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from rt_training.eventtime import event_clock, max_event_time, read_event_clock, rows_after, rows_up_to
from rt_training.ingest.batch import LakeLocation
from rt_training.spec import SpecError, load_spec, parse_spec
from rt_training.spec.durations import format_duration, parse_duration

T0 = dt.datetime(2016, 7, 1, 12, tzinfo=dt.UTC)
TS = pa.timestamp("us", tz="UTC")


def times(*seconds: float) -> pa.Table:
    return pa.table(
        {"t": pa.array([T0 + dt.timedelta(seconds=s) for s in seconds], TS), "x": list(range(len(seconds)))}
    )


def test_max_event_time_and_rows_up_to_come_from_statistics_and_straddling_files(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    write_deltalake(uri, times(0, 10, 20))
    write_deltalake(uri, times(-500, 5, 15), mode="append")  # late rows and a file straddling later cuts
    table = DeltaTable(uri)
    assert max_event_time(table, "t") == T0 + dt.timedelta(seconds=20)
    assert rows_up_to(table, "t", T0 - dt.timedelta(seconds=501)) == 0
    assert rows_up_to(table, "t", T0) == 2
    assert rows_up_to(table, "t", T0 + dt.timedelta(seconds=12)) == 4
    assert rows_up_to(table, "t", T0 + dt.timedelta(days=1)) == 6
    assert rows_after(table, "t", T0) == 4 and rows_after(table, "t", T0 + dt.timedelta(days=1)) == 0


def test_a_table_without_statistics_is_read(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    write_deltalake(uri, times(0, 30), configuration={"delta.dataSkippingNumIndexedCols": "0"})
    table = DeltaTable(uri)
    assert max_event_time(table, "t") == T0 + dt.timedelta(seconds=30)
    assert rows_up_to(table, "t", T0 + dt.timedelta(seconds=10)) == 1


def test_clock_of_a_pipeline_counts_lateness_back_from_silver(tmp_path: Path) -> None:
    spec = load_spec()
    spec = spec.model_copy(update={"time": spec.time.model_copy(update={"allowed_lateness": 600.0})})
    lake = LakeLocation(str(tmp_path))
    empty = read_event_clock(spec, lake)
    assert empty.watermark is None and empty.cut(60) is None and empty.to_metadata() == {}
    silver = pa.table({spec.time_field: pa.array([T0, T0 + dt.timedelta(hours=1)], TS)})
    write_deltalake(lake.uri(spec.name, "silver"), silver)
    clock = read_event_clock(spec, lake)
    assert clock.silver_version == 0 and clock.max_event_time == T0 + dt.timedelta(hours=1)
    assert clock.watermark == T0 + dt.timedelta(minutes=50)
    assert clock.watermark_s == (T0 + dt.timedelta(minutes=50)).timestamp()
    assert clock.cut(3600) == T0 - dt.timedelta(minutes=10)
    assert event_clock(spec, None).watermark is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90s", 90.0),
        ("10m", 600.0),
        ("6h", 21600.0),
        ("30d", 2592000.0),
        ("2w", 1209600.0),
        ("250ms", 0.25),
        (" 1.5h ", 5400.0),
        ("0", 0.0),
    ],
)
def test_durations(text, seconds) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["10 minutes", "-5m", "m", True, None, [], "1e3s", "nan"])
def test_bad_durations_say_what_is_accepted(bad) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_format_duration_round_trips() -> None:
    for seconds in (0.5, 45.0, 600.0, 5400.0, 86400.0, 2592000.0, 1209600.0):
        assert parse_duration(format_duration(seconds)) == seconds


def test_a_spec_takes_durations_and_names_the_field_of_a_bad_one() -> None:
    data = load_spec().model_dump(mode="json", by_alias=True)
    data["training"]["holdout_window_s"] = "2h"
    data["drift"]["cooldown_s"] = "1d"
    data["time"] = {"allowed_lateness": "10m", "max_lateness": "30d"}
    spec = parse_spec(data)
    assert spec.training.holdout_window_s == 7200.0 and spec.drift.cooldown_s == 86400.0
    assert spec.time.allowed_lateness == 600.0 and spec.time.max_lateness == 2592000.0
    data["time"] = {"allowed_lateness": "ten minutes"}
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert err.value.errors[0][0] == "time.allowed_lateness" and "10m" in err.value.errors[0][1]


def test_rows_up_to_reads_a_file_whose_statistic_is_rounded_down_to_the_cut(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    write_deltalake(uri, times(0, 0.0006))  # statistics keep milliseconds: max.t is T0
    table = DeltaTable(uri)
    assert max_event_time(table, "t") == T0
    assert rows_up_to(table, "t", T0) == 1 and rows_after(table, "t", T0) == 1
