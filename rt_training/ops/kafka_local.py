"""A single-node Apache Kafka (KRaft, combined broker and controller) for development, demos and tests.

The broker's jars come from Maven Central through ``infra/kafka/pom.xml`` into ``.cache/kafka/libs`` (once),
or from an installed Kafka named by ``KAFKA_HOME``. Its files live in one data folder::

    <data dir>/server.properties   generated configuration
    <data dir>/kraft/              the broker's log directory (formatted once, kept across restarts)
    <data dir>/broker.log          the JVM's output
    <data dir>/state.json          pid, ports and paths of the running broker
    <data dir>/tls/                CA, broker key and certificates of the SSL listener (made once with openssl)

Besides its PLAINTEXT listener the broker can open a SASL_PLAINTEXT listener (SCRAM-SHA-512 and SCRAM-SHA-256:
the users' credentials are created through the admin API once it runs, so no password is written to a file or
a command line; and OAUTHBEARER with Kafka's unsecured-JWT validator, which accepts any unsigned token whose
``sub`` and ``exp`` claims are valid: a development stand-in for a real identity provider) and an SSL listener whose certificates come from a private CA (``tls/ca.pem``, which clients
trust). The controller and inter-broker traffic stay on PLAINTEXT listeners bound to the broker's host.

``stop`` signals only the pid recorded in ``state.json``, and only while that pid is still a Kafka process
started with this folder's configuration. When ``KAFKA_BOOTSTRAP_SERVERS`` is set the external cluster is
used and nothing is started.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from rt_training.ops.processes import process_alive, process_args
from rt_training.ops.tls import CertificateError, make_certificate_authority, make_server_certificate
from rt_training.stream.client import (
    BOOTSTRAP_ENV_VAR,
    KafkaConnectionProblem,
    KafkaSettings,
    check_reachable,
    make_admin,
)

KAFKA_HOME_ENV_VAR = "KAFKA_HOME"
LIBS_ENV_VAR = "RT_TRAINING_KAFKA_LIBS"
DEFAULT_PORT = 9092
DEFAULT_HOST = "127.0.0.1"
DEFAULT_HEAP = "512m"
MIN_JAVA = 17
INSTALL_HINT = "apt-get install openjdk-17-jre-headless maven"

_REPO_ROOT = Path(__file__).resolve().parents[2]
_INFRA_DIR = _REPO_ROOT / "infra" / "kafka"
_RESOLVED_MARKER = ".resolved"
_STATE_FILE = "state.json"
_LOG_FILE = "broker.log"
_PROPERTIES_FILE = "server.properties"
_KRAFT_DIR = "kraft"
_MAIN_CLASS = "kafka.Kafka"
_STORAGE_TOOL_CLASS = "kafka.tools.StorageTool"
_TLS_DIR = "tls"
SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
OAUTHBEARER = "OAUTHBEARER"
LOCAL_SASL_MECHANISMS = (*SCRAM_MECHANISMS, OAUTHBEARER)


class LocalKafkaError(RuntimeError):
    """The local broker could not be prepared, started or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class LocalKafkaConfig:
    """Where and how to run the local broker.

    ``data_dir`` defaults to ``.data/kafka`` under the current directory, like the lake root, so each
    checkout or test session keeps its own broker. ``sasl_users`` (name to password) opens a SASL_PLAINTEXT
    listener with SCRAM credentials for them; ``ssl`` opens an SSL listener with certificates in
    ``<data_dir>/tls``. Their ports are free ones picked at start unless ``sasl_port``/``ssl_port`` name them.
    ``extra_properties`` are added to (and override) the generated ``server.properties``, for tests that need
    a broker setting the defaults leave out (e.g. ``connections.max.reauth.ms``); the CLI sets none.
    """

    data_dir: Path = field(default_factory=lambda: Path.cwd() / ".data" / "kafka")
    port: int = DEFAULT_PORT
    host: str = DEFAULT_HOST
    heap: str = DEFAULT_HEAP
    start_timeout_s: float = 90.0
    stop_timeout_s: float = 20.0
    sasl_users: Mapping[str, str] = field(default_factory=dict, repr=False)
    sasl_port: int | None = None
    ssl: bool = False
    ssl_port: int | None = None
    extra_properties: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Absolute, so the pid check matches the broker's command line whatever the caller's directory.
        object.__setattr__(self, "data_dir", Path(self.data_dir).absolute())
        object.__setattr__(self, "sasl_users", dict(self.sasl_users))
        object.__setattr__(self, "extra_properties", dict(self.extra_properties))
        for name in self.sasl_users:
            if not name or any(c in name for c in '=,"') or not self.sasl_users[name]:
                raise LocalKafkaError(
                    f"SASL user {name!r}: a user needs a non-empty name without '=', ',' or '\"' and a "
                    f"non-empty password."
                )

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / _TLS_DIR

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def state_file(self) -> Path:
        return self.data_dir / _STATE_FILE

    @property
    def log_file(self) -> Path:
        return self.data_dir / _LOG_FILE


