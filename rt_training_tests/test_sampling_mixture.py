"""Mixture sampling by group: exact targets from event-time windows, quotas kept by every strategy on seeded
streams (tabular and text), and the training-set step on real Delta tables reporting achieved against target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import write_deltalake

from rt_training.ingest.batch import LakeLocation
from rt_training.sampling import SamplingSession
from rt_training.sampling.mixture import (
    OTHER_GROUP,
    MixturePlan,
    MixtureReport,
    allocate_quotas,
    apply_floor,
    group_keys,
    mixture_targets,
    trend_boosts,
    window_counts,
)
from rt_training.sampling.training_set import update_training_set
from rt_training.spec import load_spec, parse_spec
from rt_training.spec.models import MixtureSpec, PipelineSpec, SamplingPolicy

_TS = pa.timestamp("us", tz="UTC")
T0 = 1_551_398_400.0  # 2019-03-01: years before the tests run; nothing may depend on the wall clock


# -- pure functions -------------------------------------------------------------------------------------------
def test_targets_fixed_shares_split_the_rest_by_stream_share_and_exclude_zero() -> None:
    targets = mixture_targets({"a": 5, "b": 30, "c": 10, "d": 5}, {"a": 0.4, "d": 0.0}, floor=0.0)
    assert targets == pytest.approx({"a": 0.4, "b": 0.45, "c": 0.15, "d": 0.0})
    # A named group not seen keeps its target; with nothing unnamed seen, the named shares are renormalized.
    assert mixture_targets({"a": 3}, {"a": 0.2, "b": 0.3}, floor=0.0) == pytest.approx({"a": 0.4, "b": 0.6})


def test_floor_holds_after_renormalizing() -> None:
    weights = {"a": 0.9, "b": 0.09, "c": 0.009, "d": 0.001}
    floored = apply_floor(weights, floor=0.05)
    assert sum(floored.values()) == pytest.approx(1.0)
    assert floored["c"] == floored["d"] == 0.05
    assert floored["a"] / floored["b"] == pytest.approx(10.0)
    assert apply_floor({g: 1.0 for g in "abcdef"}, floor=0.2) == pytest.approx(dict.fromkeys("abcdef", 1 / 6))


def test_trend_boost_is_the_ratio_of_window_shares_clipped() -> None:
    counts = window_counts(
        ["a"] * 4 + ["b"] * 4 + ["a", "b", "b", "b", "new"],
        [T0 - 5000 + i for i in range(8)] + [T0 - 100, T0 - 50, T0 - 10, T0, T0 + 1],
        cut=T0,
        trend_window_s=3600,
        reference_window_s=7200,
    )
    # The row after the cut (held out) is not counted anywhere.
    assert counts.trend == {"a": 1, "b": 3} and counts.reference == {"a": 4, "b": 4}
    assert trend_boosts(counts.trend, counts.reference, max_boost=3.0) == {"a": 1.0, "b": 1.5}
    assert trend_boosts(counts.trend, counts.reference, max_boost=1.2) == {"a": 1.0, "b": 1.2}
    assert trend_boosts(counts.trend, {}, max_boost=3.0) == {}


def test_quotas_water_fill_around_short_groups_and_sum_to_capacity() -> None:
    targets = {"a": 0.6, "b": 0.25, "c": 0.15}
    assert allocate_quotas(targets, {"a": 10**6, "b": 10**6, "c": 10**6}, 1000) == {
        "a": 600,
        "b": 250,
        "c": 150,
    }
    short = allocate_quotas(targets, {"a": 10**6, "b": 40, "c": 10**6}, 1000)
    assert short["b"] == 40 and sum(short.values()) == 1000
    assert short["a"] / short["c"] == pytest.approx(4.0, abs=0.01)
    assert sum(allocate_quotas(targets, {"a": 3, "b": 4, "c": 5}, 1000).values()) == 12


def test_group_keys_compare_values_as_text() -> None:
    assert group_keys(pa.array([True, None, False])).tolist() == ["true", "(null)", "false"]
    assert group_keys(pa.chunked_array([[1, 20], [None]])).tolist() == ["1", "20", "(null)"]
    with pytest.raises(TypeError, match="string, int or bool"):
        group_keys(pa.array([1.5]))


def test_metadata_keeps_the_top_groups_and_one_other_bucket() -> None:
    targets = {f"g{i:03d}": 1 / 500 for i in range(500)}
    report = MixtureReport(MixturePlan(targets, {}, {}, T0), {f"g{i:03d}": 2 for i in range(500)})
    meta = report.metadata()
    targeted = [k for k in meta if k.startswith("mixture_target_")]
    assert len(targeted) == 20 and f"mixture_target_{OTHER_GROUP}" in meta
    assert meta[f"mixture_target_{OTHER_GROUP}"] == pytest.approx(481 / 500)
    assert meta["mixture_groups"] == 500 and meta["mixture_max_gap"] == pytest.approx(0.0)
    assert all(isinstance(v, int | float) for v in meta.values())


# -- seeded streams through the session ------------------------------------------------------------------------
CATEGORIES = np.array(["books", "electronics", "fashion", "home"])
STREAM_MIX = (0.7, 0.2, 0.08, 0.02)


def _tabular_spec(strategy: str, mixture: MixtureSpec, **sampling: object) -> PipelineSpec:
    settings = {"capacity": 1000, "recency_half_life_s": 3600.0, "replay_share": 0.2, "seed": 7, **sampling}
    policy = SamplingPolicy(strategy=strategy, mixture=mixture, **settings)
    return load_spec().model_copy(update={"sampling": policy})


def _tabular_batch(version: int, rng: np.random.Generator, rows: int = 2000) -> pa.Table:
    """Ten minutes of clickstream-like rows: the columns a session reads (no feature columns)."""
    start = T0 + version * 600
    return pa.table(
        {
            "event_id": [f"e{version}-{i}" for i in range(rows)],
            "event_time": pa.array(((start + np.arange(rows) * 600 / rows) * 1e6).astype(np.int64), _TS),
            "clicked": (rng.random(rows) < 0.2).astype(np.int64),
            "category": rng.choice(CATEGORIES, size=rows, p=STREAM_MIX),
        }
    )


@pytest.mark.parametrize(
    ("strategy", "class_balance"),
    [
        ("weighted", {0: 0.5, 1: 0.5}),
        ("weighted", None),
        ("uniform", None),
        ("time_biased", {0: 0.5, 1: 0.5}),
    ],
)
def test_fixed_shares_are_achieved_by_every_strategy_with_replay(
    strategy: str, class_balance: object
) -> None:
    """A 70/20/8/2 stream sampled to 40/30/20/rest: the recent rows hold exactly 320/240/160/80 rows."""
    mixture = MixtureSpec(by="category", shares={"books": 0.4, "electronics": 0.3, "fashion": 0.2}, floor=0.0)
    session = SamplingSession(_tabular_spec(strategy, mixture, class_balance=class_balance))
    rng = np.random.default_rng(11)
    seen: set[str] = set()
    for version in range(6):
        batch = _tabular_batch(version, rng)
        update = session.update(batch, version, reference_time=T0 + (version + 1) * 600)
        seen |= set(batch.column("event_id").to_pylist())
    assert update.mixture.plan.targets == pytest.approx(
        {"books": 0.4, "electronics": 0.3, "fashion": 0.2, "home": 0.1}
    )
    achieved = update.mixture.achieved_shares()
    assert (update.recent_rows, update.replay_rows) == (800, 200)
    assert update.mixture.achieved == {"books": 320, "electronics": 240, "fashion": 160, "home": 80}
    assert update.mixture.max_gap < 1e-9 and achieved["home"] == pytest.approx(0.1)  # 234 home rows offered
    ids, is_replay = session.members()
    assert len(set(ids.tolist())) == 1000 and set(ids.tolist()) <= seen and int(is_replay.sum()) == 200
    # Restored from its JSON state, the session continues with the same groups and targets.
    again = SamplingSession.from_state(session.spec, session.state())
    assert again.mixer.recent.group_counts() == session.mixer.recent.group_counts()
    assert again.plan == session.plan
    batch = _tabular_batch(6, rng)
    for s in (session, again):
        s.update(batch, 6, reference_time=T0 + 7 * 600)
    assert again.members()[0].tolist() == session.members()[0].tolist()


def test_class_balance_still_acts_within_the_groups() -> None:
    """Mixture quotas and class-balance weights together: the click rate of the recent rows rises from the
    stream's 20% towards the 50% target (measured 0.448 against 0.193 without), while group shares stay exact."""
    mixture = MixtureSpec(by="category", shares={"books": 0.5, "electronics": 0.5}, floor=0.0)
    rng = np.random.default_rng(3)
    rates = {}
    for name, balance in (("balanced", {0: 0.5, 1: 0.5}), ("plain", None)):
        session = SamplingSession(_tabular_spec("weighted", mixture, class_balance=balance, replay_share=0.0))
        rng = np.random.default_rng(3)
        for version in range(6):
            update = session.update(
                _tabular_batch(version, rng), version, reference_time=T0 + (version + 1) * 600
            )
        ids = set(session.members()[0].tolist())
        assert update.mixture.max_gap == 0.0
        clicked = []
        rng = np.random.default_rng(3)
        for version in range(6):
            batch = _tabular_batch(version, rng)
            keep = np.isin(batch.column("event_id").to_numpy(zero_copy_only=False), list(ids))
            clicked.append(batch.column("clicked").to_numpy()[keep])
        rates[name] = float(np.concatenate(clicked).mean())
    assert rates["plain"] < 0.25 and rates["balanced"] > 0.42


