"""What the ASGI and WSGI middleware share: where the key is read from, how a verdict becomes a
401/403 answer, and which usage event a request produces.

What is recorded when a request is refused (the event must still be a valid contract event and
must never carry the secret):

- no key presented: `key_id = "anonymous"`, outcome `invalid`, status 401;
- a key that is malformed (bad shape or checksum) or matches no key: `key_id = "unknown"`,
  outcome `invalid`, status 401;
- a key that exists but is revoked, expired, disabled, or not allowed here (scope, IP allowlist):
  the key's real public id and project, outcome `revoked`/`expired`/`disabled`/`denied`, status 403;
- the verifier cannot decide (key store or verify endpoint down): `key_id = "unknown"`, outcome
  `error`, status 503 (fail closed).

`project_id` is the key's project when the key is known, else the middleware's `project_id`
(default `unknown`). The route is always the template (`/v1/orders/{order_id}`), never the raw path;
a request that matches no route is recorded as `<unmatched>`. User agent and request id are cut
to the contract's lengths, and any secret in them (any vendor's shape, `keytrail.schemas.secrets`)
is redacted.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import orjson

from keytrail.producers.client_address import ClientAddressResolver
from keytrail.producers.emitter import UsageEmitter
from keytrail.producers.encoding import EventIds
from keytrail.producers.verifiers import KeyVerifier, VerifierUnavailable
from keytrail.schemas.secrets import redact_text
from keytrail.schemas.usage import Outcome
from keytrail.schemas.verification import Verification

log = logging.getLogger("keytrail.producers.middleware")

ANONYMOUS_KEY_ID: Final = "anonymous"
UNKNOWN_KEY_ID: Final = "unknown"
UNKNOWN_PROJECT_ID: Final = "unknown"
UNMATCHED_ROUTE: Final = "<unmatched>"

_METHOD = re.compile(r"^[A-Z]{1,16}$")
_COMMON_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

STATUS_LINES: Final = {
    200: "200 OK",
    401: "401 Unauthorized",
    403: "403 Forbidden",
    429: "429 Too Many Requests",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}

_REFUSALS: Final = {
    # outcome: (status, error code, default message)
    Outcome.INVALID: (401, "invalid_key", "the API key is not valid"),
    Outcome.REVOKED: (403, "key_revoked", "the API key was revoked"),
    Outcome.EXPIRED: (403, "key_expired", "the API key has expired"),
    Outcome.DISABLED: (403, "key_disabled", "the API key is disabled"),
    Outcome.DENIED: (403, "access_denied", "the API key may not be used for this request"),
    Outcome.RATE_LIMITED: (429, "rate_limited", "too many requests with this API key"),
    Outcome.ERROR: (503, "verification_unavailable", "the API key could not be checked; try again"),
}
MISSING_KEY_MESSAGE: Final = "no API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    """Who called, for the application (`request.state.keytrail` in Starlette/FastAPI,
    `environ["keytrail"]` in WSGI/Flask)."""

    key_id: str
    project_id: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """The answer to a refused request."""

    status: int
    body: bytes
    headers: list[tuple[str, str]]


def bearer_token(authorization: str) -> str | None:
    """The token of `Authorization: Bearer <token>` (scheme case-insensitive), else None."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


@lru_cache(maxsize=4096)
def _redact_cached(text: str) -> str:
    return redact_text(text)


def redact(text: str) -> str:
    """`text` with every secret the one scanner (`keytrail.schemas.secrets`) finds replaced by
    `[REDACTED:<kind>]`. Short texts are cached: user agents and messages repeat."""
    if len(text) <= 256:
        return _redact_cached(text)
    return redact_text(text)


def clean_method(method: str) -> str:
    """The method as the contract allows it (upper-case letters, at most 16), else `OTHER`."""
    if method in _COMMON_METHODS or _METHOD.match(method):
        return method
    return "OTHER"


