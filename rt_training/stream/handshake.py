"""A short, synchronous probe of one Kafka listener that says precisely why a connection would not work.

kafka-python logs a refused SASL login or an untrusted certificate and keeps retrying until its timeout, so
its callers only see "timed out". This probe speaks the first requests of the Kafka protocol itself, on a
connected socket, with the same settings the clients get:

1. for SSL and SASL_SSL, the TLS handshake with Python's :mod:`ssl` (certificate problems are named from
   OpenSSL's verify code);
2. an ``ApiVersions`` request, which every Kafka listener answers before authentication (a TLS alert or a
   closed connection instead means the port speaks another protocol);
3. a ``SaslHandshake``: for SASL_* clients followed by the ``SaslAuthenticate`` exchange of kafka-python's own
   mechanism implementation; for PLAINTEXT and SSL clients it only reveals a listener that expects SASL.

Requests use fixed, non-flexible versions (ApiVersions v0, SaslHandshake v1, SaslAuthenticate v1) that
Kafka 2.2 to 4.x accept.
"""

from __future__ import annotations

import socket
import ssl
import struct
from typing import TYPE_CHECKING

from rt_training.stream.client import (
    KafkaAuthenticationError,
    KafkaProtocolMismatchError,
    KafkaTLSError,
)

if TYPE_CHECKING:
    from rt_training.stream.client import KafkaSettings

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE = 33, 34
_MAX_RESPONSE = 1 << 20
_TLS_RECORD_TYPES = (0x15, 0x16)  # alert, handshake: what a TLS listener sends back to plaintext bytes

# OpenSSL verify codes (X509_V_ERR_*) grouped by what a user has to fix.
_UNKNOWN_CA_CODES = {2, 18, 19, 20, 21}
_EXPIRED, _NOT_YET_VALID, _HOSTNAME_MISMATCH, _IP_MISMATCH = 10, 9, 62, 64


class ServerSilent(Exception):
    """The server accepted the connection but did not answer in time (a broker still starting); retryable."""


class _Closed(Exception):
    """The server closed the connection; ``first_bytes`` is what it sent before (empty when nothing)."""

    def __init__(self, first_bytes: bytes = b""):
        super().__init__("connection closed by the server")
        self.first_bytes = first_bytes


def probe_server(settings: KafkaSettings, server: str, sock: socket.socket, timeout_s: float) -> None:
    """Probe ``server`` over the connected ``sock`` as ``settings`` would connect; return when it would work.

    Raises :class:`~rt_training.stream.client.KafkaTLSError`,
    :class:`~rt_training.stream.client.KafkaAuthenticationError` or
    :class:`~rt_training.stream.client.KafkaProtocolMismatchError` for a definite problem, and
    :class:`ServerSilent` (or :class:`OSError`) when the server does not answer within ``timeout_s``.
    """
    sock.settimeout(timeout_s)
    host = server.rpartition(":")[0].strip("[]")
    protocol = settings.security_protocol
    uses_tls = protocol in ("SSL", "SASL_SSL")
    wire_sock = _tls_handshake(settings, server, host, sock) if uses_tls else sock
    try:
        wire = _Wire(wire_sock, settings.client_id)
        try:
            wire.request(API_VERSIONS, 0, b"")
        except _Closed as closed:
            raise _listener_mismatch(settings, server, closed, uses_tls) from None
        if protocol.startswith("SASL_"):
            _authenticate(settings, server, host, wire)
        else:
            _refuse_sasl_listener(settings, server, wire)
    except TimeoutError:
        raise ServerSilent(f"no answer within {timeout_s:.1f}s") from None
    finally:
        if wire_sock is not sock:
            wire_sock.close()


class _Wire:
    """Length-prefixed Kafka requests (header v1) and responses (header v0) on a blocking socket."""

    def __init__(self, sock: socket.socket, client_id: str):
        self.sock = sock
        self.client_id = client_id.encode()
        self.correlation_id = 0

    def request(self, api_key: int, version: int, body: bytes) -> bytes:
        """Send one request and return the response body (after its correlation id)."""
        self.correlation_id += 1
        header = struct.pack(">hhih", api_key, version, self.correlation_id, len(self.client_id))
        payload = header + self.client_id + body
        try:
            self.sock.sendall(struct.pack(">i", len(payload)) + payload)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
            raise _Closed() from None
        head = self._read(4, b"")
        (size,) = struct.unpack(">i", head)
        if (head[0] in _TLS_RECORD_TYPES and head[1] == 0x03) or not 4 <= size <= _MAX_RESPONSE:
            raise _Closed(head)
        data = self._read(size, head)
        (correlation_id,) = struct.unpack_from(">i", data)
        if correlation_id != self.correlation_id:
            raise _Closed(head)
        return data[4:]

    def _read(self, n: int, before: bytes) -> bytes:
        chunks = bytearray()
        while len(chunks) < n:
            try:
                chunk = self.sock.recv(n - len(chunks))
            except (ConnectionResetError, ssl.SSLEOFError):
                chunk = b""
            if not chunk:
                raise _Closed(before + bytes(chunks))
            chunks += chunk
        return bytes(chunks)