NEWS_SPEC = {
    "name": "news",
    "source": {"topic": "news"},
    "schema": {
        "id_field": "article_id",
        "time_field": "published",
        "fields": {
            "article_id": {"type": "string"},
            "published": {"type": "timestamp"},
            "topic": {"type": "string"},
            "body": {"type": "text"},
        },
    },
    "features": {"text": [{"name": "body", "max_length": 32}]},
    "label": {"field": "body", "kind": "language_model"},
    "model": {"builtin": "causal_lm"},
}
TOPICS = np.array(["politics", "sports", "science", "weather"])


def _news_spec(trending: bool) -> PipelineSpec:
    data = {
        **NEWS_SPEC,
        "sampling": {
            "capacity": 500,
            "strategy": "weighted",
            "recency_half_life_s": 7200,
            "seed": 3,
            "mixture": {
                "by": "topic",
                "trending": trending,
                "trend_window": 3600,
                "reference_window": 6 * 3600,
                "max_boost": 3.0,
                "floor": 0.05,
            },
        },
    }
    return parse_spec(data)


def _news_hour(hour: int, rng: np.random.Generator, rows: int = 400) -> pa.Table:
    """An hour of articles: politics 50%, sports 30%, weather 15%, science 5%, until hour 6, when science
    rises to 25% (taken from politics)."""
    p = (0.5, 0.3, 0.05, 0.15) if hour < 6 else (0.3, 0.3, 0.25, 0.15)
    topics = rng.choice(TOPICS, size=rows, p=p)
    start = T0 + hour * 3600
    return pa.table(
        {
            "article_id": [f"a{hour}-{i}" for i in range(rows)],
            "published": pa.array(((start + np.arange(rows) * 3600 / rows) * 1e6).astype(np.int64), _TS),
            "topic": topics,
            "body": [f"{t} story {i} about things" for i, t in enumerate(topics)],
        }
    )