@dataclass(frozen=True)
class BrokerState:
    """What ``start`` recorded about the broker it launched (the content of ``state.json``)."""

    pid: int
    port: int
    controller_port: int
    host: str
    data_dir: str
    log_file: str
    properties_file: str
    libs_dir: str
    started_at: float
    sasl_port: int | None = None
    sasl_mechanisms: tuple[str, ...] = ()
    sasl_usernames: tuple[str, ...] = ()
    ssl_port: int | None = None
    ssl_cafile: str | None = None

    def __post_init__(self) -> None:
        # JSON gives lists back; keep the state hashable and equal to what was written.
        object.__setattr__(self, "sasl_mechanisms", tuple(self.sasl_mechanisms))
        object.__setattr__(self, "sasl_usernames", tuple(self.sasl_usernames))

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def sasl_bootstrap_servers(self) -> str | None:
        """Address of the SASL_PLAINTEXT listener, or None when the broker has none."""
        return None if self.sasl_port is None else f"{self.host}:{self.sasl_port}"

    @property
    def ssl_bootstrap_servers(self) -> str | None:
        """Address of the SSL listener, or None when the broker has none."""
        return None if self.ssl_port is None else f"{self.host}:{self.ssl_port}"


@dataclass(frozen=True)
class BrokerStatus:
    """Answer of :func:`broker_status` (and of :func:`start_broker`, with ``startup_s`` set when it started).

    ``kind`` is ``running`` (this folder's broker is up), ``started`` (it was just launched), ``starting``
    (its process lives but its port does not answer yet), ``stopped``, or ``external``
    (``KAFKA_BOOTSTRAP_SERVERS`` names the cluster; nothing local is managed).
    """

    kind: Literal["running", "started", "starting", "stopped", "external"]
    bootstrap_servers: str
    state: BrokerState | None = None
    startup_s: float | None = None

    @property
    def is_up(self) -> bool:
        return self.kind in ("running", "started", "external")

    def settings(self) -> KafkaSettings:
        """Client settings for this broker."""
        return KafkaSettings(bootstrap_servers=self.bootstrap_servers)

    def sasl_settings(self, username: str, password: str, mechanism: str = "SCRAM-SHA-512") -> KafkaSettings:
        """Client settings for this broker's SASL_PLAINTEXT listener as ``username``."""
        address = self.state.sasl_bootstrap_servers if self.state is not None else None
        if address is None:
            raise LocalKafkaError(
                f"the broker at {self.bootstrap_servers} has no SASL listener; stop it and start it with a SASL "
                f"user (`rt-training kafka start --sasl-user NAME:PASSWORD`)."
            )
        return KafkaSettings(
            bootstrap_servers=address,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism=mechanism,
            sasl_username=username,
            sasl_password=password,
        )

    def ssl_settings(self) -> KafkaSettings:
        """Client settings for this broker's SSL listener, trusting its local CA."""
        state = self.state
        if state is None or state.ssl_bootstrap_servers is None:
            raise LocalKafkaError(
                f"the broker at {self.bootstrap_servers} has no SSL listener; stop it and start it with "
                f"`rt-training kafka start --ssl`."
            )
        return KafkaSettings(
            bootstrap_servers=state.ssl_bootstrap_servers,
            security_protocol="SSL",
            ssl_cafile=state.ssl_cafile,
        )


def external_bootstrap() -> str | None:
    """The cluster named by ``KAFKA_BOOTSTRAP_SERVERS``, or None when the local broker is meant."""
    return os.environ.get(BOOTSTRAP_ENV_VAR) or None


