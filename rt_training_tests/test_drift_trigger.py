"""Retraining trigger on a seeded stream: silence while stationary, one launch on drift, cooldown, one in flight."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from rt_training.drift import decide_retraining, detect_drift, quality_drop
from rt_training.drift.detector import ColumnDrift, DriftResult
from rt_training.drift.trigger import IN_FLIGHT, periodic_due
from rt_training.spec.models import DriftPolicy, TrainingPolicy

NUMERIC = ["amount", "dwell", "score"]
CATEGORICAL = ["device", "country"]
WINDOW_S = 60.0


def _generate(n: int, rng: np.random.Generator, drifted: bool) -> pd.DataFrame:
    """One window of a stream; ``drifted`` moves two numeric columns and one categorical one."""
    shift = 0.4 if drifted else 0.0
    return pd.DataFrame(
        {
            "amount": rng.lognormal(3 + shift, 0.5, n),
            "dwell": rng.gamma(2.0, 10.0 * (1 + shift), n),
            "score": rng.beta(2, 5, n),
            "device": rng.choice(
                ["mobile", "desktop", "tablet"], n, p=[0.6 - shift / 2, 0.3, 0.1 + shift / 2]
            ),
            "country": rng.choice(["de", "fr", "it", "es"], n, p=[0.4, 0.3, 0.2, 0.1]),
        }
    )


@dataclass
class _Scheduler:
    """What the sensor does with the decisions: launch, remember when, know whether a run is still going."""

    policy: DriftPolicy
    training_s: float
    last_launch_at: float | None = None
    running_until: float = -np.inf
    launches: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def tick(self, index: int, now: float, drift: DriftResult) -> None:
        in_flight = now < self.running_until
        decision = decide_retraining(
            now=now, last_launch_at=self.last_launch_at, in_flight=in_flight, policy=self.policy, drift=drift
        )
        self.reasons.append(decision.reason)
        if decision.launch:
            assert not in_flight  # never a second retraining while one runs
            self.launches.append(index)
            self.last_launch_at, self.running_until = now, now + self.training_s


def _run_stream(
    n_windows: int, drift_from: int | None, training_s: float, cooldown_s: float = 600.0
) -> _Scheduler:
    rng = np.random.default_rng(2024)
    reference = _generate(5000, rng, drifted=False)
    scheduler = _Scheduler(DriftPolicy(cooldown_s=cooldown_s), training_s)
    for i in range(n_windows):
        window = _generate(2000, rng, drifted=drift_from is not None and i >= drift_from)
        scheduler.tick(
            i, i * WINDOW_S, detect_drift(reference, window, NUMERIC, CATEGORICAL, scheduler.policy)
        )
    return scheduler


def test_stationary_stream_never_triggers() -> None:
    scheduler = _run_stream(25, drift_from=None, training_s=180)
    assert scheduler.launches == []
    assert all(r.startswith("no dataset drift: 0/5 columns drifted") for r in scheduler.reasons)


def test_drift_triggers_once_then_cooldown_then_again() -> None:
    scheduler = _run_stream(35, drift_from=20, training_s=180)
    assert scheduler.launches[0] in (20, 21)  # within two windows of the change
    assert scheduler.launches == [20, 30]  # the next launch waits the 600 s cooldown out (10 windows)
    assert scheduler.reasons[20].startswith("dataset drift: 3/5 columns drifted (share 0.6 >= 0.5)")
    assert scheduler.reasons[21].endswith(IN_FLIGHT)
    assert scheduler.reasons[22].endswith(IN_FLIGHT)
    assert scheduler.reasons[23].endswith("cooldown: last retraining 3m of event time ago < 10m")
    assert scheduler.reasons[29].endswith("cooldown: last retraining 9m of event time ago < 10m")


def test_a_long_retraining_blocks_launches_past_the_cooldown() -> None:
    scheduler = _run_stream(40, drift_from=20, training_s=900)
    assert scheduler.launches == [20, 35]  # in flight until 20 * 60 + 900 s, i.e. window 35
    assert all(r.endswith(IN_FLIGHT) for r in scheduler.reasons[21:35])


def _drift_result(drifted: list[bool], drift_share: float = 0.5) -> DriftResult:
    columns = tuple(
        ColumnDrift(f"c{i}", "numeric", "wasserstein", 0.2 if d else 0.01, 0.1, d, 5000, 2000, None)
        for i, d in enumerate(drifted)
    )
    n = sum(drifted)
    share = n / len(drifted)
    return DriftResult(columns, n, share, drift_share, share >= drift_share, 5000, 2000)


@pytest.mark.parametrize(
    ("last_launch_at", "in_flight", "launch", "last_reason"),
    [
        (None, False, True, "dataset drift: 3/5 columns drifted (share 0.6 >= 0.5)"),
        (880.0, False, False, "cooldown: last retraining 2m of event time ago < 10m"),
        (400.0, False, True, "dataset drift: 3/5 columns drifted (share 0.6 >= 0.5)"),  # exactly 600 s ago
        (100.0, True, False, "retraining already in flight"),
    ],
)
def test_decision_and_its_reason(
    last_launch_at: float | None, in_flight: bool, launch: bool, last_reason: str
) -> None:
    decision = decide_retraining(
        now=1000.0,
        last_launch_at=last_launch_at,
        in_flight=in_flight,
        policy=DriftPolicy(cooldown_s=600),
        drift=_drift_result([True, True, True, False, False]),
    )
    assert decision.launch is launch
    assert decision.reasons[-1] == last_reason
    assert json.loads(json.dumps(decision.to_dict())) == {"launch": launch, "reasons": list(decision.reasons)}


def test_no_signal_means_no_launch() -> None:
    policy = DriftPolicy()
    quiet = decide_retraining(now=0.0, last_launch_at=None, in_flight=False, policy=policy)
    assert (quiet.launch, quiet.reasons) == (False, ("no drift result or quality signal yet",))
    below = decide_retraining(
        now=0.0,
        last_launch_at=None,
        in_flight=False,
        policy=policy,
        drift=_drift_result([True, False, False]),
    )
    assert (below.launch, below.reason) == (
        False,
        "no dataset drift: 1/3 columns drifted (share 0.333 < 0.5)",
    )


def test_quality_drop_alone_triggers() -> None:
    policy = DriftPolicy(quality_drop=0.05)
    held = quality_drop("auc", baseline=0.80, recent=0.78, max_drop=policy.quality_drop)
    dropped = quality_drop("auc", baseline=0.80, recent=0.70, max_drop=policy.quality_drop)
    no_drift = _drift_result([False, False])
    assert not decide_retraining(
        now=0.0, last_launch_at=None, in_flight=False, policy=policy, drift=no_drift, quality=held
    ).launch
    decision = decide_retraining(
        now=0.0, last_launch_at=None, in_flight=False, policy=policy, drift=no_drift, quality=dropped
    )
    assert decision.launch
    assert decision.reasons == (
        "no dataset drift: 0/2 columns drifted (share 0 < 0.5)",
        "quality drop: auc 0.8 -> 0.7 (worse by 0.1 > 0.05)",
    )


@pytest.mark.parametrize(
    ("metric", "baseline", "recent", "worsening", "dropped"),
    [
        ("auc", 0.81, 0.74, 0.07, True),
        ("accuracy", 0.90, 0.85, 0.05, False),  # a drop of exactly the tolerance is tolerated
        ("accuracy", 0.90, 0.95, -0.05, False),
        ("log_loss", 0.40, 0.46, 0.06, True),  # lower is better: an increase is the drop
        ("rmse", 2.0, 1.5, -0.5, False),
    ],
)
def test_quality_drop_direction(
    metric: str, baseline: float, recent: float, worsening: float, dropped: bool
) -> None:
    signal = quality_drop(metric, baseline=baseline, recent=recent, max_drop=0.05)
    assert signal.worsening == pytest.approx(worsening)
    assert signal.dropped is dropped


def test_quality_not_finite_is_not_a_drop() -> None:
    signal = quality_drop("auc", baseline=0.8, recent=float("nan"), max_drop=0.05)
    assert not signal.dropped
    assert signal.reason() == "quality unknown: auc 0.8 -> nan (not finite)"
    assert json.loads(json.dumps(signal.to_dict()))["recent"] is None


def test_quality_unknown_metric_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        quality_drop("f1", baseline=0.8, recent=0.7, max_drop=0.05)


def test_cooldown_counts_event_time_of_a_replay_years_ago() -> None:
    """A replay of 2009 events: the cooldown is 10 minutes of its event time, whatever the wall clock says."""
    launched = 1_230_768_000.0  # 2009-01-01T00:00:00Z, the watermark at the last launch
    policy = DriftPolicy(cooldown_s="10m")
    drift = _drift_result([True, True, False])
    held = decide_retraining(
        now=launched + 599.0, last_launch_at=launched, in_flight=False, policy=policy, drift=drift
    )
    assert not held.launch
    assert held.reasons[-1] == "cooldown: last retraining 599s of event time ago < 10m"
    over = decide_retraining(
        now=launched + 600.0, last_launch_at=launched, in_flight=False, policy=policy, drift=drift
    )
    assert over.launch and over.reasons == ("dataset drift: 2/3 columns drifted (share 0.667 >= 0.5)",)


DAY = 86400.0


@pytest.mark.parametrize(
    ("now", "new_rows", "in_flight", "launch", "reason"),
    [
        (29 * DAY, 999, False, False, "not due: 29d of event time < 30d, 999 new rows < 1000"),
        (30 * DAY, 10, False, True, "30d of event time since the last retraining (30d >= 30d)"),
        (2 * DAY, 1000, False, True, "1000 new silver rows since the last retraining (>= 1000)"),
        (31 * DAY, 5, True, False, "30d of event time since the last retraining (31d >= 30d); " + IN_FLIGHT),
    ],
)
def test_periodic_retraining_on_event_time_or_rows(
    now: float, new_rows: int, in_flight: bool, launch: bool, reason: str
) -> None:
    policy = TrainingPolicy(retrain_every_s="30d", retrain_every_rows=1000)
    decision = periodic_due(policy=policy, now=now, since=0.0, new_rows=new_rows, in_flight=in_flight)
    assert (decision.launch, decision.reason) == (launch, reason)


def test_periodic_retraining_needs_a_setting_and_a_start() -> None:
    off = periodic_due(policy=TrainingPolicy(), now=1e9, since=0.0, new_rows=10**6, in_flight=False)
    assert not off.launch and off.reason.startswith("no periodic retraining")
    rows_only = TrainingPolicy(retrain_every_rows=100)
    first = periodic_due(policy=rows_only, now=1e9, since=None, new_rows=None, in_flight=False)
    assert not first.launch and first.reason == "not due: no champion and no retraining launched yet"
