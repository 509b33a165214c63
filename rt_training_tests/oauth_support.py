"""OAUTHBEARER token providers for tests against the local broker's unsecured-JWT validator.

Each module-level function is a factory that ``KAFKA_SASL_OAUTH_TOKEN_PROVIDER`` can name
(``rt_training_tests.oauth_support:provider``). The tokens are unsigned JWTs (``alg: none``): header and
claims base64url-encoded, an empty signature, as Kafka's ``OAuthBearerUnsecuredValidatorCallbackHandler``
expects.
"""

from __future__ import annotations

import base64
import json
import time

from kafka.net.sasl.oauth import AbstractTokenProvider

SUBJECT = "oauth-alice"


class TokenProviderFailure(RuntimeError):
    """Raised by :class:`FailingTokenProvider`, as a provider would when its identity service is down."""


def unsecured_jwt(subject: str, issued_at: float, lifetime_s: float) -> str:
    """An unsigned JWT with the claims ``sub``, ``iat`` and ``exp`` (seconds since the epoch)."""

    def part(obj: dict[str, object]) -> str:
        raw = json.dumps(obj, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    claims = {"sub": subject, "iat": int(issued_at), "exp": int(issued_at + lifetime_s)}
    return f"{part({'alg': 'none'})}.{part(claims)}."


class UnsecuredTokenProvider(AbstractTokenProvider):
    """A fresh token valid for ``lifetime_s`` seconds from each call (negative: already expired)."""

    def __init__(self, subject: str = SUBJECT, lifetime_s: float = 3600.0):
        super().__init__()
        self.subject = subject
        self.lifetime_s = lifetime_s

    def token(self) -> str:
        return unsecured_jwt(self.subject, time.time(), self.lifetime_s)


class FailingTokenProvider(AbstractTokenProvider):
    """A provider whose identity service cannot be reached."""

    def token(self) -> str:
        raise TokenProviderFailure("the identity provider at https://idp.invalid did not answer")


def provider() -> UnsecuredTokenProvider:
    """Tokens for :data:`SUBJECT`, valid for an hour."""
    return UnsecuredTokenProvider()


def expired_provider() -> UnsecuredTokenProvider:
    """Tokens that expired ten minutes before they are made (beyond the broker's clock-skew allowance)."""
    return UnsecuredTokenProvider(lifetime_s=-600.0)


def failing_provider() -> FailingTokenProvider:
    """A provider whose ``token()`` raises :class:`TokenProviderFailure`."""
    return FailingTokenProvider()
