"""Step splitting, event-file reading and the summary arithmetic of the backtest, on plain data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rt_training.backtest.events import (
    EventsFileError,
    Record,
    event_time_s,
    read_jsonl,
    split_steps,
)
from rt_training.backtest.report import plot_html, summarize


def _records(times: list[float | None]) -> list[Record]:
    return [Record(str(i).encode(), None, t) for i, t in enumerate(times)]


def test_time_steps_end_when_the_highest_time_reaches_the_boundary() -> None:
    # 7.0 and 9.0 arrive after 12.0 (late): they stay in the step they were read in.
    recs = _records([0.0, 4.0, 12.0, 7.0, 19.9, 9.0, 20.0, 55.0, 41.0, None])
    steps = list(split_steps(recs, step_s=10.0))
    assert [(s.index, s.start_s, s.end_s) for s in steps] == [
        (0, 0.0, 10.0),
        (1, 10.0, 20.0),
        (2, 20.0, 30.0),
        (3, 50.0, 60.0),
    ]
    assert [[r.value for r in s.records] for s in steps] == [
        [b"0", b"1"],
        [b"2", b"3", b"4", b"5"],
        [b"6"],
        [b"7", b"8", b"9"],
    ]


def test_records_before_the_first_time_join_the_first_step() -> None:
    steps = list(split_steps(_records([None, 5.0, 16.0]), step_s=10.0))
    assert [(s.rows, s.start_s, s.end_s) for s in steps] == [(2, 5.0, 15.0), (1, 15.0, 25.0)]


def test_row_steps_report_their_time_span() -> None:
    steps = list(split_steps(_records([3.0, 1.0, None, 8.0, 2.0]), step_rows=2))
    assert [(s.rows, s.start_s, s.end_s) for s in steps] == [(2, 1.0, 3.0), (2, 8.0, 8.0), (1, 2.0, 2.0)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({}, "exactly one"), ({"step_s": 1.0, "step_rows": 2}, "exactly one"), ({"step_s": 0.0}, "positive")],
)
def test_split_steps_rejects_bad_arguments(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        list(split_steps([], **kwargs))


def test_event_times_from_milliseconds_and_iso_strings() -> None:
    assert event_time_s(1_500_000_000_500) == 1_500_000_000.5
    assert event_time_s("2017-07-14T02:40:00Z") == 1_500_000_000.0
    assert event_time_s("2017-07-14 02:40:00") == 1_500_000_000.0
    assert event_time_s("2017-07-14T04:40:00+02:00") == 1_500_000_000.0
    assert event_time_s("yesterday") is None
    assert event_time_s(True) is None


def test_read_jsonl_keeps_bad_lines_for_the_dead_letters(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = [json.dumps({"id": 7, "ts": 2000}), "{not json", "", json.dumps([1, 2])]
    path.write_text("\n".join(lines) + "\n")
    recs = list(read_jsonl(path, "ts", "id"))
    assert recs == [
        Record(lines[0].encode(), b"7", 2.0),
        Record(b"{not json", None, None),
        Record(b"[1, 2]", None, None),
    ]
    with pytest.raises(EventsFileError, match=r"missing\.jsonl"):
        list(read_jsonl(tmp_path / "missing.jsonl", "ts", "id"))


def _row(
    step: int, start: str, champion: float | None, static: float | None, periodic: float | None, **kw: object
):
    row = {
        "step": step,
        "start": start,
        "rows": 100,
        "dead_letters": 2,
        "late_rows": 1,
        "champion_metric": champion,
        "static_metric": static,
        "periodic_metric": periodic,
        "retraining": False,
        "trigger": None,
        "gate": None,
        "drift": False,
    }
    row.update(kw)
    return row


def test_summary_means_counts_and_post_drift_window() -> None:
    rows = [
        _row(
            1,
            "2020-01-01T00:00:00+00:00",
            None,
            None,
            None,
            retraining=True,
            trigger="first champion",
            gate="promoted",
        ),
        _row(2, "2020-01-02T00:00:00+00:00", 0.80, 0.80, None),
        _row(
            3,
            "2020-01-03T00:00:00+00:00",
            0.70,
            0.70,
            0.75,
            drift=True,
            retraining=True,
            trigger="drift",
            gate="promoted",
        ),
        _row(
            4,
            "2020-01-04T00:00:00+00:00",
            0.78,
            0.66,
            0.74,
            drift=True,
            retraining=True,
            trigger="drift",
            gate="rejected",
        ),
    ]
    drift_at = 1577923200.0  # 2020-01-02T00:00:00Z
    s = summarize(rows, "auc", wall_s=8.0, drift_at_s=drift_at + 3600)
    assert s["steps"] == 4 and s["metric"] == "auc"
    assert s["events"] == 400 and s["events_per_s"] == 50.0
    assert s["dead_letters"] == 8 and s["late_rows"] == 4
    assert s["retrainings"] == 2 and s["promotions"] == 1 and s["first_champion_step"] == 1
    assert s["drift_steps"] == [3, 4] and s["retraining_steps"] == [3, 4]
    assert s["prequential_mean"] == pytest.approx((0.80 + 0.70 + 0.78) / 3)
    assert s["static_mean"] == pytest.approx((0.80 + 0.70 + 0.66) / 3)
    assert s["periodic_mean"] == pytest.approx((0.75 + 0.74) / 2)
    assert s["common_steps"] == 2
    assert s["common"]["prequential_mean"] == pytest.approx(0.74)
    assert s["common"]["static_mean"] == pytest.approx(0.68)
    assert s["after_drift"]["steps"] == [3, 4]
    assert s["after_drift"]["static_mean"] == pytest.approx(0.68)
    assert s["drift_at"] == "2020-01-02T01:00:00+00:00"


def test_summary_without_any_score_has_no_means() -> None:
    s = summarize([_row(1, "2020-01-01T00:00:00+00:00", None, None, None)], "rmse", wall_s=0.0)
    assert s["prequential_mean"] is None and s["static_mean"] is None and s["periodic_mean"] is None
    assert s["events_per_s"] is None
    assert "after_drift" not in s


def test_plot_marks_drift_and_promotions() -> None:
    rows = [
        _row(1, "2020-01-01T00:00:00+00:00", 0.8, 0.8, 0.7, gate="promoted"),
        _row(2, "2020-01-02T00:00:00+00:00", 0.9, 0.6, 0.8, drift=True),
    ]
    page = plot_html(rows, summarize(rows, "auc", wall_s=1.0))
    assert page.count("<polyline") == 3
    assert page.count("<title>dataset drift</title>") == 1
    assert page.count("<title>promotion after this step</title>") == 1
    assert "prequential 0.8500" in page
