"""A realistic historical event stream for backtests: a year of a web shop's product views, labelled by purchase.

Each record is one product view (``rt_training/specs/retail_history.yaml`` is its spec); the label ``purchased``
says whether the view ended in a purchase. The stream is seeded and deterministic: the same arguments give the
same records, byte for byte. It carries the effects a model meets in production, each set by a field of
:class:`HistoryEffects` (defaults in brackets):

Seasonality (hours and weekdays are UTC, the shop's clock)
    The event rate is ``exp(a * cos(2 pi (hour - peak) / 24))`` [``a = daily_rate_amplitude = 0.8``,
    ``peak = peak_hour = 20``, a 5x swing from 8 am to 8 pm] times ``weekend_rate`` [1.3] on Saturdays and
    Sundays, times a linear growth of the shop from 1 to ``growth`` [1.5] over the span. The label's logit gets
    ``daily_label_amplitude * cos(2 pi (hour - peak) / 24)`` [0.5: evenings buy more] plus ``weekend_label``
    [0.3] on weekends.
Level shift (``shift_at`` [0.45] of the span: 2021-06-14 for the default year)
    A price rise and a site redesign. Prices are multiplied by ``exp(price_shift)`` [0.25: the mean of
    ``log(price)`` moves up by 0.25], buyers become more price sensitive (logit per unit of relative log price
    ``price_effect`` [-0.4] before, ``price_effect_after`` [-1.2] after), and the new mobile checkout turns the
    device effects around (``device_effects`` [mobile -0.5, desktop +0.3, tablet 0] before,
    ``device_effects_after`` [mobile +0.5, desktop -0.2, tablet -0.1] after; the mobile share of traffic goes
    from 55% to 65%). A model trained before the shift ranks devices the wrong way round after it.
New category (``new_category`` ["gaming"] from ``new_category_at`` [0.65]: 2021-08-26)
    Absent before, then its share of views ramps linearly to ``new_category_share`` [0.12] over
    ``new_category_ramp_days`` [14]; its logit effect is ``new_category_effect`` [+1.0].
Slow trend
    Each established category's popularity (log weight) and logit effect move linearly over the span, from a
    seeded start to a seeded end (standard deviations ``trend_popularity`` [0.8] and ``trend_effect`` [0.6] of the
    change), so recent data describes the present better than old data.
Late events
    A share ``late_share`` [0.025] of the valid events is delayed by ``exp(U(log late_min_s, log late_max_s))``
    [2 minutes to 3 days]; records are emitted in arrival order (the position in the output is the arrival, the
    ``event_time`` field is when the view happened, ``received_at`` when the collector got it). A delayed event
    that no later event overtakes is in order after all: :attr:`HistoricalStream.late` marks the events that
    arrive after an event with a later event time, which are exactly the out-of-order ones.
Nulls and bad records
    ``discount`` is null unless the view is in a promotion (``promo_share`` [0.3]; cleaning fills in the spec's
    default 0.0). A share ``malformed_share`` [0.001] of records is JSON cut short (dead letter
    ``malformed_json``) and ``out_of_range_share`` [0.001] carries a negative price or a position above 100
    (``out_of_range``); bad records are never delayed.
Time formats
    ``event_time`` is epoch milliseconds, except a share ``iso_share`` [0.3] written as ISO-8601 strings: two
    thirds with ``Z``, one third with the country's UTC offset (``+01:00``, ``-05:00``, ...), the same instant.

The label is ``Bernoulli(sigmoid(logit))`` with the terms above plus fixed per-country, per-user (standard
deviation 0.5) and per-item (0.3) effects, ``+0.5`` per standard deviation of log dwell time, ``-0.05`` per list
position and ``+2`` per unit of discount, and an intercept that puts the purchase rate at ``base_rate`` [0.12].
Prices are lognormal around a per-category median (sigma 0.5); the relative log price is
``(log(price) - log(median)) / 0.5`` measured against the pre-shift medians, so the price rise itself also
lowers purchases.

Examples
--------
>>> from datetime import UTC, datetime
>>> events = list(historical_events(200, seed=1, start=datetime(2021, 1, 1, tzinfo=UTC),
...                                 end=datetime(2021, 2, 1, tzinfo=UTC)))
>>> len(events), sorted(events[0])[:4]
(200, ['category', 'country', 'device', 'discount'])
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_END",
    "DEFAULT_START",
    "HistoricalStream",
    "HistoryEffects",
    "historical_events",
    "write_jsonl",
]

DEFAULT_START = datetime(2021, 1, 1, tzinfo=UTC)
DEFAULT_END = datetime(2022, 1, 1, tzinfo=UTC)

CATEGORIES: dict[str, float] = {
    "books": 15.0,
    "electronics": 250.0,
    "fashion": 45.0,
    "home": 80.0,
    "sports": 60.0,
    "toys": 30.0,
    "beauty": 25.0,
    "grocery": 12.0,
    "garden": 40.0,
}
"""Established categories and their median price before the shift."""
COUNTRIES: dict[str, str] = {
    "US": "-05:00",
    "GB": "+00:00",
    "DE": "+01:00",
    "FR": "+01:00",
    "ES": "+01:00",
    "IT": "+01:00",
    "NL": "+01:00",
    "PL": "+01:00",
    "SE": "+01:00",
    "BR": "-03:00",
}
"""Countries (most frequent first) and the UTC offset their ISO-8601 event times are written with."""
DEVICES = ("mobile", "desktop", "tablet")
PRICE_SIGMA = 0.5
ITEMS_PER_CATEGORY = 300
MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class HistoryEffects:
    """The real-world effects of the stream and their sizes; see the module docstring for what each does.

    Times ``shift_at`` and ``new_category_at`` are fractions of the span from ``start`` to ``end``.
    """

    base_rate: float = 0.12
    daily_rate_amplitude: float = 0.8
    peak_hour: float = 20.0
    weekend_rate: float = 1.3
    growth: float = 1.5
    daily_label_amplitude: float = 0.5
    weekend_label: float = 0.3
    shift_at: float = 0.45
    price_shift: float = 0.25
    price_effect: float = -0.4
    price_effect_after: float = -1.2
    device_effects: tuple[float, float, float] = (-0.5, 0.3, 0.0)
    device_effects_after: tuple[float, float, float] = (0.5, -0.2, -0.1)
    device_shares: tuple[float, float, float] = (0.55, 0.35, 0.10)
    device_shares_after: tuple[float, float, float] = (0.65, 0.27, 0.08)
    new_category: str = "gaming"
    new_category_at: float = 0.65
    new_category_share: float = 0.12
    new_category_ramp_days: float = 14.0
    new_category_effect: float = 1.0
    new_category_price: float = 60.0
    trend_popularity: float = 0.8
    trend_effect: float = 0.6
    late_share: float = 0.025
    late_min_s: float = 120.0
    late_max_s: float = 3 * 86_400.0
    promo_share: float = 0.3
    malformed_share: float = 0.001
    out_of_range_share: float = 0.001
    iso_share: float = 0.3

    def __post_init__(self) -> None:
        shares = {
            "base_rate": self.base_rate,
            "shift_at": self.shift_at,
            "new_category_at": self.new_category_at,
            "new_category_share": self.new_category_share,
            "late_share": self.late_share,
            "promo_share": self.promo_share,
            "iso_share": self.iso_share,
        }
        for name, value in shares.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"HistoryEffects.{name} must be in [0, 1], got {value}")
        if (
            self.malformed_share < 0
            or self.out_of_range_share < 0
            or (self.malformed_share + self.out_of_range_share > 1)
        ):
            raise ValueError("HistoryEffects: malformed_share and out_of_range_share must be >= 0, sum <= 1")
        if not 0 < self.late_min_s <= self.late_max_s:
            raise ValueError(
                f"HistoryEffects: need 0 < late_min_s <= late_max_s, got {self.late_min_s}, {self.late_max_s}"
            )


@dataclass
class HistoricalStream:
    """The whole stream, drawn at once: columns in event-time order, and the arrival order of the records.

    Parameters
    ----------
    n_events
        Records in the stream, bad ones included.
    seed
        Fixes everything: users, items, trends, times, labels, which events are late or bad.
    start, end
        The span of event times (timezone-aware; naive datetimes are taken as UTC).
    effects
        Sizes of the real-world effects.

    Attributes
    ----------
    times_ms, received_ms
        Event time and arrival time (epoch ms) of each event, in event-time order.
    order
        Event indices in arrival order: record ``k`` of :meth:`records` is event ``order[k]``.
    columns
        The clean value of every field per event (``discount`` is NaN where the record has null).
    label_mean
        P(purchased = 1) of each event under the hidden model.
    late
        Per event: it arrives after an event with a later event time (out of order).
    bad
        Per event: ``""`` for a valid record, else the dead-letter reason it must get.
    """

    n_events: int
    seed: int
    start: datetime = DEFAULT_START
    end: datetime = DEFAULT_END
    effects: HistoryEffects = field(default_factory=HistoryEffects)

    def __post_init__(self) -> None:
        if self.n_events < 0:
            raise ValueError(f"n_events must be >= 0, got {self.n_events}")
        self.start = _utc(self.start)
        self.end = _utc(self.end)
        if self.end <= self.start:
            raise ValueError(f"end ({self.end.isoformat()}) must be after start ({self.start.isoformat()})")
        self._draw()

    # -- known times ------------------------------------------------------------------------------------------
    @property
    def shift_time(self) -> datetime:
        """When the level shift (price rise and redesign) happens."""
        return self._at(self.effects.shift_at)

    @property
    def new_category_time(self) -> datetime:
        """When the new category first appears."""
        return self._at(self.effects.new_category_at)

    def _at(self, fraction: float) -> datetime:
        return self.start + (self.end - self.start) * fraction

    # -- drawing ----------------------------------------------------------------------------------------------
    def _draw(self) -> None:
        fx = self.effects
        n = self.n_events
        setup_seq, time_seq, event_seq, late_seq = np.random.SeedSequence(self.seed).spawn(4)
        setup = np.random.default_rng(setup_seq)
        start_ms = int(self.start.timestamp() * 1000)
        span_ms = int((self.end - self.start).total_seconds() * 1000)
        self._start_ms, self._span_ms = start_ms, span_ms

        names = list(CATEGORIES)
        k = len(names)
        pop_start = setup.normal(0.0, 0.5, k)
        pop_end = pop_start + setup.normal(0.0, fx.trend_popularity, k)
        effect_start = setup.normal(0.0, 0.5, k)
        effect_end = effect_start + setup.normal(0.0, fx.trend_effect, k)
        country_effects = setup.normal(0.0, 0.3, len(COUNTRIES))
        n_users = max(500, n // 15)
        user_effects = setup.normal(0.0, 0.5, n_users)
        user_weights = _zipf(n_users, 0.8)
        user_weights = user_weights[setup.permutation(n_users)]
        item_effects = setup.normal(0.0, 0.3, (k + 1, ITEMS_PER_CATEGORY))
        item_weights = _zipf(ITEMS_PER_CATEGORY, 1.0)

        times = self._event_times(np.random.default_rng(time_seq), start_ms, span_ms)
        frac = (times - start_ms) / span_ms
        hour = (times // 3_600_000) % 24 + (times % 3_600_000) / 3_600_000
        weekend = ((times // MS_PER_DAY) + 3) % 7 >= 5  # 1970-01-01 was a Thursday; Monday is 0
        shifted = frac >= fx.shift_at

        rng = np.random.default_rng(event_seq)
        u = rng.random((n, 8))
        z = rng.standard_normal((n, 3))

        # category: trending popularity, the new one ramping in after its start
        logits = pop_start[None, :] + frac[:, None] * (pop_end - pop_start)[None, :]
        weights = np.exp(logits)
        weights /= weights.sum(axis=1, keepdims=True)
        new_since_days = (times - int(self.new_category_time.timestamp() * 1000)) / MS_PER_DAY
        new_share = np.where(
            new_since_days >= 0,
            fx.new_category_share * np.clip(new_since_days / max(fx.new_category_ramp_days, 1e-9), 0, 1),
            0.0,
        )
        is_new = (u[:, 0] < new_share) & (new_since_days >= 0)
        cum = np.cumsum(weights, axis=1)
        cat = np.minimum((cum < u[:, 1:2]).sum(axis=1), k - 1)
        cat = np.where(is_new, k, cat)
        all_names = np.array([*names, fx.new_category], dtype=object)

        medians = np.array([*CATEGORIES.values(), fx.new_category_price])
        log_rel = z[:, 0] * PRICE_SIGMA
        price = np.exp(np.log(medians[cat]) + log_rel + np.where(shifted, fx.price_shift, 0.0))
        price = np.round(np.clip(price, 0.5, 9999.0), 2)
        rel_price = (np.log(price) - np.log(medians[cat])) / PRICE_SIGMA

        device_cum = np.where(
            shifted[:, None], np.cumsum(fx.device_shares_after), np.cumsum(fx.device_shares)
        )
        device = np.minimum((device_cum < u[:, 2:3]).sum(axis=1), 2)
        device_effect = np.where(
            shifted, np.asarray(fx.device_effects_after)[device], np.asarray(fx.device_effects)[device]
        )
        country = _pick(_zipf(len(COUNTRIES), 1.0), u[:, 3])
        user = _pick(user_weights, u[:, 4])
        item = _pick(item_weights, u[:, 5])
        dwell = np.round(np.clip(np.exp(math.log(30.0) + 0.8 * z[:, 1]), 0.1, 3600.0), 1)
        position = np.minimum(np.floor(rng.exponential(8.0, n)), 100).astype(np.int64)
        promo = u[:, 6] < fx.promo_share
        discount = np.where(promo, np.round(0.05 + 0.45 * rng.random(n), 2), np.nan)

        cat_effect = np.where(
            is_new,
            fx.new_category_effect,
            (effect_start + frac[:, None] * (effect_end - effect_start)[None, :])[
                np.arange(n), np.minimum(cat, k - 1)
            ],
        )
        season = fx.daily_label_amplitude * np.cos(2 * np.pi * (hour - fx.peak_hour) / 24) + np.where(
            weekend, fx.weekend_label, 0.0
        )
        signal = (
            season
            + cat_effect
            + device_effect
            + np.where(shifted, fx.price_effect_after, fx.price_effect) * rel_price
            + country_effects[country]
            + user_effects[user]
            + item_effects[cat, item]
            + 0.5 * (np.log(dwell) - math.log(30.0)) / 0.8
            - 0.05 * position
            + 2.0 * np.nan_to_num(discount)
        )
        label_mean = _sigmoid(signal + _intercept(signal, fx.base_rate))
        purchased = (u[:, 7] < label_mean).astype(np.int64)

        self.times_ms = times
        self.label_mean = label_mean
        self.columns: dict[str, np.ndarray] = {
            "user_id": np.array([f"u{i:06d}" for i in user.tolist()], dtype=object),
            "item_id": np.array(
                [f"{all_names[c]}-{i:03d}" for c, i in zip(cat.tolist(), item.tolist(), strict=True)],
                dtype=object,
            ),
            "category": all_names[cat],
            "country": np.array(list(COUNTRIES), dtype=object)[country],
            "device": np.array(DEVICES, dtype=object)[device],
            "price": price,
            "discount": discount,
            "dwell_time_s": dwell,
            "position": position,
            "purchased": purchased,
        }
        self._arrive(np.random.default_rng(late_seq))

    def _event_times(self, rng: np.random.Generator, start_ms: int, span_ms: int) -> np.ndarray:
        """``n`` sorted event times from the seasonal, growing rate: a minute is drawn with probability
        proportional to its rate, then a uniform instant inside it."""
        fx = self.effects
        minutes = max(1, span_ms // 60_000)
        t = start_ms + np.arange(minutes, dtype=np.int64) * 60_000
        hour = (t // 3_600_000) % 24 + (t % 3_600_000) / 3_600_000
        weekend = ((t // MS_PER_DAY) + 3) % 7 >= 5
        rate = (
            np.exp(fx.daily_rate_amplitude * np.cos(2 * np.pi * (hour - fx.peak_hour) / 24))
            * np.where(weekend, fx.weekend_rate, 1.0)
            * (1.0 + (fx.growth - 1.0) * np.arange(minutes) / minutes)
        )
        cdf = np.cumsum(rate)
        cdf /= cdf[-1]
        minute = np.minimum(np.searchsorted(cdf, rng.random(self.n_events), side="right"), minutes - 1)
        width = min(60_000, span_ms)
        times = t[minute] + np.floor(rng.random(self.n_events) * width).astype(np.int64)
        return np.sort(np.minimum(times, start_ms + span_ms - 1))

    def _arrive(self, rng: np.random.Generator) -> None:
        """Pick bad and delayed events, order by arrival, and mark the events that arrive out of order."""
        fx = self.effects
        n = self.n_events
        u = rng.random((n, 5))
        bad = np.full(n, "", dtype=object)
        bad[u[:, 0] < fx.malformed_share] = "malformed_json"
        bad[(u[:, 0] >= fx.malformed_share) & (u[:, 0] < fx.malformed_share + fx.out_of_range_share)] = (
            "out_of_range"
        )
        delayed = (u[:, 1] < fx.late_share) & (bad == "")
        log_min, log_max = math.log(fx.late_min_s * 1000), math.log(fx.late_max_s * 1000)
        delay = np.where(delayed, np.floor(np.exp(log_min + (log_max - log_min) * u[:, 2])), 0).astype(
            np.int64
        )
        received = self.times_ms + delay
        order = np.lexsort((np.arange(n), received))
        valid = order[bad[order] == ""]
        seen = np.maximum.accumulate(self.times_ms[valid]) if len(valid) else valid
        before = np.concatenate([[np.iinfo(np.int64).min], seen[:-1]]) if len(valid) else valid
        late = np.zeros(n, dtype=bool)
        late[valid] = self.times_ms[valid] < before
        self.received_ms = received
        self.order = order
        self.late = late
        self.bad = bad
        self._format_u = u[:, 3]
        self._bad_u = u[:, 4]

    # -- records ----------------------------------------------------------------------------------------------
    def records(self) -> Iterator[dict[str, Any] | bytes]:
        """The records in arrival order: a dict per JSON object, raw bytes for a record that is not JSON."""
        cols = {name: values.tolist() for name, values in self.columns.items()}
        times = self.times_ms.tolist()
        received = self.received_ms.tolist()
        fmt = self._format_u.tolist()
        bad_u = self._bad_u.tolist()
        iso_share = self.effects.iso_share
        for i in self.order.tolist():
            discount = cols["discount"][i]
            record: dict[str, Any] = {
                "event_id": f"ev{self.seed}-{i:08d}",
                "event_time": _time_value(times[i], fmt[i], iso_share, COUNTRIES[cols["country"][i]]),
                "received_at": received[i],
                "user_id": cols["user_id"][i],
                "item_id": cols["item_id"][i],
                "category": cols["category"][i],
                "country": cols["country"][i],
                "device": cols["device"][i],
                "price": cols["price"][i],
                "discount": None if discount != discount else discount,
                "dwell_time_s": cols["dwell_time_s"][i],
                "position": cols["position"][i],
                "purchased": cols["purchased"][i],
            }
            kind = self.bad[i]
            if kind == "malformed_json":
                text = _dumps(record)
                yield text[: 1 + int(bad_u[i] * (len(text) - 2))]
            elif kind == "out_of_range":
                if bad_u[i] < 0.5:
                    record["price"] = -record["price"]
                else:
                    record["position"] = 101 + int(bad_u[i] * 100)
                yield record
            else:
                yield record


def historical_events(
    n_events: int,
    *,
    seed: int,
    start: datetime = DEFAULT_START,
    end: datetime = DEFAULT_END,
    effects: HistoryEffects | None = None,
) -> Iterator[dict[str, Any] | bytes]:
    """The records of a :class:`HistoricalStream` in arrival order (see the module docstring).

    Returns dicts for JSON objects and raw bytes for the malformed records (JSON cut short), which
    :func:`write_jsonl` writes as they are.
    """
    return HistoricalStream(n_events, seed, start, end, effects or HistoryEffects()).records()


def write_jsonl(path: str | os.PathLike[str], events: Iterable[dict[str, Any] | bytes]) -> int:
    """Write ``events`` one a line (compact JSON; bytes as they are) to ``path``; returns the number written."""
    count = 0
    with Path(path).open("wb") as out:
        for event in events:
            line = event if isinstance(event, bytes) else _dumps(event)
            if b"\n" in line:
                raise ValueError(f"record {count} of {path} contains a newline; a JSONL record is one line")
            out.write(line + b"\n")
            count += 1
    return count


def _dumps(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


def _time_value(ms: int, u: float, iso_share: float, offset: str) -> int | str:
    """Epoch ms, or (for ``u < iso_share``) ISO-8601 with ``Z`` or, for the last third, the country's offset."""
    if u >= iso_share:
        return ms
    instant = datetime.fromtimestamp(ms / 1000, UTC)
    if u < iso_share * 2 / 3 or offset == "+00:00":
        return instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    sign = 1 if offset[0] == "+" else -1
    delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])) * sign
    return (instant + delta).replace(tzinfo=None).isoformat(timespec="milliseconds") + offset


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _zipf(n: int, exponent: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** exponent
    return w / w.sum()


def _pick(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(np.cumsum(weights), u, side="right"), len(weights) - 1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _intercept(signal: np.ndarray, rate: float) -> float:
    """The intercept that makes the mean of ``sigmoid(signal + b)`` equal ``rate`` (bisection)."""
    if len(signal) == 0 or rate in (0.0, 1.0):
        return 0.0
    low, high = -30.0, 30.0
    for _ in range(60):
        mid = (low + high) / 2
        if _sigmoid(signal + mid).mean() < rate:
            low = mid
        else:
            high = mid
    return (low + high) / 2