def test_trending_raises_a_rising_topic_and_the_floor_keeps_the_rest() -> None:
    """Seven hours of a text stream, each offered at once with the windows over everything offered so far; in
    the last hour science goes from 5% to 25% of the articles. Its trend share (25%) against its reference
    share (5%) is a ratio of 5, clipped to the max boost 3."""
    rng = np.random.default_rng(5)
    hours = [_news_hour(h, rng) for h in range(7)]
    results = {}
    for trending in (False, True):
        session = SamplingSession(_news_spec(trending))
        for h, batch in enumerate(hours):
            window = pa.concat_tables(hours[: h + 1]).select(["topic", "published"])
            update = session.update(batch, h, reference_time=T0 + (h + 1) * 3600, mixture_window=window)
        results[trending] = update.mixture
    flat, trend = results[False], results[True]
    assert trend.plan.boosts["science"] == 3.0
    # politics falls (boost 1); sports keeps its rate, up to the stream's noise (measured 1.02).
    assert trend.plan.boosts["politics"] == 1.0 and 1.0 <= trend.plan.boosts["sports"] < 1.1
    # science's stream share over the 7-hour horizon (measured 0.0736) is its target without trending; with
    # trending it is boosted x3 (weather and sports by their own small rises) and renormalized (measured 0.188).
    science_stream = flat.plan.stream_shares["science"]
    assert flat.plan.targets["science"] == pytest.approx(science_stream)
    boosted = {g: s * trend.plan.boosts.get(g, 1.0) for g, s in flat.plan.stream_shares.items()}
    expected = boosted["science"] / sum(boosted.values())
    assert trend.plan.targets["science"] == pytest.approx(expected)
    flat_share, trend_share = flat.achieved_shares()["science"], trend.achieved_shares()["science"]
    assert trend_share == pytest.approx(expected, abs=1 / 500)
    assert trend_share / flat_share > 2.4  # measured 0.188 / 0.074 = 2.54
    for report in (flat, trend):
        assert min(report.plan.targets.values()) >= 0.05 - 1e-12
        assert min(report.achieved_shares().values()) >= 0.05 - 1 / 500
        assert report.max_gap <= 1 / 500


