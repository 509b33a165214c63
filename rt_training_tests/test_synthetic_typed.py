"""The synthetic stream on the new field types: the bundled news spec (a language model on headlines whose topics
trend) and a spec with lists, a vector, int/bool/learned categoricals, a numeric feature without mean/std and a
multiclass label. Deterministic and cut-invariant, of the schema's shape, clean through the real cleaning path,
topic shares that trend, and new words after the drift point.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from rt_training.clean import BRONZE_SCHEMA
from rt_training.clean.pipeline import clean_batch
from rt_training.cli.main import cli
from rt_training.spec import PipelineSpec, SpecError, bundled_specs, load_spec, parse_spec, resolve_spec_path
from rt_training.stream.synthetic import EventGenerator, SimulatedClock
from rt_training.stream.synthetic_text import FUNCTION_WORDS, MAX_WORDS, VERBS

TYPED_SPEC = {
    "name": "typed",
    "source": {"topic": "typed"},
    "schema": {
        "id_field": "order_id",
        "time_field": "at",
        "max_record_bytes": 2048,
        "fields": {
            "order_id": {"type": "int"},
            "at": {"type": "timestamp"},
            "channel": {"type": "string"},
            "note": {"type": "text", "max_length": 60},
            "viewed": {"type": "list", "items": "string", "max_length": 6},
            "ratings": {"type": "list", "items": "float", "min": 0.0, "max": 5.0, "max_length": 4},
            "codes": {"type": "list", "items": "int", "min": 100, "max": 999},
            "embedding": {"type": "vector", "dim": 4, "min": -1.0, "max": 1.0},
            "tier": {"type": "int", "min": 1, "max": 5},
            "member": {"type": "bool"},
            "region": {"type": "string", "max_length": 12},
            "amount": {"type": "float", "min": 0.0, "max": 500.0},
            "outcome": {"type": "string", "allowed": ["kept", "returned", "exchanged"]},
        },
    },
    "features": {
        "numeric": [{"name": "amount", "transform": "log1p"}],
        "categorical": [{"name": "tier"}, {"name": "member"}, {"name": "region"}],
        "text": [{"name": "note", "tokenizer": {"kind": "byte"}, "max_length": 64}],
        "sequence": [{"name": "viewed"}, {"name": "ratings"}, {"name": "codes", "hash_buckets": 16}],
        "vector": [{"name": "embedding"}],
    },
    "label": {"field": "outcome", "kind": "multiclass"},
    "model": {"builtin": "mlp"},
    "sampling": {"mixture": {"by": "channel", "trending": True, "trend_window": 60, "reference_window": 300}},
}


@pytest.fixture(scope="module")
def news() -> PipelineSpec:
    return load_spec("news")


@pytest.fixture(scope="module")
def typed() -> PipelineSpec:
    return parse_spec(TYPED_SPEC)


def bronze(values: list[bytes], topic: str) -> pa.Table:
    n = len(values)
    now = datetime(2024, 1, 1, tzinfo=UTC)
    return pa.Table.from_pydict(
        {
            "topic": [topic] * n,
            "partition": [0] * n,
            "offset": list(range(n)),
            "timestamp": [now] * n,
            "key": [b"k"] * n,
            "value": values,
            "ingested_at": [now] * n,
            "run_id": ["run-1"] * n,
        },
        schema=BRONZE_SCHEMA,
    )


def shape_problems(record: dict, spec: PipelineSpec) -> list[str]:
    """Every way a record departs from its schema's JSON shape (types, bounds, lengths, dims)."""
    problems = []
    for name, f in spec.schema_.fields.items():
        if name not in record:
            if f.required:
                problems.append(f"{name}: missing")
            continue
        v = record[name]
        if f.type in ("string", "text"):
            ok = isinstance(v, str) and (f.max_length is None or len(v) <= f.max_length)
            ok = ok and (f.allowed is None or v in f.allowed)
        elif f.type in ("int", "timestamp"):
            ok = isinstance(v, int) and not isinstance(v, bool)
            ok = ok and (f.min is None or v >= f.min) and (f.max is None or v <= f.max)
        elif f.type == "float":
            ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            ok = ok and (f.min is None or v >= f.min) and (f.max is None or v <= f.max)
        elif f.type == "bool":
            ok = isinstance(v, bool)
        else:
            is_list = isinstance(v, list)
            item = "float" if f.type == "vector" else f.items
            size_ok = (len(v) == f.dim) if f.type == "vector" else (1 <= len(v) <= (f.max_length or 8))
            kinds = {"string": str, "int": int, "float": int | float}
            ok = (
                is_list and size_ok and all(isinstance(x, kinds[item]) and not isinstance(x, bool) for x in v)
            )
            if ok and item != "string":
                ok = all((f.min is None or x >= f.min) and (f.max is None or x <= f.max) for x in v)
        if not ok:
            problems.append(f"{name}: {v!r}")
    return problems