def _tls_handshake(settings: KafkaSettings, server: str, host: str, sock: socket.socket) -> ssl.SSLSocket:
    """Wrap ``sock`` in TLS as kafka-python would (CA file or system trust store; the hostname checked unless
    ``ssl_check_hostname`` is off; a client certificate whose key may be encrypted with ``ssl_password``)."""
    try:
        context = ssl.create_default_context(cafile=settings.ssl_cafile)
        context.check_hostname = settings.ssl_check_hostname
        if settings.ssl_certfile:
            context.load_cert_chain(
                settings.ssl_certfile, settings.ssl_keyfile, password=settings.ssl_password
            )
    except (OSError, ssl.SSLError) as exc:
        raise KafkaTLSError(
            settings.bootstrap_servers,
            server,
            f"the client's certificate files cannot be loaded ({_files(settings)}: {exc.strerror or exc})",
            "Check that the CA, certificate and key files exist, are readable and are PEM.",
        ) from None
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        raise _certificate_problem(settings, server, host, exc) from None
    except (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError):
        raise _not_tls(settings, server) from None
    except ssl.SSLError as exc:
        if exc.reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
            raise _not_tls(settings, server) from None
        if exc.reason and "CERTIFICATE_REQUIRED" in exc.reason:
            raise KafkaTLSError(
                settings.bootstrap_servers,
                server,
                "the broker requires a client certificate (mutual TLS) and none was given",
                "Set the client certificate and key files (ssl_certfile, ssl_keyfile) your operator issued.",
            ) from None
        raise KafkaTLSError(
            settings.bootstrap_servers,
            server,
            f"{exc.reason or exc}",
            "Check the broker's TLS configuration and the client's certificate files.",
        ) from None


def _certificate_problem(
    settings: KafkaSettings, server: str, host: str, exc: ssl.SSLCertVerificationError
) -> KafkaTLSError:
    code, message = exc.verify_code, exc.verify_message
    trusted = f"CA file {settings.ssl_cafile}" if settings.ssl_cafile else "the system's trusted CAs"
    if code in _UNKNOWN_CA_CODES:
        problem = f"unknown CA: the broker's certificate is not signed by a CA in {trusted} ({message})"
        fix = (
            "Set the CA file (ssl_cafile) to the certificate of the CA that signed the broker's certificate."
        )
    elif code in (_HOSTNAME_MISMATCH, _IP_MISMATCH):
        problem = f"hostname mismatch: the broker's certificate is not valid for {host!r} ({message})"
        fix = "Connect with a host name the certificate lists, or have the broker's certificate reissued for it."
    elif code == _EXPIRED:
        problem = f"the broker's certificate has expired ({message})"
        fix = "Have the broker's certificate renewed (or check this machine's clock)."
    elif code == _NOT_YET_VALID:
        problem = f"the broker's certificate is not valid yet ({message})"
        fix = "Check this machine's clock, or wait until the certificate's start date."
    else:
        problem = f"the broker's certificate was rejected ({message}, OpenSSL code {code})"
        fix = f"Check the broker's certificate against {trusted}."
    return KafkaTLSError(settings.bootstrap_servers, server, problem, fix)


def _not_tls(settings: KafkaSettings, server: str) -> KafkaProtocolMismatchError:
    plain = "SASL_PLAINTEXT" if settings.security_protocol == "SASL_SSL" else "PLAINTEXT"
    return KafkaProtocolMismatchError(
        settings.bootstrap_servers,
        server,
        settings.security_protocol,
        "the listener does not speak TLS (it broke off the TLS handshake: a PLAINTEXT or SASL_PLAINTEXT listener)",
        f"Use security protocol {plain} for this port, or the address of the cluster's TLS listener.",
    )


def _listener_mismatch(
    settings: KafkaSettings, server: str, closed: _Closed, uses_tls: bool
) -> KafkaProtocolMismatchError | ServerSilent:
    """What a listener that did not answer ApiVersions speaks, judging by what it sent before closing."""
    if uses_tls:
        return ServerSilent("the broker closed the TLS connection without answering")
    secured = "SASL_SSL" if settings.security_protocol == "SASL_PLAINTEXT" else "SSL"
    if closed.first_bytes[:1] and closed.first_bytes[0] in _TLS_RECORD_TYPES:
        finding = "the listener speaks TLS (it answered with a TLS alert)"
    else:
        finding = "the listener closed the connection at the first request (it expects TLS, or is not Kafka)"
    return KafkaProtocolMismatchError(
        settings.bootstrap_servers,
        server,
        settings.security_protocol,
        finding,
        f"Use security protocol {secured} with the cluster's CA file (ssl_cafile), or the address of a "
        f"plaintext listener.",
    )


