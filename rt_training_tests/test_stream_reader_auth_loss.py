"""Credentials revoked between runs or mid-read are reported within seconds as a refused login, on a dedicated
real broker with a SASL_PLAINTEXT (SCRAM) listener.

Kafka keeps an authenticated SCRAM session working after its credentials are deleted, so a read is only cut off
when its session ends: the broker here grants sessions of ``connections.max.reauth.ms`` (KIP-368) and closes a
connection that has not re-authenticated by then. kafka-python 3 re-authenticates when a session nears its end;
refused, the connection is closed and the client reconnects (refused again) for ever without raising, so it is
the reader's probe, once the read has not moved for a few seconds, that reports the refusal.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from rt_training.ops.kafka_local import (
    SCRAM_MECHANISMS,
    BrokerStatus,
    LocalKafkaConfig,
    free_port,
    start_broker,
    stop_broker,
)
from rt_training.stream import reader
from rt_training.stream.admin import create_topic
from rt_training.stream.client import (
    BOOTSTRAP_ENV_VAR,
    KafkaAuthenticationError,
    KafkaSettings,
    make_admin,
    make_producer,
)
from rt_training.stream.planner import OffsetRange
from rt_training.stream.reader import read_range

DETECT_WITHIN_S = 15.0
RECORDS = 200
BATCH = 20
"""Records per producer flush, so per record batch: a fetch of one byte brings one batch, and the read needs
more fetches (on the network) to go on."""
FIRST = 100
"""The first read (or micro-batch) takes offsets ``[0, FIRST)``, the one after the revocation the rest."""
REAUTH_MS = 3000
"""The broker's ``connections.max.reauth.ms``: a SASL session lasts at most this long without re-authenticating."""
USER = "alice"
TOPIC = "auth-loss"


@dataclass(frozen=True)
class AuthBroker:
    config: LocalKafkaConfig
    status: BrokerStatus

    @property
    def plaintext(self) -> KafkaSettings:
        return self.status.settings()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthBroker]:
    """A broker of this module (its users' credentials are revoked) whose SASL sessions last ``REAUTH_MS``, with
    ``RECORDS`` records in partition 0 of a new topic, in batches of ``BATCH``."""
    config = LocalKafkaConfig(
        data_dir=tmp_path_factory.mktemp("auth-loss-kafka"),
        port=free_port(),
        sasl_users={USER: secrets.token_urlsafe(18)},
        extra_properties={"connections.max.reauth.ms": str(REAUTH_MS)},
    )
    with pytest.MonkeyPatch.context() as env:
        env.delenv(BOOTSTRAP_ENV_VAR, raising=False)
        status = start_broker(config)
    try:
        settings = status.settings()
        create_topic(settings, TOPIC, 1)
        producer = make_producer(settings)
        for i in range(RECORDS):
            producer.send(TOPIC, value=f"v{i}".encode(), partition=0)
            if (i + 1) % BATCH == 0:
                producer.flush()
        producer.close()
        yield AuthBroker(config, status)
    finally:
        stop_broker(config)