def test_a_session_saved_before_mixture_existed_resumes() -> None:
    """A state whose saved policy has no ``mixture`` key (written before the setting existed) is the default."""
    spec = load_spec().model_copy(
        update={"sampling": SamplingPolicy(capacity=50, strategy="weighted", replay_share=0.0)}
    )
    session = SamplingSession(spec)
    session.update(_tabular_batch(0, np.random.default_rng(0), rows=100), 0)
    state = session.state()
    del state["policy"]["mixture"]
    del state["mixture_plan"]
    again = SamplingSession.from_state(spec, state)
    assert again.plan is None and len(again.members()[0]) == 50


# -- the training-set step on Delta ------------------------------------------------------------------------------
def _silver_rows(spec: PipelineSpec, start: float, rows: int, offset: int, groups: np.ndarray) -> pa.Table:
    """Silver rows (meta columns and typed fields, no feature columns), one second apart from ``start``."""
    rng = np.random.default_rng(offset)
    times = ((start + np.arange(rows)) * 1e6).astype(np.int64)
    return pa.table(
        {
            "_topic": pa.array([spec.source.topic] * rows, pa.string()),
            "_partition": pa.array(np.zeros(rows, np.int32)),
            "_offset": pa.array(offset + np.arange(rows), pa.int64()),
            "_ingested_at": pa.array(times, _TS),
            "event_id": [f"ev-{offset + i}" for i in range(rows)],
            "event_time": pa.array(times, _TS),
            "position": pa.array(groups.astype(np.int64)),
            "price": rng.gamma(2.0, 10.0, rows),
            "clicked": (rng.random(rows) < 0.3).astype(np.int64),
        }
    )


