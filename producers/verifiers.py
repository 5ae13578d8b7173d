"""Deciding on a presented key inside a service: locally against the key store, or remotely
through the console's verify endpoint.

Remote contract (the console implements the server side):

    POST {api_url}/v1/verify
    Authorization: Bearer <service credential>      (optional)
    {"key": "<presented key>", "scope": "<scope>" | null, "client_ip": "<ip>" | null}

    200 {"outcome": "ok" | "invalid" | "revoked" | ..., "key_id": str | null,
         "project_id": str | null, "reason": str}

Any other answer, or no answer, raises `VerifierUnavailable`; the middleware then refuses the
request with 503 (fail closed). The presented key is sent only in the request body and is never
logged; remote verdicts are cached for `cache_ttl` seconds under an HMAC of the key with a
random per-process secret (the key itself is never kept).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from typing import Protocol, runtime_checkable

import httpx
import orjson

from keytrail.schemas.usage import Outcome
from keytrail.schemas.verification import Verification

log = logging.getLogger(__name__)


class VerifierUnavailable(RuntimeError):
    """The verifier could not decide (key store or verify endpoint unreachable)."""


@runtime_checkable
class KeyVerifier(Protocol):
    """Anything that decides on a presented key. `KeyStore` itself satisfies it."""

    def verify(
        self, presented_key: str, scope: str | None = None, client_ip: str | None = None
    ) -> Verification:
        """The verdict; raises `VerifierUnavailable` when it cannot decide."""
        ...


class LocalKeyVerifier:
    """Verification against a key store in this process (`KeyStore.verify`: cached, one indexed
    lookup when not). Database errors become `VerifierUnavailable`."""

    def __init__(self, store: KeyVerifier) -> None:
        self.store = store

    def verify(
        self, presented_key: str, scope: str | None = None, client_ip: str | None = None
    ) -> Verification:
        try:
            return self.store.verify(presented_key, scope=scope, client_ip=client_ip)
        except Exception as error:  # noqa: BLE001 - any store failure means "cannot decide"
            raise VerifierUnavailable(f"the key store could not be read ({type(error).__name__})") from None


class RemoteKeyVerifier:
    """Verification through `POST {api_url}/v1/verify` (see the module docstring).

    `averify` is the non-blocking variant the ASGI middleware uses. Verdicts are cached for
    `cache_ttl` seconds (0 disables the cache): that is how long a revoked key may still pass.
    """

    def __init__(
        self,
        api_url: str,
        *,
        credential: str | None = None,
        timeout: float = 2.0,
        cache_ttl: float = 5.0,
        cache_size: int = 10_000,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = api_url.rstrip("/") + "/v1/verify"
        headers = {"content-type": "application/json", "user-agent": "keytrail-producers"}
        if credential:
            headers["authorization"] = f"Bearer {credential}"
        self._headers = headers
        self._timeout = timeout
        self._client = httpx.Client(headers=headers, timeout=timeout, transport=transport)
        self._async_transport = async_transport
        self._async_client: httpx.AsyncClient | None = None
        self.cache_ttl = cache_ttl
        self.cache_size = cache_size
        self._salt = os.urandom(32)
        self._cache: dict[tuple[bytes, str | None, str | None], tuple[float, Verification]] = {}
        self._lock = threading.Lock()

    def _cache_key(
        self, presented_key: str, scope: str | None, client_ip: str | None
    ) -> tuple[bytes, str | None, str | None]:
        return hmac.new(self._salt, presented_key.encode(), hashlib.sha256).digest(), scope, client_ip

    def _cached(self, key: tuple[bytes, str | None, str | None]) -> Verification | None:
        entry = self._cache.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def _remember(self, key: tuple[bytes, str | None, str | None], verdict: Verification) -> Verification:
        if self.cache_ttl > 0:
            with self._lock:
                if len(self._cache) >= self.cache_size:
                    self._cache.clear()
                self._cache[key] = (time.monotonic() + self.cache_ttl, verdict)
        return verdict

    def _body(self, presented_key: str, scope: str | None, client_ip: str | None) -> bytes:
        return orjson.dumps({"key": presented_key, "scope": scope, "client_ip": client_ip})

    def verify(
        self, presented_key: str, scope: str | None = None, client_ip: str | None = None
    ) -> Verification:
        key = self._cache_key(presented_key, scope, client_ip)
        cached = self._cached(key)
        if cached is not None:
            return cached
        try:
            response = self._client.post(self.url, content=self._body(presented_key, scope, client_ip))
        except httpx.HTTPError as error:
            raise VerifierUnavailable(
                f"the verify endpoint did not answer ({type(error).__name__})"
            ) from None
        return self._remember(key, _verdict(response))

    async def averify(
        self, presented_key: str, scope: str | None = None, client_ip: str | None = None
    ) -> Verification:
        """`verify` without blocking the event loop."""
        key = self._cache_key(presented_key, scope, client_ip)
        cached = self._cached(key)
        if cached is not None:
            return cached
        if self._async_client is None:
            self._async_client = httpx.AsyncClient(
                headers=self._headers, timeout=self._timeout, transport=self._async_transport
            )
        try:
            response = await self._async_client.post(
                self.url, content=self._body(presented_key, scope, client_ip)
            )
        except httpx.HTTPError as error:
            raise VerifierUnavailable(
                f"the verify endpoint did not answer ({type(error).__name__})"
            ) from None
        return self._remember(key, _verdict(response))

    def close(self) -> None:
        """Close the HTTP client (the async one is closed by `aclose`)."""
        self._client.close()

    async def aclose(self) -> None:
        """Close both HTTP clients."""
        self._client.close()
        if self._async_client is not None:
            await self._async_client.aclose()


def _verdict(response: httpx.Response) -> Verification:
    if response.status_code != 200:
        raise VerifierUnavailable(f"the verify endpoint answered HTTP {response.status_code}")
    try:
        body = orjson.loads(response.content)
        return Verification(
            outcome=Outcome(body["outcome"]),
            key_id=body.get("key_id") or None,
            project_id=body.get("project_id") or None,
            reason=str(body.get("reason") or "")[:300],
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise VerifierUnavailable("the verify endpoint answered something that is not a verdict") from None