@pytest.fixture
def password(broker: AuthBroker, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh password of ``USER`` (both SCRAM mechanisms), which also restores the credentials an earlier test
    revoked: starting the running broker again only sets its users' credentials and waits until they log in."""
    monkeypatch.delenv(BOOTSTRAP_ENV_VAR, raising=False)
    fresh = secrets.token_urlsafe(18)
    start_broker(replace(broker.config, sasl_users={USER: fresh}))
    return fresh


def _revoke(broker: AuthBroker, user: str) -> float:
    """Delete ``user``'s SCRAM credentials of both mechanisms over the PLAINTEXT listener and wait until the
    broker no longer lists them; returns the monotonic time the deletion was accepted."""
    from kafka.admin import UserScramCredentialDeletion

    admin = make_admin(broker.plaintext)
    try:
        for mechanism in SCRAM_MECHANISMS:  # the broker takes one alteration per user and request
            assert admin.alter_user_scram_credentials([UserScramCredentialDeletion(user, mechanism)]) == {
                user: None
            }
        revoked = time.monotonic()
        deadline = revoked + 5.0
        while admin.describe_user_scram_credentials([user])[user]["credential_infos"]:
            assert time.monotonic() < deadline, (
                f"the broker still lists {user}'s credentials 5 s after deletion"
            )
            time.sleep(0.05)
    finally:
        admin.close()
    return revoked


def _assert_refused(err: KafkaAuthenticationError, settings: KafkaSettings, password: str) -> None:
    """The message of the probe's refusal: where, who, why, what to do; never the password."""
    assert str(err) == (
        f"Kafka authentication failed at {settings.bootstrap_servers}: user {USER!r} with SASL mechanism "
        f"{settings.sasl_mechanism}: Authentication failed during authentication due to invalid credentials with "
        f"SASL mechanism {settings.sasl_mechanism}. Check the user name, password and mechanism your cluster's "
        "operator gave you."
    )
    assert (err.username, err.mechanism) == (USER, settings.sasl_mechanism)
    assert password not in str(err)


@pytest.mark.parametrize("mechanism", SCRAM_MECHANISMS)
def test_credentials_revoked_between_reads_fail_the_next_read_at_once(
    broker: AuthBroker, password: str, mechanism: str
) -> None:
    """A read succeeds; the user's credentials are deleted; the next read is refused before it reads anything."""
    settings = broker.status.sasl_settings(USER, password, mechanism)
    assert read_range(settings, TOPIC, 0, 0, FIRST).records == FIRST
    revoked = _revoke(broker, USER)
    with pytest.raises(KafkaAuthenticationError) as err:
        read_range(settings, TOPIC, 0, FIRST, RECORDS)
    waited = time.monotonic() - revoked
    print(f"\n{mechanism} revoked between reads -> {type(err.value).__name__} after {waited:.2f}s")
    assert waited < DETECT_WITHIN_S
    _assert_refused(err.value, settings, password)


def test_micro_batch_after_revocation_fails_within_15s_and_commits_nothing(
    broker: AuthBroker, password: str, tmp_path: Path
) -> None:
    """The micro-batch the ingest job runs: the first batch lands, the user is revoked, the second batch raises
    the refusal and every table still stands at the first batch's end."""
    from rt_training.ingest.batch import OFFSET_TABLES, LakeLocation, run_micro_batch, table_offsets
    from rt_training_tests.ingest_support import spec_for

    settings = broker.status.sasl_settings(USER, password)
    spec = spec_for(TOPIC, partitions=1)
    lake = LakeLocation(str(tmp_path / "lake"))
    first, second = OffsetRange(TOPIC, 0, 0, FIRST), OffsetRange(TOPIC, 0, FIRST, RECORDS)
    assert run_micro_batch(settings, spec, lake, [first], "before-revocation").records == FIRST
    revoked = _revoke(broker, USER)
    with pytest.raises(KafkaAuthenticationError) as err:
        run_micro_batch(settings, spec, lake, [second], "after-revocation")
    waited = time.monotonic() - revoked
    print(f"\nmicro-batch after revocation -> {type(err.value).__name__} after {waited:.2f}s")
    assert waited < DETECT_WITHIN_S
    _assert_refused(err.value, settings, password)
    assert table_offsets(spec, lake, [second]) == {table: {(TOPIC, 0): FIRST} for table in OFFSET_TABLES}


def _hold_after_first_records(
    monkeypatch: pytest.MonkeyPatch, before_hold: Callable[[], None]
) -> dict[str, float]:
    """Once the reader's first poll has returned records, call ``before_hold`` and keep the reader from polling
    (as a slow consumer would) until its SASL session, authenticated before, has outlived ``REAUTH_MS``.

    The returned dict receives ``records`` (how many the first poll returned) and ``resumed`` (the monotonic
    time the hold ended).
    """
    real_make_consumer = reader.make_consumer
    marks: dict[str, float] = {}

    def consumer_held_after_first_records(*args, **kwargs):
        consumer = real_make_consumer(*args, **kwargs)
        real_poll = consumer.poll

        def poll_then_hold(*poll_args, **poll_kwargs):
            batches = real_poll(*poll_args, **poll_kwargs)
            polled = sum(len(records) for records in batches.values())
            if polled and "records" not in marks:
                marks["records"] = polled
                before_hold()
                time.sleep(REAUTH_MS / 1000 + 0.5)
                marks["resumed"] = time.monotonic()
            return batches

        consumer.poll = poll_then_hold
        return consumer

    monkeypatch.setattr(reader, "make_consumer", consumer_held_after_first_records)
    return marks


# Fetches of at most one byte bring one record batch each (``BATCH`` records): after the hold the read must fetch
# again, through a session that has ended (with one batch of all the records the read would end from memory).
_SMALL_FETCHES = {"max_partition_fetch_bytes": 1}


@pytest.mark.parametrize("mechanism", SCRAM_MECHANISMS)
def test_credentials_revoked_mid_read_are_reported_within_15s_of_the_session_end(
    broker: AuthBroker,
    password: str,
    mechanism: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The user's credentials are deleted once the reader has its first records, and the reader is held until
    its session has ended. Re-authentication is refused and the broker drops the connection, the client's
    reconnections are refused too, and the read fails with the refusal a few seconds later instead of stalling.

    The time that counts is from the session's end, when the read resumes on a session that must
    re-authenticate: before it the broker keeps serving the revoked user (Kafka checks credentials at login
    only), which no client can detect; from revocation it adds at most ``REAUTH_MS``.
    """
    settings = broker.status.sasl_settings(USER, password, mechanism)
    revoked: list[float] = []
    marks = _hold_after_first_records(monkeypatch, lambda: revoked.append(_revoke(broker, USER)))
    with pytest.raises(KafkaAuthenticationError) as err:
        read_range(settings, TOPIC, 0, 0, RECORDS, consumer_options=_SMALL_FETCHES)
    now = time.monotonic()
    since_revoked, since_resumed = now - revoked[0], now - marks["resumed"]
    print(
        f"\n{mechanism} revoked mid-read (after {marks['records']:.0f} of {RECORDS} records) -> "
        f"{type(err.value).__name__} {since_resumed:.2f}s after the read resumed past the session's end "
        f"({REAUTH_MS} ms), {since_revoked:.2f}s after revocation"
    )
    assert 0 < marks["records"] < RECORDS
    assert since_resumed < DETECT_WITHIN_S
    assert since_revoked < DETECT_WITHIN_S
    _assert_refused(err.value, settings, password)
    lost = [
        r.getMessage()
        for r in caplog.records
        if r.name == "kafka.net.connection" and "Connection lost" in r.getMessage()
    ]
    assert any("SaslAuthenticationFailedError" in m for m in lost), "no reconnection was refused"


def test_session_outliving_its_lifetime_reauthenticates_and_the_read_completes(
    broker: AuthBroker, password: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The control of the test above: held the same way without a revocation, kafka-python re-authenticates
    (KIP-368) on its connection and the read completes, so the refusal above is the revocation's doing."""
    caplog.set_level(logging.DEBUG, logger="kafka.net.connection")
    settings = broker.status.sasl_settings(USER, password)
    marks = _hold_after_first_records(monkeypatch, lambda: None)
    result = read_range(settings, TOPIC, 0, 0, RECORDS, consumer_options=_SMALL_FETCHES)
    assert 0 < marks["records"] < RECORDS
    assert result.records == RECORDS
    assert result.table.column("value").to_pylist() == [f"v{i}".encode() for i in range(RECORDS)]
    messages = [r.getMessage() for r in caplog.records if r.name == "kafka.net.connection"]
    assert any(m.endswith("Beginning SASL re-authentication") for m in messages)
    assert not any("SASL re-authentication failed" in m for m in messages)