def test_training_set_runs_recompute_targets_from_silver_and_report_them(tmp_path: Path) -> None:
    """Int groups (``position``) on real Delta tables: two runs, each with targets from silver up to its cut.
    Position 3 appears only in the held-out window of the first run, so only the second targets it."""
    spec = _tabular_spec(
        "weighted",
        MixtureSpec(by="position", shares={"1": 0.5}, trending=True, trend_window=600, reference_window=3000),
        class_balance={0: 0.5, 1: 0.5},
        importance=False,
    )
    spec = spec.model_copy(
        update={
            "sampling": spec.sampling.model_copy(update={"capacity": 400, "replay_share": 0.25}),
            "training": spec.training.model_copy(update={"holdout_window_s": 600.0}),
            "time": spec.time.model_copy(update={"allowed_lateness": 0.0}),
        }
    )
    lake = LakeLocation(str(tmp_path))
    silver = lake.uri(spec.name, "silver")
    rng = np.random.default_rng(2)
    # One hour of positions 1 and 2 (1 in 10 rows is position 1), then 10 minutes in which position 3 appears.
    hour = rng.choice([1, 2], size=3600, p=[0.1, 0.9])
    write_deltalake(silver, _silver_rows(spec, T0, 3600, 0, hour), mode="append")
    write_deltalake(
        silver, _silver_rows(spec, T0 + 3600, 600, 3600, rng.choice([1, 2, 3], 600)), mode="append"
    )
    first = update_training_set(spec, lake)
    assert first.changed and first.rows_offered == 3600  # cut = T0 + 3599 s: the last 10 minutes held out
    assert set(first.mixture.plan.targets) == {"1", "2"}
    # Fixed 50/50, each times its boost (the last 10 minutes against the 50 before), renormalized.
    b1, b2 = (first.mixture.plan.boosts[g] for g in ("1", "2"))
    assert first.mixture.plan.targets["1"] == pytest.approx(b1 / (b1 + b2))
    meta = first.metadata()
    assert meta["mixture_target_1"] == pytest.approx(b1 / (b1 + b2), abs=1e-6)
    assert meta["mixture_boost_1"] == pytest.approx(b1, abs=1e-6) and meta["mixture_groups"] == 2
    assert meta["mixture_max_gap"] <= 1 / 300
    assert meta["mixture_share_1"] == pytest.approx(meta["mixture_target_1"], abs=1 / 300)
    # The next hour: position 3 keeps coming; the second cut puts its first 10 minutes in the trend window.
    write_deltalake(
        silver, _silver_rows(spec, T0 + 4200, 1200, 4200, rng.choice([1, 2, 3], 1200)), mode="append"
    )
    second = update_training_set(spec, lake)
    assert second.changed and second.rows_offered == 600 + 600
    plan = second.mixture.plan
    assert plan.boosts["3"] == 3.0 and plan.targets["1"] + plan.targets["2"] + plan.targets[
        "3"
    ] == pytest.approx(1)
    assert plan.targets["3"] > plan.stream_shares["3"] * (1 - plan.targets["1"]) / (
        1 - plan.stream_shares["1"]
    )
    meta = second.metadata()
    assert meta["mixture_boost_3"] == 3.0 and meta["mixture_groups"] == 3
    assert meta["mixture_max_gap"] <= 1 / 300
    for g in ("1", "2", "3"):
        assert meta[f"mixture_share_{g}"] == pytest.approx(meta[f"mixture_target_{g}"], abs=1 / 300)
    # The snapshot's recent rows hold those shares (replay rows are older data outside the targets).
    snapshot = _snapshot(lake, spec)
    recent = snapshot.filter(pc.invert(snapshot.column("_is_replay")))
    assert recent.num_rows == 300 and snapshot.num_rows == 400
    counts = dict(zip(*np.unique(recent.column("position").to_numpy(), return_counts=True), strict=True))
    assert {str(k): v / 300 for k, v in counts.items()} == pytest.approx(second.mixture.achieved_shares())
    # A run with nothing new reports the saved sample's mixture.
    same = update_training_set(spec, lake)
    assert not same.changed and same.metadata()["mixture_target_3"] == meta["mixture_target_3"]


def _snapshot(lake: LakeLocation, spec: PipelineSpec) -> pa.Table:
    from deltalake import DeltaTable

    return DeltaTable(lake.uri(spec.name, "training_set")).to_pyarrow_table()