class KeyGuard:
    """The policy of one protected service: verification, refusals and its usage events.

    - `service`: the service name recorded in every event.
    - `scope`: the scope every request needs, or a callable `(method, path) -> scope | None`.
    - `trusted_proxies`: addresses/CIDRs whose `X-Forwarded-For` / `Forwarded` is believed (default:
      `KEYTRAIL_TRUSTED_PROXIES`; empty means the TCP peer is the client).
    - `allow_query_key`: also read the key from the `query_param` query parameter (off by default:
      query strings end up in access logs).
    - `public_paths`: exact paths served without a key and without an event (health checks).
    """

    def __init__(
        self,
        verifier: KeyVerifier,
        emitter: UsageEmitter,
        *,
        service: str,
        project_id: str = UNKNOWN_PROJECT_ID,
        scope: str | Callable[[str, str], str | None] | None = None,
        trusted_proxies: Iterable[str] | None = None,
        allow_query_key: bool = False,
        query_param: str = "api_key",
        public_paths: Iterable[str] = (),
    ) -> None:
        self.verifier = verifier
        self.emitter = emitter
        self.service = service
        self.project_id = project_id
        self.scope = scope
        if trusted_proxies is None:  # the deployment's setting, KEYTRAIL_TRUSTED_PROXIES (empty: none)
            from keytrail.settings import get_settings

            trusted_proxies = get_settings().trusted_proxy_list()
        self.addresses = ClientAddressResolver(trusted_proxies)
        self.allow_query_key = allow_query_key
        self.query_param = query_param
        self.public_paths = frozenset(public_paths)
        self.request_ids = EventIds()
        self._averify = getattr(verifier, "averify", None)
        self.verifies_async = self._averify is not None
        self._refusals: dict[tuple[Outcome, str], Refusal] = {}
        self._identities: dict[tuple[str | None, str | None], KeyIdentity] = {}

    # ------------------------------------------------------------------ deciding

    def required_scope(self, method: str, path: str) -> str | None:
        """The scope this request needs."""
        if self.scope is None or isinstance(self.scope, str):
            return self.scope
        return self.scope(method, path)

    def verify(self, presented: str | None, method: str, path: str, client_ip: str) -> Verification:
        """The verdict on a request (a missing key is `invalid` with key_id None)."""
        if presented is None:
            return Verification(Outcome.INVALID, reason=MISSING_KEY_MESSAGE)
        try:
            return self.verifier.verify(
                presented, scope=self.required_scope(method, path), client_ip=client_ip
            )
        except VerifierUnavailable as error:
            return Verification(Outcome.ERROR, reason=str(error))
        except Exception as error:  # noqa: BLE001 - a broken verifier fails closed, never open
            log.error("key verification failed unexpectedly (%s); refusing the request", type(error).__name__)
            return Verification(Outcome.ERROR, reason="the API key could not be checked")

    async def averify(self, presented: str | None, method: str, path: str, client_ip: str) -> Verification:
        """`verify`, awaiting the verifier's `averify` when it has one (remote verification)."""
        if presented is None or self._averify is None:
            return self.verify(presented, method, path, client_ip)
        try:
            return await self._averify(
                presented, scope=self.required_scope(method, path), client_ip=client_ip
            )  # type: ignore[no-any-return]
        except VerifierUnavailable as error:
            return Verification(Outcome.ERROR, reason=str(error))
        except Exception as error:  # noqa: BLE001 - a broken verifier fails closed, never open
            log.error("key verification failed unexpectedly (%s); refusing the request", type(error).__name__)
            return Verification(Outcome.ERROR, reason="the API key could not be checked")

    def identity(self, verdict: Verification) -> KeyIdentity:
        """Who called, for the application (one shared object per key)."""
        pair = (verdict.key_id, verdict.project_id)
        known = self._identities.get(pair)
        if known is None:
            if len(self._identities) >= 100_000:
                self._identities.clear()
            known = self._identities[pair] = KeyIdentity(verdict.key_id or "", verdict.project_id or "")
        return known

    def refusal(self, verdict: Verification, missing: bool) -> Refusal:
        """The JSON error for a refused request: `{"error": {"code": ..., "message": ...}}`."""
        status, code, default = _REFUSALS.get(verdict.outcome, _REFUSALS[Outcome.DENIED])
        if missing:
            code = "missing_key"
        message = verdict.reason or default
        cached = self._refusals.get((verdict.outcome, message))
        if cached is not None and not missing:
            return cached
        body = orjson.dumps({"error": {"code": code, "message": redact(message)}})
        headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
        if status == 401:
            headers.append(("www-authenticate", 'Bearer realm="keytrail"'))
        refusal = Refusal(status, body, headers)
        if not missing and len(self._refusals) < 1000:
            self._refusals[(verdict.outcome, message)] = refusal
        return refusal

    # ------------------------------------------------------------------ recording

    def record(
        self,
        verdict: Verification,
        *,
        missing: bool,
        method: str,
        route: str | None,
        status: int,
        outcome: Outcome | None,
        started_at: float,
        latency_ns: int,
        request_bytes: int,
        response_bytes: int,
        client_ip: str,
        user_agent: str,
        request_id: str,
    ) -> None:
        """Emit the usage event of one request (never raises: a broken emitter must not break the service)."""
        key_id = verdict.key_id or (ANONYMOUS_KEY_ID if missing else UNKNOWN_KEY_ID)
        fields: dict[str, Any] = {
            "occurred_at": started_at,
            "key_id": key_id,
            "project_id": verdict.project_id or self.project_id,
            "service": self.service,
            "method": clean_method(method),
            "route": (route or UNMATCHED_ROUTE)[:512],
            "status": status,
            "outcome": outcome or verdict.outcome,
            "latency_ms": latency_ns // 1000 / 1000,
            "request_bytes": request_bytes,
            "response_bytes": response_bytes,
            "client_ip": client_ip,
            "user_agent": redact(user_agent[:512]) if user_agent else "",
            "request_id": redact(request_id[:128]) if request_id else self.request_ids.new(),
        }
        try:
            self.emitter.emit(fields)
        except Exception as error:  # noqa: BLE001 - the request path never fails because of auditing
            log.error(
                "could not emit the usage event of %s %s: %s", method, fields["route"], type(error).__name__
            )
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s -> %d, key %s (%s)%s",
                fields["method"],
                fields["route"],
                status,
                key_id,
                fields["outcome"],
                f": {redact(verdict.reason)}" if verdict.reason else "",
            )

    @staticmethod
    def clock() -> tuple[float, int]:
        """(wall-clock start for `occurred_at`, monotonic start for the latency)."""
        return time.time(), time.perf_counter_ns()