def start_broker(config: LocalKafkaConfig | None = None) -> BrokerStatus:
    """Start the local broker unless it already runs; return where it answers.

    Idempotent: a live broker recorded in ``state.json`` is reported as ``running`` and left alone. Raises
    :class:`LocalKafkaError` when Java or Maven is missing, the port is taken by another process, or the
    broker does not answer a metadata request within ``start_timeout_s`` (with the tail of its log).
    """
    config = config or LocalKafkaConfig()
    external = external_bootstrap()
    if external:
        return BrokerStatus("external", external)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    with _folder_lock(config.data_dir):
        current = broker_status(config)
        if current.kind == "running" and current.state is not None:
            _add_scram_users(current.state, config.sasl_users, config.start_timeout_s)
            return current
        if current.kind == "starting" and current.state is not None:
            _wait_until_ready(current.state, config.start_timeout_s)
            _add_scram_users(current.state, config.sasl_users, config.start_timeout_s)
            return BrokerStatus("running", current.bootstrap_servers, current.state)
        t0 = time.monotonic()
        java = find_java()
        libs = resolve_libs(java)
        _ensure_port_free(config.host, config.port)
        controller_port = free_port(config.host)
        sasl_port = (config.sasl_port or free_port(config.host)) if config.sasl_users else None
        ssl_port = (config.ssl_port or free_port(config.host)) if config.ssl else None
        for extra in (sasl_port, ssl_port):
            if extra is not None:
                _ensure_port_free(config.host, extra)
        ssl_cafile = _ensure_certificates(config) if config.ssl else None
        properties = _write_properties(config, controller_port, sasl_port, ssl_port)
        _format_storage(java, libs, config, properties)
        pid = _launch(java, libs, config, properties)
        state = BrokerState(
            pid=pid,
            port=config.port,
            controller_port=controller_port,
            host=config.host,
            data_dir=str(config.data_dir),
            log_file=str(config.log_file),
            properties_file=str(properties),
            libs_dir=str(libs),
            started_at=time.time(),
            sasl_port=sasl_port,
            sasl_mechanisms=LOCAL_SASL_MECHANISMS if sasl_port is not None else (),
            sasl_usernames=tuple(sorted(config.sasl_users)),
            ssl_port=ssl_port,
            ssl_cafile=None if ssl_cafile is None else str(ssl_cafile),
        )
        _write_state(config.state_file, state)
        try:
            _wait_until_ready(state, config.start_timeout_s)
            _add_scram_users(state, config.sasl_users, config.start_timeout_s)
        except BaseException:  # a broker that never became ready (or an interrupt) is not left behind
            _terminate(pid, properties, config.stop_timeout_s)
            config.state_file.unlink(missing_ok=True)
            raise
        return BrokerStatus("started", config.bootstrap_servers, state, time.monotonic() - t0)


def stop_broker(config: LocalKafkaConfig | None = None) -> BrokerState | None:
    """Stop the broker this folder's ``state.json`` names (SIGTERM, then SIGKILL after ``stop_timeout_s``).

    Returns the state of the broker it stopped, or None when none was running. A recorded pid that is no
    longer this broker (it exited and the number was reused) is never signalled.
    """
    config = config or LocalKafkaConfig()
    if not config.data_dir.is_dir():
        return None
    with _folder_lock(config.data_dir):
        state = read_state(config.state_file)
        if state is None:
            return None
        stopped = state if _is_our_broker(state.pid, Path(state.properties_file)) else None
        if stopped is not None:
            _terminate(state.pid, Path(state.properties_file), config.stop_timeout_s)
        config.state_file.unlink(missing_ok=True)
        return stopped


def broker_status(config: LocalKafkaConfig | None = None) -> BrokerStatus:
    """Whether this folder's broker runs: its recorded pid is alive, is our Kafka process, and its port
    accepts connections. A stale ``state.json`` (its process is gone) reads as ``stopped``."""
    config = config or LocalKafkaConfig()
    external = external_bootstrap()
    if external:
        return BrokerStatus("external", external)
    state = read_state(config.state_file)
    if state is None or not _is_our_broker(state.pid, Path(state.properties_file)):
        return BrokerStatus("stopped", config.bootstrap_servers)
    if not _port_answers(state.host, state.port):
        return BrokerStatus("starting", state.bootstrap_servers, state)
    return BrokerStatus("running", state.bootstrap_servers, state)


