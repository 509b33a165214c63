"""The local broker's lifecycle, on a real JVM: start, idempotent start, status, stop, and the errors a user
meets. Each test uses its own port and data folder, apart from the session broker."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rt_training.ops.kafka_local import (
    INSTALL_HINT,
    KAFKA_HOME_ENV_VAR,
    LIBS_ENV_VAR,
    LocalKafkaConfig,
    LocalKafkaError,
    broker_status,
    find_java,
    free_port,
    resolve_libs,
    start_broker,
    stop_broker,
)
from rt_training.stream.client import (
    BOOTSTRAP_ENV_VAR,
    KafkaSettings,
    KafkaUnreachableError,
    check_reachable,
    make_admin,
    make_consumer,
    make_producer,
)


@pytest.fixture
def local_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalKafkaConfig]:
    monkeypatch.delenv(BOOTSTRAP_ENV_VAR, raising=False)
    config = LocalKafkaConfig(data_dir=tmp_path / "kafka", port=free_port())
    yield config
    stop_broker(config)


@pytest.fixture(scope="module")
def stopped_broker_address(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The address of a broker that ran and was stopped: nothing listens there any more."""
    config = LocalKafkaConfig(data_dir=tmp_path_factory.mktemp("stopped-kafka"), port=free_port())
    with pytest.MonkeyPatch.context() as env:
        env.delenv(BOOTSTRAP_ENV_VAR, raising=False)
        start_broker(config)
        stop_broker(config)
    return config.bootstrap_servers


def _brokers_using(properties_file: str) -> list[int]:
    """Pids of live processes whose command line names this properties file."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kafka.Kafka" in args and properties_file.encode() in args:
            pids.append(int(proc.name))
    return pids


@pytest.mark.kafka
@pytest.mark.slow
def test_lifecycle_start_is_idempotent_and_stop_kills_only_its_broker(local_config: LocalKafkaConfig) -> None:
    started = start_broker(local_config)
    assert started.kind == "started"
    assert started.bootstrap_servers == f"127.0.0.1:{local_config.port}"
    assert started.state is not None and started.startup_s is not None
    pid = started.state.pid
    assert json.loads(local_config.state_file.read_text())["pid"] == pid

    again = start_broker(local_config)
    assert again.kind == "running"
    assert again.state is not None and again.state.pid == pid
    assert _brokers_using(started.state.properties_file) == [pid]

    status = broker_status(local_config)
    assert (status.kind, status.bootstrap_servers) == ("running", started.bootstrap_servers)
    admin = make_admin(status.settings())
    try:
        assert [b["broker_id"] for b in admin.describe_cluster()["brokers"]] == [1]
    finally:
        admin.close()

    stopped = stop_broker(local_config)
    assert stopped is not None and stopped.pid == pid
    assert _brokers_using(started.state.properties_file) == []
    assert not local_config.state_file.exists()
    assert broker_status(local_config).kind == "stopped"
    assert stop_broker(local_config) is None


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.parametrize(
    ("factory", "connect_timeout_s"),
    [(make_consumer, 10.0), (make_producer, 3.0), (make_admin, 3.0), (check_reachable, 3.0)],
    ids=["consumer-default-timeout", "producer", "admin", "check_reachable"],
)
def test_stopped_broker_is_reported_unreachable_within_15s(
    stopped_broker_address: str, factory, connect_timeout_s: float
) -> None:
    settings = KafkaSettings(bootstrap_servers=stopped_broker_address, connect_timeout_s=connect_timeout_s)
    t0 = time.monotonic()
    with pytest.raises(KafkaUnreachableError) as caught:
        factory(settings)
    elapsed = time.monotonic() - t0
    assert elapsed < 15
    assert stopped_broker_address in str(caught.value)
    assert caught.value.bootstrap_servers == stopped_broker_address


def test_external_cluster_starts_nothing(
    local_config: LocalKafkaConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BOOTSTRAP_ENV_VAR, "kafka-a:9092,kafka-b:9092")
    result = start_broker(local_config)
    assert (result.kind, result.bootstrap_servers, result.state) == (
        "external",
        "kafka-a:9092,kafka-b:9092",
        None,
    )
    assert not local_config.data_dir.exists()
    assert broker_status(local_config).kind == "external"


@pytest.mark.kafka
def test_port_taken_by_another_process_is_a_clear_error(local_config: LocalKafkaConfig) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", local_config.port))
        squatter.listen()
        with pytest.raises(
            LocalKafkaError, match=rf"port {local_config.port} on 127\.0\.0\.1 is already in use"
        ):
            start_broker(local_config)
    assert not local_config.state_file.exists()


@pytest.mark.kafka
def test_broker_that_dies_at_startup_reports_its_log_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(BOOTSTRAP_ENV_VAR, raising=False)
    config = LocalKafkaConfig(data_dir=tmp_path / "kafka", port=free_port(), heap="1m")
    with pytest.raises(LocalKafkaError) as caught:
        start_broker(config)
    message = str(caught.value)
    assert "exited during startup" in message
    assert str(config.log_file) in message
    assert "Error occurred during initialization of VM" in message
    assert not config.state_file.exists()


def test_stale_state_file_never_signals_a_reused_pid(local_config: LocalKafkaConfig) -> None:
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        local_config.data_dir.mkdir(parents=True)
        local_config.state_file.write_text(
            json.dumps(
                {
                    "pid": bystander.pid,
                    "port": local_config.port,
                    "controller_port": 1,
                    "host": "127.0.0.1",
                    "data_dir": str(local_config.data_dir),
                    "log_file": str(local_config.log_file),
                    "properties_file": str(local_config.data_dir / "server.properties"),
                    "libs_dir": "/nonexistent",
                    "started_at": 0.0,
                }
            )
        )
        assert broker_status(local_config).kind == "stopped"
        assert stop_broker(local_config) is None
        assert bystander.poll() is None
        assert not local_config.state_file.exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_missing_java_names_the_package_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(LocalKafkaError, match="needs Java 17 or newer") as caught:
        find_java()
    assert INSTALL_HINT in str(caught.value)


def test_missing_maven_names_the_package_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(KAFKA_HOME_ENV_VAR, raising=False)
    monkeypatch.setenv(LIBS_ENV_VAR, str(tmp_path / "libs"))
    with pytest.raises(LocalKafkaError, match=r"Maven \(mvn\) is needed") as caught:
        resolve_libs()
    assert INSTALL_HINT in str(caught.value)


def test_kafka_home_libs_are_used_instead_of_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs" / "kafka_2.13-4.4.0.jar").touch()
    monkeypatch.setenv(KAFKA_HOME_ENV_VAR, str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn: it must not be needed
    assert resolve_libs() == tmp_path / "libs"
    (tmp_path / "libs" / "kafka_2.13-4.4.0.jar").unlink()
    with pytest.raises(LocalKafkaError, match=rf"{KAFKA_HOME_ENV_VAR}=.* has no Kafka jars"):
        resolve_libs()