def _sasl_handshake(wire: _Wire, mechanism: str) -> tuple[int, list[str]]:
    """SaslHandshake v1: the error code and the mechanisms the listener enables."""
    body = wire.request(SASL_HANDSHAKE, 1, _string(mechanism))
    (error_code, count) = struct.unpack_from(">hi", body)
    offset, mechanisms = 6, []
    for _ in range(max(count, 0)):
        (length,) = struct.unpack_from(">h", body, offset)
        mechanisms.append(body[offset + 2 : offset + 2 + length].decode())
        offset += 2 + length
    return error_code, mechanisms


def _refuse_sasl_listener(settings: KafkaSettings, server: str, wire: _Wire) -> None:
    """A PLAINTEXT or SSL client is fine unless the listener expects a SASL login."""
    try:
        error_code, mechanisms = _sasl_handshake(wire, "PLAIN")
    except _Closed:
        return  # a listener that refuses a SaslHandshake outright is not waiting for one
    if error_code in (0, UNSUPPORTED_SASL_MECHANISM):
        sasl = "SASL_SSL" if settings.security_protocol == "SSL" else "SASL_PLAINTEXT"
        raise KafkaProtocolMismatchError(
            settings.bootstrap_servers,
            server,
            settings.security_protocol,
            f"the listener requires SASL authentication (mechanisms {', '.join(mechanisms) or 'unknown'})",
            f"Use security protocol {sasl} with one of those mechanisms and your user name and password.",
        )


def _authenticate(settings: KafkaSettings, server: str, host: str, wire: _Wire) -> None:
    """SaslHandshake, then SaslAuthenticate rounds driven by kafka-python's mechanism implementation."""
    from kafka.errors import KafkaConfigurationError
    from kafka.net.sasl import get_sasl_mechanism

    mechanism_name = settings.sasl_mechanism or "(none)"

    def failed(reason: str) -> KafkaAuthenticationError:
        if settings.sasl_password:
            reason = reason.replace(settings.sasl_password, "***")
        return KafkaAuthenticationError(
            settings.bootstrap_servers,
            server,
            mechanism_name,
            settings.sasl_username,
            reason,
            settings.sasl_oauth_token_provider,
        )

    try:
        mechanism = get_sasl_mechanism(mechanism_name)(host=host, **settings.client_kwargs())
    except KeyError:
        raise failed(
            "the client does not know this mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER)"
        ) from None
    except KafkaConfigurationError as exc:
        raise failed(f"the client settings are incomplete: {exc}") from None
    try:
        error_code, mechanisms = _sasl_handshake(wire, mechanism_name)
    except _Closed:
        raise _sasl_refused(settings, server) from None
    if error_code == ILLEGAL_SASL_STATE:
        raise _sasl_refused(settings, server)
    if error_code == UNSUPPORTED_SASL_MECHANISM or mechanism_name not in mechanisms:
        raise failed(
            f"the listener does not enable this mechanism; it enables {', '.join(mechanisms) or 'none'}"
        )
    if error_code != 0:
        raise failed(f"the SASL handshake was refused (Kafka error code {error_code})")
    rejection = ""
    while not mechanism.is_done():
        try:
            auth_bytes = mechanism.auth_bytes()
        except Exception as exc:  # a token provider's own failure (identity service down, bad credentials)
            raise failed(f"the client could not make its login: {type(exc).__name__}: {exc}") from None
        try:
            body = wire.request(SASL_AUTHENTICATE, 1, _bytes(auth_bytes))
        except _Closed:
            raise failed("the broker closed the connection during authentication") from None
        (error_code, message_length) = struct.unpack_from(">hh", body)
        offset = 4 + max(message_length, 0)
        message = body[4:offset].decode(errors="replace") if message_length > 0 else ""
        if error_code != 0:
            raise failed(rejection or message or f"Kafka error code {error_code}")
        (token_length,) = struct.unpack_from(">i", body, offset)
        token = body[offset + 4 : offset + 4 + max(token_length, 0)]
        if mechanism_name == "OAUTHBEARER" and token:  # the broker's error challenge (RFC 7628)
            rejection = (
                f"the broker rejected the token ({token.decode(errors='replace')}): it may have expired, not be "
                "valid yet, or lack a claim or scope the broker requires"
            )
        try:
            mechanism.receive(token)
        except (ValueError, KeyError) as exc:
            raise failed(f"the broker's answer did not verify ({type(exc).__name__})") from None
    if not mechanism.is_authenticated():
        raise failed("the broker did not confirm the login")


def _sasl_refused(settings: KafkaSettings, server: str) -> KafkaProtocolMismatchError:
    plain = "SSL" if settings.security_protocol == "SASL_SSL" else "PLAINTEXT"
    return KafkaProtocolMismatchError(
        settings.bootstrap_servers,
        server,
        settings.security_protocol,
        "the listener does not use SASL authentication",
        f"Use security protocol {plain} for this port, or the address of the cluster's SASL listener.",
    )


def _files(settings: KafkaSettings) -> str:
    named = [f"{k}={getattr(settings, k)}" for k in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")]
    return ", ".join(n for n in named if not n.endswith("=None"))


def _string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def _bytes(value: bytes) -> bytes:
    return struct.pack(">i", len(value)) + value