def read_state(path: Path) -> BrokerState | None:
    """The recorded broker, or None when there is no (readable) state file."""
    try:
        return BrokerState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file (empty when it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def find_java() -> str:
    """Path of a Java 17+ executable (``$JAVA_HOME/bin/java`` first, then ``java`` on PATH)."""
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(on_path)
    found = []
    for java in candidates:
        version = _java_major_version(java)
        if version is not None and version >= MIN_JAVA:
            return java
        found.append(f"{java} (version {version})")
    seen = ", ".join(found) if found else "no java on PATH and JAVA_HOME unset"
    raise LocalKafkaError(
        f"the local Kafka broker needs Java {MIN_JAVA} or newer; found: {seen}. Install it with `{INSTALL_HINT}`, "
        f"or set {BOOTSTRAP_ENV_VAR} to use a running cluster."
    )


def resolve_libs(java: str | None = None) -> Path:
    """The folder of Kafka jars: ``$KAFKA_HOME/libs`` when set, else the Maven cache (resolved once).

    The Maven copy is redone only when ``infra/kafka/pom.xml`` changed since the last copy (a marker file
    in the cache records the pom's hash).
    """
    kafka_home = os.environ.get(KAFKA_HOME_ENV_VAR)
    if kafka_home:
        libs = Path(kafka_home) / "libs"
        if not any(libs.glob("kafka_*.jar")):
            raise LocalKafkaError(
                f"{KAFKA_HOME_ENV_VAR}={kafka_home} has no Kafka jars in {libs}; point it at an unpacked Kafka "
                f"4.x distribution or unset it to fetch the jars with Maven."
            )
        return libs
    pom = _INFRA_DIR / "pom.xml"
    if not pom.is_file():
        raise LocalKafkaError(
            f"{pom} is missing: the local broker is resolved from the repository's infra/kafka/pom.xml. "
            f"Run from a checkout, or set {KAFKA_HOME_ENV_VAR} to an installed Kafka."
        )
    libs = Path(os.environ.get(LIBS_ENV_VAR) or _REPO_ROOT / ".cache" / "kafka" / "libs")
    pom_hash = hashlib.sha256(pom.read_bytes()).hexdigest()
    marker = libs / _RESOLVED_MARKER
    libs.parent.mkdir(parents=True, exist_ok=True)
    with _folder_lock(libs.parent):
        if marker.is_file() and marker.read_text().strip() == pom_hash:
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise LocalKafkaError(
                f"Maven (mvn) is needed once to download the Kafka jars into {libs}; install it with "
                f"`{INSTALL_HINT}`, or set {KAFKA_HOME_ENV_VAR} to an installed Kafka 4.x."
            )
        shutil.rmtree(libs, ignore_errors=True)
        env = dict(os.environ)
        if java:
            env.setdefault("JAVA_HOME", str(Path(java).resolve().parents[1]))
        cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-Dkafka.libs={libs}"]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
        if done.returncode != 0 or not any(libs.glob("kafka_*.jar")):
            output = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            raise LocalKafkaError(
                f"Maven could not fetch the Kafka jars (exit {done.returncode}) with `{shlex.join(cmd)}`:\n"
                f"{output}\nCheck network access to Maven Central, or set {KAFKA_HOME_ENV_VAR}."
            )
        marker.write_text(pom_hash + "\n")
        return libs


def server_properties(
    config: LocalKafkaConfig, controller_port: int, sasl_port: int | None = None, ssl_port: int | None = None
) -> dict[str, str]:
    """The broker configuration: one combined node, replication factors of 1, and short background
    intervals so retention and compaction act within seconds in tests.

    With ``sasl_port`` a SASL_PLAINTEXT listener accepts SCRAM-SHA-512, SCRAM-SHA-256 and OAUTHBEARER (unsigned
    JWTs, checked by Kafka's default unsecured validator); with ``ssl_port`` an SSL listener presents the
    certificate in ``<data_dir>/tls`` (no client certificate required). ``config.extra_properties`` come last
    and override the rest.
    """
    host, port = config.host, config.port
    listeners = {"PLAINTEXT": port, "SASL_PLAINTEXT": sasl_port, "SSL": ssl_port}
    client_listeners = ",".join(f"{name}://{host}:{p}" for name, p in listeners.items() if p is not None)
    protocol_map = ",".join(f"{name}:{name}" for name, p in listeners.items() if p is not None)
    security: dict[str, str] = {}
    if sasl_port is not None:
        security["listener.name.sasl_plaintext.sasl.enabled.mechanisms"] = ",".join(LOCAL_SASL_MECHANISMS)
        for mechanism in SCRAM_MECHANISMS:
            security[f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
        # The broker's own login token is never sent (brokers talk over PLAINTEXT), but the login module
        # needs a subject to start; client tokens are checked by the default unsecured validator.
        security["listener.name.sasl_plaintext.oauthbearer.sasl.jaas.config"] = (
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
            'unsecuredLoginStringClaim_sub="broker";'
        )
    if ssl_port is not None:
        tls = config.tls_dir
        security |= {
            "listener.name.ssl.ssl.keystore.type": "PEM",
            "listener.name.ssl.ssl.keystore.location": str(tls / "broker-keystore.pem"),
            "listener.name.ssl.ssl.truststore.type": "PEM",
            "listener.name.ssl.ssl.truststore.location": str(tls / "ca.pem"),
            "listener.name.ssl.ssl.client.auth": "none",
        }
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"{client_listeners},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": client_listeners,
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{protocol_map}",
        **security,
        "log.dirs": str(config.data_dir / _KRAFT_DIR),
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "3",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "log.initial.task.delay.ms": "1000",
        "log.retention.check.interval.ms": "1000",
        "log.segment.delete.delay.ms": "1000",
        "log.cleaner.backoff.ms": "1000",
        "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
        "file.delete.delay.ms": "1000",
        **config.extra_properties,
    }


def _write_properties(
    config: LocalKafkaConfig, controller_port: int, sasl_port: int | None, ssl_port: int | None
) -> Path:
    path = config.data_dir / _PROPERTIES_FILE
    lines = ["# Generated by `rt-training kafka start`; rewritten at every start."]
    properties = server_properties(config, controller_port, sasl_port, ssl_port)
    lines += [f"{key}={value}" for key, value in properties.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _ensure_certificates(config: LocalKafkaConfig) -> Path:
    """The SSL listener's CA and broker certificate in ``<data_dir>/tls`` (made once); returns the CA file."""
    tls = config.tls_dir
    ca_file, keystore = tls / "ca.pem", tls / "broker-keystore.pem"
    if ca_file.is_file() and keystore.is_file():
        return ca_file
    try:
        ca = make_certificate_authority(tls)
        make_server_certificate(ca, tls, hosts=_certificate_hosts(config.host))
    except CertificateError as exc:
        raise LocalKafkaError(f"cannot make the SSL listener's certificates in {tls}: {exc}") from None
    return ca.cert


def _certificate_hosts(host: str) -> tuple[str, ...]:
    names = [host, "localhost", "127.0.0.1"]
    return tuple(dict.fromkeys(n for n in names if n not in ("0.0.0.0", "::")))


def _add_scram_users(state: BrokerState, users: Mapping[str, str], timeout_s: float) -> None:
    """Create or update the SCRAM credentials of ``users`` (both mechanisms) through the PLAINTEXT listener,
    then wait until the SASL listener accepts each of them."""
    if not users:
        return
    if state.sasl_port is None:
        raise LocalKafkaError(
            f"the broker at {state.bootstrap_servers} runs without a SASL listener; stop it "
            f"(`rt-training kafka stop`) and start it again with the SASL users."
        )
    from kafka.admin import UserScramCredentialUpsertion

    admin = make_admin(KafkaSettings(bootstrap_servers=state.bootstrap_servers))
    failed: dict[str, str] = {}
    try:
        for mechanism in SCRAM_MECHANISMS:  # the broker takes one alteration per user and request
            upserts = [
                UserScramCredentialUpsertion(name, mechanism, password) for name, password in users.items()
            ]
            results = admin.alter_user_scram_credentials(upserts)
            failed |= {name: f"{mechanism}: {error}" for name, error in results.items() if error}
    finally:
        admin.close()
    if failed:
        raise LocalKafkaError(f"the broker refused the SCRAM credentials of {sorted(failed)}: {failed}")
    status = BrokerStatus("running", state.bootstrap_servers, state)
    deadline = time.monotonic() + timeout_s
    for name, password in users.items():
        settings = status.sasl_settings(name, password)
        while True:
            try:
                check_reachable(settings, timeout_s=2.0)
                break
            except KafkaConnectionProblem:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def _format_storage(java: str, libs: Path, config: LocalKafkaConfig, properties: Path) -> None:
    """Format the KRaft log directory with a random cluster id, once (a formatted folder is kept)."""
    if (config.data_dir / _KRAFT_DIR / "meta.properties").is_file():
        return
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    cmd = [
        java,
        "-Xmx128m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        f"-Dlog4j2.configurationFile={_INFRA_DIR / 'log4j2.properties'}",
        "-cp",
        f"{libs}/*",
        _STORAGE_TOOL_CLASS,
        "format",
        f"--cluster-id={cluster_id}",  # one word: an id may start with "-", which a separate argument cannot
        "--config",
        str(properties),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise LocalKafkaError(
            f"formatting the Kafka storage in {config.data_dir / _KRAFT_DIR} failed (exit {done.returncode}):\n"
            f"{(done.stdout + done.stderr).strip()}\nRemove {config.data_dir} to start from an empty broker."
        )


def _launch(java: str, libs: Path, config: LocalKafkaConfig, properties: Path) -> int:
    """Start the broker JVM detached from this process (it outlives a CLI call) and return its pid.

    A shell starts it in the background and prints its pid, so the broker is not our child: no zombie is
    left in a long-lived caller (a test session) once it exits.
    """
    cmd = [
        java,
        f"-Xmx{config.heap}",
        "-Xms128m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={_INFRA_DIR / 'log4j2.properties'}",
        "-cp",
        f"{libs}/*",
        _MAIN_CLASS,
        str(properties),
    ]
    script = f"{shlex.join(cmd)} >>{shlex.quote(str(config.log_file))} 2>&1 </dev/null & echo $!"
    config.log_file.write_text(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')} {shlex.join(cmd)}\n")
    done = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, start_new_session=True, timeout=30, check=True
    )
    return int(done.stdout.strip())


def _wait_until_ready(state: BrokerState, timeout_s: float) -> None:
    """Poll until the broker answers a metadata request; fail early if its process exits."""
    settings = KafkaSettings(
        bootstrap_servers=state.bootstrap_servers, connect_timeout_s=2.0, request_timeout_s=5.0
    )
    properties = Path(state.properties_file)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _is_our_broker(state.pid, properties):
            raise LocalKafkaError(
                f"the Kafka broker (pid {state.pid}) exited during startup; last lines of {state.log_file}:\n"
                f"{log_tail(Path(state.log_file))}"
            )
        if _port_answers(state.host, state.port) and _answers_metadata(settings):
            return
        time.sleep(0.25)
    raise LocalKafkaError(
        f"the Kafka broker (pid {state.pid}) did not answer at {state.bootstrap_servers} within {timeout_s:.0f}s; "
        f"last lines of {state.log_file}:\n{log_tail(Path(state.log_file))}"
    )


def _answers_metadata(settings: KafkaSettings) -> bool:
    """True when the broker returns cluster metadata (its port opens a moment before it can)."""
    from kafka.errors import KafkaError

    try:
        admin = make_admin(settings)
    except (KafkaConnectionProblem, KafkaError):
        return False
    try:
        admin.describe_cluster()
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()
    return True


def _terminate(pid: int, properties: Path, timeout_s: float) -> None:
    """SIGTERM (Kafka shuts down cleanly), then SIGKILL if it is still running after ``timeout_s``."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        if not _is_our_broker(pid, properties):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and _is_our_broker(pid, properties):
            time.sleep(0.1)


def _is_our_broker(pid: int, properties: Path) -> bool:
    """True while ``pid`` is a live (not zombie) Kafka process started with ``properties``.

    Checking the command line guards against signalling an unrelated process that reused the pid (where there is
    no /proc to read it from, a live pid is taken as ours).
    """
    if not process_alive(pid):
        return False
    if not Path("/proc/self").is_dir():
        return True
    args = process_args(pid)
    return _MAIN_CLASS in args and str(properties) in args


def _java_major_version(java: str) -> int | None:
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _ensure_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise LocalKafkaError(
                f"port {port} on {host} is already in use by another process (not a broker started from this "
                f"data folder). Stop that process, choose another port (`rt-training kafka start --port N`), "
                f"or set {BOOTSTRAP_ENV_VAR}={host}:{port} if it is a Kafka broker you want to use."
            ) from None


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port the OS reports free now (for the controller listener, or a test broker); another process
    could still take it before the broker binds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _write_state(path: Path, state: BrokerState) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    tmp.replace(path)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Serialize start/stop/resolve on one folder across processes (two test sessions, two shells)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
