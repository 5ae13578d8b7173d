"""HttpEmitter: usage events to the console's ingest endpoint, for the embedded default and for
services that must not link librdkafka.

The contract (the console implements the server side):

    POST {api_url}/v1/events
    Authorization: Bearer <KeyTrail key with the ingest scope>     (optional in embedded mode)
    Content-Type: application/json
    {"events": [<KeyUsageEvent JSON>, ...]}                        (at most 5000 per request)

    200 {"accepted": n, "duplicates": n, "rejected": [{"index": i, "code": "...", "reason": "..."}]}
    413 the request is too large: the batch is split in halves and sent again
    408, 429, 5xx, connection errors: retried with backoff, then spooled and replayed in order
    other 4xx (400, 401, 403, 404, 422): refused for good, counted as failed and logged
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson

from keytrail.producers.batching import BatchingEmitter, Delivery
from keytrail.producers.encoding import UsageEncoder
from keytrail.producers.spool import DEFAULT_MAX_BYTES, DiskSpool, FsyncPolicy

MAX_EVENTS_PER_REQUEST = 5000
DEFAULT_SPOOL_BASE = Path(".keytrail") / "spool" / "http"
_RETRIABLE_STATUS = frozenset({408, 425, 429})


class HttpEmitter(BatchingEmitter):
    """Batches events to `POST {api_url}/v1/events`; see the module docstring for the contract.

    `ingest_key` is sent as a bearer token and never logged. Without `spool_dir`, a free `slot-N`
    under `spool_base` (default `.keytrail/spool/http`) is claimed; `spool=False` runs without a
    spool (losses are counted and logged).
    `transport` lets tests plug in an `httpx` transport (for example an ASGI app).
    """

    name = "http"

    def __init__(
        self,
        api_url: str,
        *,
        ingest_key: str | None = None,
        spool_dir: Path | str | None = None,
        spool_base: Path | str | None = None,
        spool: bool = True,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        spool_fsync: FsyncPolicy = "interval",
        batch_size: int = 1000,
        flush_interval: float = 0.2,
        max_queue: int = 100_000,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 10.0,
        strict: bool = False,
        encoder: UsageEncoder | None = None,
        transport: httpx.BaseTransport | None = None,
        background: bool = True,
    ) -> None:
        if not 1 <= batch_size <= MAX_EVENTS_PER_REQUEST:
            raise ValueError(f"batch_size must be between 1 and {MAX_EVENTS_PER_REQUEST}")
        self.url = api_url.rstrip("/") + "/v1/events"
        headers = {"content-type": "application/json", "user-agent": "keytrail-producers"}
        if ingest_key:
            headers["authorization"] = f"Bearer {ingest_key}"
        self._client = httpx.Client(headers=headers, timeout=timeout, transport=transport)
        disk: DiskSpool | None = None
        if spool:
            options: dict[str, Any] = {"max_bytes": spool_max_bytes, "fsync": spool_fsync}
            disk = (
                DiskSpool(spool_dir, **options)
                if spool_dir is not None
                else DiskSpool.claim(spool_base or DEFAULT_SPOOL_BASE, **options)
            )
        super().__init__(
            spool=disk,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_queue=max_queue,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            strict=strict,
            encoder=encoder,
            background=background,
        )

    def _deliver(self, values: list[bytes]) -> Delivery:
        body = b'{"events":[' + b",".join(values) + b"]}"
        try:
            response = self._client.post(self.url, content=body)
        except httpx.HTTPError as error:
            return Delivery(retry=True, reason=f"{type(error).__name__}: {error}")
        status = response.status_code
        if status == 200 or (status in (207, 422) and b'"rejected"' in response.content):
            return _accepted(response, len(values))  # 207/422: some/all events refused, each listed
        if status == 413:
            if len(values) == 1:
                return Delivery(failed=1, reason="413: one event is larger than the server accepts")
            half = len(values) // 2
            first, second = self._deliver(values[:half]), self._deliver(values[half:])
            if first.retry or second.retry:
                return Delivery(retry=True, reason=first.reason or second.reason)
            return Delivery(
                delivered=first.delivered + second.delivered,
                failed=first.failed + second.failed,
                reason=first.reason or second.reason,
            )
        if status >= 500 or status in _RETRIABLE_STATUS:
            return Delivery(retry=True, reason=f"HTTP {status}")
        return Delivery(failed=len(values), reason=f"HTTP {status}: {_error_text(response)}")

    def _close_transport(self) -> None:
        self._client.close()


def _accepted(response: httpx.Response, sent: int) -> Delivery:
    try:
        body = orjson.loads(response.content)
        accepted = int(body.get("accepted", 0)) + int(body.get("duplicates", 0))
        rejected = body.get("rejected") or []
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return Delivery(delivered=sent, reason="")
    reason = ""
    if rejected:
        first = rejected[0] if isinstance(rejected[0], dict) else {}
        reason = f"event {first.get('index')}: {first.get('code')}: {first.get('reason')}"
    return Delivery(delivered=accepted, failed=len(rejected), reason=reason)


def _error_text(response: httpx.Response) -> str:
    """The server's `{"error": {"code", "message"}}`, or the start of the body."""
    try:
        error = orjson.loads(response.content)["error"]
        return f"{error.get('code')}: {error.get('message')}"
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return response.text[:200]