# -- determinism ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["news", "typed"])
def test_same_seed_same_bytes_however_the_stream_is_cut(which, news, typed):
    spec = news if which == "news" else typed
    make = lambda: EventGenerator(spec, seed=4, drift_at=3.0, bad_ratio=0.05)  # noqa: E731
    whole = make().generate(9000)
    again = make().generate(9000)
    assert (whole.values, whole.keys, whole.kinds) == (again.values, again.keys, again.kinds)
    gen = make()
    pieces = [gen.generate(k) for k in (1, 4095, 0, 7, 4897)]
    assert [v for p in pieces for v in p.values] == whole.values
    assert [k for p in pieces for k in p.kinds] == whole.kinds
    other = EventGenerator(spec, seed=5, drift_at=3.0, bad_ratio=0.05).generate(9000)
    good = lambda b: {v for v, k in zip(b.values, b.kinds, strict=True) if k is None}  # noqa: E731
    assert not good(whole) & good(other)


# -- shape and cleaning -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["news", "typed"])
def test_good_events_have_the_schema_shape(which, news, typed):
    spec = news if which == "news" else typed
    batch = EventGenerator(spec, seed=7, drift_at=2.0).generate(4000)
    assert batch.kinds == [None] * 4000
    rows = [json.loads(v) for v in batch.values]
    assert [p for r in rows for p in shape_problems(r, spec)] == []


@pytest.mark.parametrize("which", ["news", "typed"])
def test_good_events_pass_cleaning_with_no_dead_letters(which, news, typed):
    """The real cleaning path (needs cleaning of text/list/vector fields, from the dm-clean branch)."""
    spec = news if which == "news" else typed
    batch = EventGenerator(spec, seed=8, drift_at=2.0).generate(3000)
    result = clean_batch(bronze(batch.values, spec.source.topic), spec)
    assert result.dead_letters.num_rows == 0, result.dead_letters.column("reason").to_pylist()[:5]
    assert result.silver.num_rows == 3000


@pytest.mark.parametrize("which", ["news", "typed"])
def test_bad_records_are_dead_lettered_with_their_kind(which, news, typed):
    """Each bad record lands in dead letters with the reason it was made for; every other one is silver."""
    spec = news if which == "news" else typed
    batch = EventGenerator(spec, seed=3, bad_ratio=0.3).generate(3000)
    result = clean_batch(bronze(batch.values, spec.source.topic), spec)
    letters = result.dead_letters.to_pydict()
    reasons = dict(zip(letters["offset"], letters["reason"], strict=True))
    assert [reasons.get(i) for i in range(3000)] == batch.kinds
    assert len(set(batch.kinds) - {None}) >= 6


# -- the typed spec -------------------------------------------------------------------------------------------------


def test_typed_fields_follow_the_documented_distributions(typed):
    gen = EventGenerator(typed, seed=9, drift_at=20.0)
    batch = gen.generate(40_000)
    pre, post = ~batch.drifted, batch.drifted
    rows = [json.loads(v) for v in batch.values]
    # A log1p feature without mean/std: log1p(amount) ~ N(log1p(500) / 2, log1p(500) / 6), clipped to [0, 500],
    # before the drift point (the only numeric feature is the drifting half).
    assert gen.drifting["amount"] in (-1.0, 1.0)
    lp = np.log1p(batch.columns["amount"][pre].astype(float))
    assert abs(lp.mean() - math.log1p(500) / 2) < 0.02 and abs(lp.std() - math.log1p(500) / 6) < 0.02
    # Int and bool categoricals: all five tiers inside the bounds, both booleans, Zipf-like (first most frequent).
    tiers = np.array([r["tier"] for r in rows])
    assert set(tiers.tolist()) == {1, 2, 3, 4, 5}
    assert {r["member"] for r in rows} == {False, True}
    # A learned string vocabulary: 50 values before the drift point, new ones after it.
    region = batch.columns["region"]
    before = set(region[pre].tolist())
    assert len(before) == 50
    if "region" in gen.drifting:
        assert set(region[post].tolist()) - before
    # Lists: lengths 1..max_length, all of them used.
    assert {len(r["viewed"]) for r in rows} == set(range(1, 7))
    assert {len(r["ratings"]) for r in rows} == set(range(1, 5))
    assert {len(r["codes"]) for r in rows} == set(range(1, 9))
    # Multiclass: three classes, each frequent, driven by the hidden model (its most likely class is right far
    # more often than a third of the time).
    probs = batch.label_mean
    assert probs.shape == (40_000, 3) and np.allclose(probs.sum(axis=1), 1.0)
    label = np.array([["kept", "returned", "exchanged"].index(r["outcome"]) for r in rows])
    shares = np.bincount(label, minlength=3) / len(label)
    assert shares.min() > 0.1, shares
    hit = (probs.argmax(axis=1) == label).mean()
    assert hit > 0.5, hit


