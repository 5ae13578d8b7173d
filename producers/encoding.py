"""Fast encoding of KeyUsageEvent v1 into the contract's JSON bytes, for the request path.

Building a `KeyUsageEvent` costs about 20 µs of pydantic validation per event, four times the
whole `emit()` budget. `UsageEncoder` produces the same bytes as
`KeyUsageEvent.model_dump_json()` (same field order, same number formats; the tests compare them
byte for byte) from a plain mapping, with cheap checks of every constraint of the model:
values that repeat (key ids, routes, user agents, addresses) are checked once and remembered.
Anything the model would refuse is refused here with `InvalidEvent`, the error decoding uses.

Event ids are version-4-shaped UUIDs made of a random 74-bit per-process prefix and a 48-bit
sequence: unique without coordination, and cheap (no `uuid4()` per event). A fork gets a new
prefix.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from ipaddress import ip_address
from typing import Any, Final

import orjson

from keytrail.schemas.codec import InvalidEvent
from keytrail.schemas.secrets import identifier_holds_secret
from keytrail.schemas.timestamps import format_utc_millis
from keytrail.schemas.usage import MAX_FUTURE_SKEW, KeyUsageEvent, Outcome

FIELDS: Final = tuple(KeyUsageEvent.model_fields)
"""The contract's fields in the model's (and so the JSON's) order."""

_REQUIRED: Final = frozenset(
    ("key_id", "project_id", "service", "method", "route", "status", "outcome", "client_ip")
)
_ALLOWED: Final = frozenset(FIELDS)
_OUTCOME_JSON: Final = {o.value: f'"{o.value}"' for o in Outcome}
_MILLIS: Final = tuple(f"{m:03d}Z" for m in range(1000))
_SEQUENCE_MASK: Final = (1 << 48) - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_MAX_SKEW_MS: Final = int(MAX_FUTURE_SKEW.total_seconds() * 1000)
_MAX_EPOCH_S: Final = 253_402_300_800.0  # year 10000
_EPOCH_FLOOR_S: Final = 946_684_800.0  # 2000-01-01: older epoch seconds take the general path
_MAX_SKEW_S: Final = MAX_FUTURE_SKEW.total_seconds() - _EPOCH_FLOOR_S
_MAX_LATENCY_MS: Final = 86_400_000
_MAX_BYTES: Final = 2**53
_CACHE_LIMIT: Final = 10_000
_ID_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-")
_ID_FIRST: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_METHOD_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _refuse(field: str, message: str) -> InvalidEvent:
    return InvalidEvent(f"{field}: {message}", "schema_violation")


class EventIds:
    """Version-4-shaped UUID strings: a random per-process prefix plus a sequence.

    74 random bits tell processes apart; 48 bits of sequence tell events of one process apart.
    Thread safe; a forked child draws a new prefix (and drops ids made before the fork).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: list[str] = []
        self.renew()
        reference = weakref.ref(self)

        def renew_in_child() -> None:
            ids = reference()
            if ids is not None:
                ids._lock = threading.Lock()
                ids.renew()

        os.register_at_fork(after_in_child=renew_in_child)

    def renew(self) -> None:
        """Draw a new random prefix (in a forked child, or when the sequence runs out)."""
        self.prefix = str(uuid.uuid4())[:24]
        self._next = int.from_bytes(os.urandom(6), "big") >> 1
        self._pool = []

    def new(self) -> str:
        """A fresh event id (ids are made 256 at a time: cheaper per id)."""
        try:
            return self._pool.pop()
        except IndexError:
            return self._refill()

    def _refill(self) -> str:
        with self._lock:
            if self._next + 256 > _SEQUENCE_MASK:  # after 2**47 ids at least: start a new prefix
                self.renew()
            start, self._next = self._next, self._next + 256
            prefix = self.prefix
            fresh = [f"{prefix}{value:012x}" for value in range(start + 255, start - 1, -1)]
            event_id = fresh.pop()
            self._pool = fresh
        return event_id


def epoch_ms_of(value: Any, field: str = "occurred_at") -> int:
    """Epoch milliseconds (floored, as the model truncates) of an aware datetime, an ISO 8601
    string with a zone, or epoch seconds (int or float)."""
    if type(value) is float:
        if not -_MAX_EPOCH_S < value < _MAX_EPOCH_S:
            raise _refuse(field, "must be a finite number of epoch seconds")
        return int(value * 1000)
    if type(value) is int:
        return value * 1000
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _refuse(field, "not an ISO 8601 timestamp") from None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise _refuse(field, "timestamp must carry a timezone (use UTC)")
        return (value - _EPOCH) // _ONE_MS
    raise _refuse(field, "must be a datetime, an ISO 8601 string or epoch seconds")


class _CheckedStrings:
    """A string check that remembers the values it has passed (bounded), so repeats cost a set lookup."""

    __slots__ = ("field", "min_length", "max_length", "check", "seen")

    def __init__(self, field: str, min_length: int, max_length: int, check=None) -> None:  # type: ignore[no-untyped-def]
        self.field = field
        self.min_length = min_length
        self.max_length = max_length
        self.check = check
        self.seen: set[str] = set()

    def __call__(self, value: Any) -> str:
        if type(value) is not str and not isinstance(value, str):
            raise _refuse(self.field, "must be a string")
        if value in self.seen:
            return value
        if not self.min_length <= len(value) <= self.max_length:
            raise _refuse(self.field, f"length must be between {self.min_length} and {self.max_length}")
        if self.check is not None:
            self.check(self.field, value)
        if len(self.seen) >= _CACHE_LIMIT:
            self.seen.clear()
        self.seen.add(value)
        return value


def _identifier(field: str, value: str) -> None:
    if value[0] not in _ID_FIRST or not _ID_CHARS.issuperset(value):
        raise _refuse(field, "may contain only letters, digits and _ . : - (starting with a letter or digit)")
    if identifier_holds_secret(value):
        raise _refuse(field, "holds something shaped like a secret key; send the key's public id, never the secret")


def _method(field: str, value: str) -> None:
    if not _METHOD_CHARS.issuperset(value):
        raise _refuse(field, "must be upper-case letters, e.g. GET")


@lru_cache(maxsize=_CACHE_LIMIT)
def normalise_ip(value: str) -> str:
    """The canonical text of an IP address (as the contract stores it); ValueError otherwise."""
    return str(ip_address(value))


def _client_ip(value: Any) -> str:
    if type(value) is not str:
        raise _refuse("client_ip", "must be a string")
    if not 2 <= len(value) <= 45:
        raise _refuse("client_ip", "length must be between 2 and 45")
    try:
        return normalise_ip(value)
    except ValueError:
        raise _refuse("client_ip", "must be an IPv4 or IPv6 address") from None


def _whole(field: str, value: Any, maximum: int) -> None:
    if type(value) is not int:
        raise _refuse(field, "must be an integer")
    raise _refuse(field, f"must be between 0 and {maximum}")


class UsageEncoder:
    """Contract JSON bytes (and the Kafka key) from a mapping of fields or a `KeyUsageEvent`.

    Optional fields take the model's defaults; `event_id` and `occurred_at` default to a new id
    and now. The JSON is assembled from fragments: the fields that repeat from request to request
    (key id, project, service, method, route; the user agent; the address) are checked and
    rendered once and remembered (bounded caches). Thread safe.
    """

    def __init__(self, ids: EventIds | None = None) -> None:
        self.ids = ids or EventIds()
        self._clock: tuple[int, str] = (-1, "")
        self._heads: dict[tuple[Any, ...], tuple[str, bytes]] = {}
        self._agents: dict[str, str] = {}
        self._addresses: dict[str, str] = {}
        self._latencies: dict[float, str] = {}
        self._verdicts: dict[tuple[Any, Any], str] = {}
        self._checks = (
            _CheckedStrings("key_id", 1, 64, _identifier),
            _CheckedStrings("project_id", 1, 64, _identifier),
            _CheckedStrings("service", 1, 128),
            _CheckedStrings("method", 1, 16, _method),
            _CheckedStrings("route", 1, 512),
        )
        self._user_agent = _CheckedStrings("user_agent", 0, 512)

    def encode(self, fields: Mapping[str, Any]) -> tuple[bytes, bytes]:
        """`(key_id bytes, JSON bytes)` for one event; raises `InvalidEvent` naming the field and reason.

        Fast path: the shape a middleware sends (every field but `event_id` and `schema_version`,
        `occurred_at` as epoch seconds, a float latency of at least 0.1 µs) with identities, routes,
        addresses and user agents seen before. Anything else takes the general path. In the range
        the fast path takes, `repr()` of a float writes the same digits as the model's serialiser.
        """
        if len(fields) == 14:
            try:
                head, key = self._heads[
                    (
                        fields["key_id"],
                        fields["project_id"],
                        fields["service"],
                        fields["method"],
                        fields["route"],
                    )
                ]
                verdict = self._verdicts[(fields["status"], fields["outcome"])]
                occurred = fields["occurred_at"]
                latency = fields["latency_ms"]
                request_bytes = fields["request_bytes"]
                response_bytes = fields["response_bytes"]
                address = self._addresses[fields["client_ip"]]
                agent = self._agents[fields["user_agent"]]
                request_id = fields["request_id"]
            except (KeyError, TypeError):
                return self._encode(fields)
            if (
                type(occurred) is float
                and 0.0 < occurred - _EPOCH_FLOOR_S < time.time() + _MAX_SKEW_S
                and type(latency) is float
                and 1e-4 <= latency <= _MAX_LATENCY_MS
                and type(request_bytes) is int
                and 0 <= request_bytes <= _MAX_BYTES
                and type(response_bytes) is int
                and 0 <= response_bytes <= _MAX_BYTES
                and type(request_id) is str
                and len(request_id) <= 128
                and request_id.isprintable()
                and '"' not in request_id
                and "\\" not in request_id
            ):
                occurred_ms = int(occurred * 1000)
                second = occurred_ms // 1000
                clock = self._clock
                if clock[0] != second:
                    clock = self._clock = (second, _second_prefix(second))
                return key, (
                    f'{{"event_id":"{self.ids.new()}","schema_version":1,"occurred_at":"{clock[1]}'
                    f'{_MILLIS[occurred_ms - second * 1000]}",{head},{verdict},"latency_ms":{latency!r},'
                    f'"request_bytes":{request_bytes},"response_bytes":{response_bytes},'
                    f'"client_ip":{address},"user_agent":{agent},"request_id":"{request_id}"}}'
                ).encode()
        return self._encode(fields)

    def _encode(self, fields: Mapping[str, Any]) -> tuple[bytes, bytes]:
        """The general path: any subset of fields, any accepted types, first sights of values."""
        get = fields.get
        try:
            head, key = self._heads[
                (fields["key_id"], fields["project_id"], fields["service"], fields["method"], fields["route"])
            ]
        except (KeyError, TypeError):
            head, key = self._head(fields)
        present = 8
        event_id = get("event_id")
        if event_id is None:
            event_id = self.ids.new()
        else:
            present += 1
            event_id = _event_id(event_id)
        version = get("schema_version")
        if version is not None:
            present += 1
            if version != 1 or type(version) is not int:
                raise _refuse("schema_version", "must be 1")
        occurred = get("occurred_at")
        if occurred is None:
            occurred_ms = time.time_ns() // 1_000_000
        else:
            present += 1
            if type(occurred) is float and 0.0 < occurred < _MAX_EPOCH_S:
                occurred_ms = int(occurred * 1000)
            else:
                occurred_ms = epoch_ms_of(occurred)
            if occurred_ms - time.time_ns() // 1_000_000 > _MAX_SKEW_MS:
                raise _refuse("occurred_at", f"is more than {_MAX_SKEW_MS // 1000} s in the future")
        second = occurred_ms // 1000
        clock = self._clock
        if clock[0] != second:
            clock = self._clock = (second, _second_prefix(second))
        try:
            verdict = self._verdicts[(fields["status"], fields["outcome"])]
        except (KeyError, TypeError):
            verdict = self._verdict(fields)
        latency = get("latency_ms")
        if latency is None:
            latency_text = "0.0"
        else:
            present += 1
            try:
                latency_text = self._latencies[latency]
            except (KeyError, TypeError):
                latency_text = self._remember(self._latencies, latency, _latency_json(latency))
        request_bytes = get("request_bytes")
        if request_bytes is None:
            request_bytes = 0
        else:
            present += 1
            if type(request_bytes) is not int or not 0 <= request_bytes <= _MAX_BYTES:
                _whole("request_bytes", request_bytes, _MAX_BYTES)
        response_bytes = get("response_bytes")
        if response_bytes is None:
            response_bytes = 0
        else:
            present += 1
            if type(response_bytes) is not int or not 0 <= response_bytes <= _MAX_BYTES:
                _whole("response_bytes", response_bytes, _MAX_BYTES)
        client_ip = fields["client_ip"]
        try:
            address = self._addresses[client_ip]
        except (KeyError, TypeError):
            address = self._remember(self._addresses, client_ip, _json(_client_ip(client_ip)))
        user_agent = get("user_agent")
        if user_agent is None:
            agent = '""'
        else:
            present += 1
            try:
                agent = self._agents[user_agent]
            except (KeyError, TypeError):
                agent = self._remember(self._agents, user_agent, _json(self._user_agent(user_agent)))
        request_id = get("request_id")
        if request_id is None:
            request_text = '""'
        else:
            present += 1
            if type(request_id) is not str or len(request_id) > 128:
                raise _refuse("request_id", "must be a string of at most 128 characters")
            if request_id.isprintable() and '"' not in request_id and "\\" not in request_id:
                request_text = f'"{request_id}"'  # nothing to escape
            else:
                request_text = _json(request_id)
        if len(fields) != present:
            unknown = sorted(str(name) for name in fields if name not in _ALLOWED)
            raise _refuse(", ".join(unknown) or "event", "extra inputs are not permitted")
        return key, (
            f'{{"event_id":"{event_id}","schema_version":1,"occurred_at":"{clock[1]}'
            f'{_MILLIS[occurred_ms - second * 1000]}",{head},{verdict},'
            f'"latency_ms":{latency_text},"request_bytes":{request_bytes},"response_bytes":{response_bytes},'
            f'"client_ip":{address},"user_agent":{agent},"request_id":{request_text}}}'
        ).encode()

    def _verdict(self, fields: Mapping[str, Any]) -> str:
        """Check and render status and outcome (first sight of this pair)."""
        try:
            status, outcome = fields["status"], fields["outcome"]
        except KeyError as missing:
            raise _refuse(str(missing.args[0]), "field required") from None
        if type(status) is not int or not 0 <= status <= 999:
            raise _refuse("status", "must be an integer between 0 and 999")
        try:
            rendered = f'"status":{status},"outcome":{_OUTCOME_JSON[outcome]}'
        except (KeyError, TypeError):
            raise _refuse("outcome", f"must be one of {', '.join(o.value for o in Outcome)}") from None
        return self._remember(self._verdicts, (status, outcome), rendered)  # type: ignore[no-any-return]

    def _head(self, fields: Mapping[str, Any]) -> tuple[str, bytes]:
        """Check and render key_id, project_id, service, method and route (first sight of this combination)."""
        try:
            values = tuple(check(fields[check.field]) for check in self._checks)
        except KeyError as missing:
            raise _refuse(str(missing.args[0]), "field required") from None
        rendered = (
            f'"key_id":{_json(values[0])},"project_id":{_json(values[1])},"service":{_json(values[2])},'
            f'"method":{_json(values[3])},"route":{_json(values[4])}'
        )
        return self._remember(self._heads, values, (rendered, values[0].encode()))

    @staticmethod
    def _remember(cache: dict, key: Any, value: Any) -> Any:  # type: ignore[type-arg]
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = value
        return value

    def encode_event(self, event: KeyUsageEvent) -> tuple[bytes, bytes]:
        """`(key_id bytes, JSON bytes)` of an already validated event, without pydantic's serialiser."""
        value = orjson.dumps(
            {
                "event_id": str(event.event_id),
                "schema_version": 1,
                "occurred_at": format_utc_millis(event.occurred_at),
                "key_id": event.key_id,
                "project_id": event.project_id,
                "service": event.service,
                "method": event.method,
                "route": event.route,
                "status": event.status,
                "outcome": event.outcome.value,
                "latency_ms": event.latency_ms,
                "request_bytes": event.request_bytes,
                "response_bytes": event.response_bytes,
                "client_ip": event.client_ip,
                "user_agent": event.user_agent,
                "request_id": event.request_id,
            }
        )
        return event.key_id.encode(), value

    def encode_any(self, event_or_fields: KeyUsageEvent | Mapping[str, Any]) -> tuple[bytes, bytes]:
        """`encode_event` for a model, `encode` for a mapping."""
        if isinstance(event_or_fields, KeyUsageEvent):
            return self.encode_event(event_or_fields)
        if not isinstance(event_or_fields, Mapping):
            raise InvalidEvent(
                "an event must be a KeyUsageEvent or a mapping of its fields", "schema_violation"
            )
        return self.encode(event_or_fields)


def _json(text: str) -> str:
    """A JSON string literal, escaped exactly as the model's serialiser escapes it."""
    try:
        return orjson.dumps(text).decode()
    except orjson.JSONEncodeError:
        raise InvalidEvent("a text field is not valid Unicode (lone surrogate)", "schema_violation") from None


def _latency_json(value: Any) -> str:
    """The JSON number of a latency, formatted as the model's serialiser formats floats."""
    if type(value) is not float:
        if type(value) is not int:
            raise _refuse("latency_ms", "must be a number")
        value = float(value)
    if not 0.0 <= value <= _MAX_LATENCY_MS:
        raise _refuse("latency_ms", f"must be between 0 and {_MAX_LATENCY_MS}")
    if value >= 1e-4 or value == 0.0:
        return repr(value)  # the same shortest digits as orjson/pydantic in this range
    return orjson.dumps(value).decode()


def _second_prefix(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def _event_id(value: Any) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if type(value) is not str:
        raise _refuse("event_id", "must be a UUID")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise _refuse("event_id", "must be a UUID") from None


_shared: UsageEncoder | None = None
_shared_lock = threading.Lock()


def shared_encoder() -> UsageEncoder:
    """One encoder per process (its caches and id source are shared by every emitter)."""
    global _shared
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                _shared = UsageEncoder()
    return _shared