def test_drift_moves_the_chosen_lists_and_vectors(typed):
    gen = EventGenerator(typed, seed=10, drift_at=10.0, drift_strength=1.0)
    batch = gen.generate(30_000)
    pre, post = ~batch.drifted, batch.drifted
    shaped = {"viewed", "ratings", "codes", "embedding"}
    moving = shaped & set(gen.drifting)
    assert len(moving) == 2  # half of the four, a seeded choice
    emb = np.array([np.array(v) for v in batch.columns["embedding"]])
    move = np.abs(emb[post].mean(axis=0) - emb[pre].mean(axis=0)).mean()
    spread = 2.0 / 6  # (max - min) / 6
    if "embedding" in moving:
        assert move > 0.5 * spread, move  # one spread per coordinate, dampened by clipping at +-1
    else:
        assert move < 0.05 * spread, move


# -- the news spec ----------------------------------------------------------------------------------------------


def test_news_language_model_label_is_the_headline(news):
    batch = EventGenerator(news, seed=11).generate(2000)
    rows = [json.loads(v) for v in batch.values]
    assert np.isnan(batch.label_mean).all()
    words = [len(r["headline"].split()) for r in rows]
    assert min(words) >= 1 and max(words) <= MAX_WORDS
    assert all(r["headline"][0].isupper() for r in rows)  # a name opens every headline
    assert all(r["headline"].split()[1] in VERBS for r in rows if len(r["headline"].split()) > 1)


def test_topic_shares_trend_over_minutes(news):
    """Seed 0 at 20 events/s over an hour: in some 2-minute window a topic takes more than 3x its share of the
    10 minutes before (measured: 5.5x, 'world' in the window ending at 840 s), and the shares in each window
    follow the generator's documented share curve."""
    gen = EventGenerator(news, seed=0, clock=SimulatedClock(rate=20))
    batch = gen.generate(72_000)
    topics = batch.columns["topic"]
    t = (batch.times_ms - batch.times_ms[0]) / 1000.0
    trend, reference = news.sampling.mixture.trend_window, news.sampling.mixture.reference_window
    assert (trend, reference) == (120.0, 600.0)
    expected = gen.group_shares(t)
    best = 0.0
    for end in np.arange(reference + trend, 3600.0 + 1, trend):
        last = (t >= end - trend) & (t < end)
        ref = (t >= end - trend - reference) & (t < end - trend)
        for g, name in enumerate(gen.groups):
            share = (topics[last] == name).mean()
            assert abs(share - expected[last, g].mean()) < 0.03  # binomial sd at 2,400 events: <= 0.01
            best = max(best, share / max((topics[ref] == name).mean(), 1e-9))
    assert best > 3.0, best


def test_new_words_appear_after_the_drift_point(news):
    gen = EventGenerator(news, seed=12, drift_at=300.0, clock=SimulatedClock(rate=50))
    batch = gen.generate(30_000)  # 600 s: the drift point halfway
    pre, post = ~batch.drifted, batch.drifted
    headlines, topics = batch.columns["headline"], batch.columns["topic"]
    vocab = lambda rows: {w for h in headlines[rows] for w in h.split()}  # noqa: E731
    before, after = vocab(pre), vocab(post)
    new_words = gen.new_words("headline")
    drifting = [g for g, words in new_words.items() if words]
    assert len(drifting) == 4  # ceil(8 / 2) topics take new words
    all_new = {w for words in new_words.values() for w in words}
    assert not before & all_new  # absent before the drift point
    assert after - before == all_new  # every new word appears after it, and nothing else is new
    for g in new_words:
        rows = post & (topics == g)
        has_new = np.mean([bool(set(h.split()) & all_new) for h in headlines[rows]])
        assert has_new > 0.5 if g in drifting else has_new == 0.0, (g, has_new)
    assert before >= set(VERBS) and before >= set(FUNCTION_WORDS)


# -- --spec news ------------------------------------------------------------------------------------------------


def test_bundled_spec_names_resolve(tmp_path, monkeypatch):
    assert {"clickstream", "news"} <= set(bundled_specs())
    assert resolve_spec_path("news").name == "news.yaml"
    assert load_spec("news").name == "news"
    assert load_spec(str(resolve_spec_path("news"))).fingerprint() == load_spec("news").fingerprint()
    monkeypatch.setenv("RT_TRAINING_SPEC", "news")
    assert load_spec().name == "news"
    with pytest.raises(SpecError, match=r"not a bundled spec name \(bundled: .*clickstream.*news"):
        load_spec("newz")
    # A file of that name in the working directory wins over the bundled spec.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "news").write_text(resolve_spec_path("clickstream").read_text())
    assert load_spec("news").name == "clickstream"


def test_cli_takes_a_bundled_spec_name():
    runner = CliRunner()
    ok = runner.invoke(cli, ["spec", "validate", "news"])
    assert ok.exit_code == 0 and "spec 'news' is valid" in ok.output and "language_model" in ok.output
    bad = runner.invoke(cli, ["produce", "--spec", "newz", "--count", "1"])
    assert bad.exit_code != 0 and "bundled: clickstream, news" in bad.output
