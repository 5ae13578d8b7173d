"""The one secret scanner: what a leaked credential looks like, wherever it turns up in an event.

Every string field of a usage event passes through here before it is stored or forwarded
(console ingest, the embedded pipeline, the stream decoder, the middleware). A match is replaced
by a marked redaction, `[REDACTED:<kind>]`; a `key_id` (or `project_id`) holding one is refused.

Kinds, matched in any position (no word boundaries: `x<secret>` and `<secret>.` are found too):

- `keytrail_key`   KeyTrail's own format, `kt_<env>_<random>_<checksum>`
- `private_key`    a PEM / OpenSSH / PGP private key block (from BEGIN to END, or to the end)
- `aws_access_key` AKIA…, ASIA…, ABIA…, ACCA… access key ids
- `github_token`   ghp_, gho_, ghu_, ghs_, ghr_ tokens and github_pat_ fine-grained tokens
- `slack_token`    xoxb-, xoxp-, xoxa-, xoxo-, xoxs-, xoxr- tokens
- `stripe_key`     sk_live_, sk_test_, rk_live_, rk_test_ secret and restricted keys
- `google_api_key` AIza… keys
- `jwt`            three base64url parts, the first one a JSON object (`eyJ…`)
- `bearer_token`   what follows `Bearer ` (the scheme word itself is kept)
- `url_password`   the password of `scheme://user:password@host`
- `high_entropy`   a token of [A-Za-z0-9+/=_-], 37+ characters long or 32+ without a dash, not
                   hexadecimal, with a 32-character window (8+ characters outside hex) as random as random text
                   (`randomness_score`: Shannon entropy plus class changes); UUIDs, hex digests,
                   timestamps, words and route paths do not qualify

`payload_may_hold_secret(raw)` is the fast prefilter over raw JSON bytes: one compiled regex
(RE2, a DFA, when `google-re2` is installed; the standard library's engine otherwise, same
pattern) that matches whatever any rule above could match, plus the JSON escapes that could spell
or join a secret the raw bytes do not show (`\\u00XX` of printable ASCII, `\\/`). When it says False, no
event of the payload holds a secret and the per-event scan can be skipped; when it says True,
scan each event (`scrub_event`). bench/bench_secrets.py measures it in ns per byte.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from typing import Any, Final

try:  # RE2 matches the prefilter in one DFA pass (about 1.5 ns per byte instead of about 20)
    import re2 as _re2  # type: ignore[import-not-found, import-untyped]
except ImportError:  # pragma: no cover - depends on the install
    _re2 = None

REDACTION_FORMAT: Final = "[REDACTED:{kind}]"
"""What replaces a secret: a marked redaction naming what was found, never any of its characters."""

SCRUBBED_FIELDS: Final = ("service", "method", "route", "client_ip", "user_agent", "request_id")
"""The free-text string fields of KeyUsageEvent v1 that are scanned and redacted in place."""

REFUSED_FIELDS: Final = ("key_id", "project_id")
"""Identifier fields: one holding a secret makes the event invalid (a redaction is no identifier)."""

_FIELD_MAX_LENGTH: Final = {
    "service": 128,
    "method": 16,
    "route": 512,
    "client_ip": 45,
    "user_agent": 512,
    "request_id": 128,
}

HIGH_ENTROPY_MIN_LENGTH: Final = 32
"""A token of [A-Za-z0-9+/=_-] this long without a dash may be a random credential..."""
HIGH_ENTROPY_TOKEN_LENGTH: Final = 37
"""...and one this long with dashes (a UUID, 36 with its dashes, is not)."""
HIGH_ENTROPY_MIN_SCORE: Final = 5.0
"""`randomness_score` from which a 32-character window counts as random (random text: about 5.8;
fewer than 1 in 500 random base62/base64 windows score below 5)."""

# One (kind, pattern) per rule; the named group `s`, when present, is the part redacted.
_RULES: Final[tuple[tuple[str, str], ...]] = (
    ("keytrail_key", r"kt_[a-z0-9]+_[A-Za-z0-9]{20,}_[A-Za-z0-9]{4,}"),
    (
        "private_key",
        r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
        r"[\s\S]*?(?:-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|\Z)",
    ),
    ("aws_access_key", r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}"),
    ("github_token", r"gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}"),
    ("slack_token", r"xox[abposr]-[A-Za-z0-9-]{10,}"),
    ("stripe_key", r"[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"),
    ("google_api_key", r"AIza[0-9A-Za-z_\-]{35}"),
    ("jwt", r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
    ("bearer_token", r"[Bb][Ee][Aa][Rr][Ee][Rr][ \t]+(?P<s>[A-Za-z0-9._~+/=-]{8,})"),
    ("url_password", r"://[^/\s:@]{1,128}:(?P<s>[^/\s@]{1,256})@"),
)
"""The shaped rules, tried left to right; `high_entropy` is judged apart, on the remaining tokens."""
KINDS: Final = (*(kind for kind, _ in _RULES), "high_entropy")
_SCANNER: Final = re.compile(
    "(?=" + "|".join(f"(?P<{kind}>{pattern.replace('(?P<s>', f'(?P<s_{kind}>')})" for kind, pattern in _RULES) + ")"
)
"""Every position where a rule matches (a lookahead: matches may overlap, `<secret><secret>`)."""
_TOKEN: Final = re.compile(rf"[A-Za-z0-9+/=_-]{{{HIGH_ENTROPY_MIN_LENGTH},}}")
HIGH_ENTROPY_WINDOW: Final = 32
"""Entropy is judged on windows of this many characters, so padding cannot dilute a random part."""

# The prefilter: per rule, a pattern matching at least where the rule could match in raw JSON.
# Where a rule's text cannot contain a JSON escape, the rule itself is exact enough; the
# high-entropy rule by its token lengths. JSON escapes can hide what the decoded text shows: any
# `\u00XX` escape of printable ASCII (`\u0041KIA…`), and `\/` (PHP and others escape every slash;
# `/` belongs to base64 tokens, so `abc\/def` is one token once decoded) match too.
_TRIGGERS: Final[tuple[str, ...]] = (
    r"kt_[a-z0-9]+_",
    r"-----BEGIN",
    r"A(?:KIA|SIA|BIA|CCA|Iza)",
    r"gh[pousr]_",
    r"github_pat_",
    r"xox[abposr]-",
    r"k_(?:live|test)_",
    r"eyJ",
    r"[Bb][Ee][Aa][Rr][Ee][Rr]",
    r"://[^/\s:@\"]+:",
    rf"[A-Za-z0-9+/=_-]{{{HIGH_ENTROPY_TOKEN_LENGTH}}}",
    rf"[A-Za-z0-9+/=_]{{{HIGH_ENTROPY_MIN_LENGTH}}}",
    r"\\u00[2-7][0-9A-Fa-f]",
    r"\\/",
)
PREFILTER_PATTERN: Final = "|".join(_TRIGGERS)


def _compile_prefilter(pattern: str, as_bytes: bool) -> Any:
    source: Any = pattern.encode() if as_bytes else pattern
    if _re2 is not None:
        options = _re2.Options()
        options.max_mem = 64 << 20
        return _re2.compile(source, options)
    return re.compile(source)


_PREFILTER_BYTES: Final = _compile_prefilter(PREFILTER_PATTERN, as_bytes=True)
PREFILTER_ENGINE: Final = "re2" if _re2 is not None else "re"


@dataclass(frozen=True, slots=True)
class SecretMatch:
    """One secret found in a text: where it is (`start`, `end`) and what kind it looks like."""

    kind: str
    start: int
    end: int


def shannon_bits(text: str) -> float:
    """Shannon entropy of the characters of `text`, in bits per character."""
    length = len(text)
    if not length:
        return 0.0
    counts: dict[str, int] = {}
    for char in text:
        counts[char] = counts.get(char, 0) + 1
    return -sum(n / length * math.log2(n / length) for n in counts.values())


_HEX_CHARS: Final = frozenset("0123456789abcdefABCDEF-")
HIGH_ENTROPY_MIN_NON_HEX: Final = 8
"""A window needs this many characters outside [0-9a-fA-F-] (random base62 has about 20 in 32)."""


def _char_class(char: str) -> int:
    if "a" <= char <= "z":
        return 0
    if "A" <= char <= "Z":
        return 1
    if "0" <= char <= "9":
        return 2
    return 3


def randomness_score(window: str) -> float:
    """Shannon bits per character plus twice the share of neighbours of different classes (lower,
    upper, digit, other): random base62/base64 text scores about 5.8, words in camelCase, snake_case
    or paths about 4.3, whatever their length."""
    if len(window) < 2:
        return 0.0
    classes = [_char_class(c) for c in window]
    changes = sum(1 for a, b in zip(classes, classes[1:], strict=False) if a != b)
    return shannon_bits(window) + 2 * changes / (len(window) - 1)


def _is_candidate(token: str) -> bool:
    return len(token) >= HIGH_ENTROPY_TOKEN_LENGTH or any(
        len(part) >= HIGH_ENTROPY_MIN_LENGTH for part in token.split("-")
    )


def looks_random(token: str) -> bool:
    """Whether a long token is random enough to be a credential (the `high_entropy` rule): it has
    37+ characters, or 32+ without a dash (a UUID has 36 with dashes); it is not hexadecimal (hex
    digests and trace ids are everywhere, and indistinguishable from hex secrets); and some window of
    32 characters of it scores at least 5 (`randomness_score`)."""
    if len(token) < HIGH_ENTROPY_MIN_LENGTH or not _is_candidate(token) or _HEX_CHARS.issuperset(token):
        return False
    last = len(token) - HIGH_ENTROPY_WINDOW
    starts = [*range(0, last + 1, HIGH_ENTROPY_WINDOW // 4)]
    if starts[-1] != last:
        starts.append(last)
    for start in starts:
        window = token[start : start + HIGH_ENTROPY_WINDOW]
        if sum(1 for c in window if c not in _HEX_CHARS) < HIGH_ENTROPY_MIN_NON_HEX:
            continue  # mostly hex (a trace id with a label): not judged as random text
        if randomness_score(window) >= HIGH_ENTROPY_MIN_SCORE:
            return True
    return False


def find_secrets(text: str) -> list[SecretMatch]:
    """Every secret in `text`, left to right, never overlapping.

    The shaped rules first (the leftmost match wins, earlier rules before later ones at the same
    place); then every remaining long token, split around what the shaped rules found, is judged
    by the `high_entropy` rule."""
    if not text or not text_may_hold_secret(text):
        return []
    shaped: list[SecretMatch] = []
    for match in _SCANNER.finditer(text):  # zero-width: every position where some rule matches
        kind = match.lastgroup or ""
        inner = f"s_{kind}"
        if inner in _SCANNER.groupindex and match.start(inner) >= 0:
            start, end = match.span(inner)
        else:
            start, end = match.span(kind)
        if shaped and start < shaped[-1].end:  # overlapping matches (`<secret><secret>`) merge
            last = shaped[-1]
            shaped[-1] = SecretMatch(last.kind, last.start, max(last.end, end))
            continue
        shaped.append(SecretMatch(kind, start, end))
    found = list(shaped)
    for token in _TOKEN.finditer(text):
        pieces = [token.span()]
        for secret in shaped:
            if secret.end <= token.start() or secret.start >= token.end():
                continue
            pieces = [
                part
                for lo, hi in pieces
                for part in ((lo, min(hi, secret.start)), (max(lo, secret.end), hi))
                if part[1] - part[0] >= HIGH_ENTROPY_MIN_LENGTH
            ]
        for lo, hi in pieces:
            if looks_random(text[lo:hi]):
                found.append(SecretMatch("high_entropy", lo, hi))
    found.sort(key=lambda m: m.start)
    return found


def holds_secret(text: str) -> bool:
    """True when `text` holds anything `find_secrets` would report."""
    return bool(find_secrets(text))


def redact_text(text: str) -> str:
    """`text` with every secret replaced by `[REDACTED:<kind>]`."""
    matches = find_secrets(text)
    if not matches:
        return text
    parts: list[str] = []
    last = 0
    for match in matches:
        parts.append(text[last : match.start])
        parts.append(REDACTION_FORMAT.format(kind=match.kind))
        last = match.end
    parts.append(text[last:])
    return "".join(parts)


def payload_may_hold_secret(raw: bytes | bytearray | memoryview) -> bool:
    """Fast prefilter over raw JSON bytes (one event or a whole envelope): False means no string in
    it can hold a secret, so per-event scanning can be skipped; True means scan each event."""
    return _PREFILTER_BYTES.search(bytes(raw) if not isinstance(raw, bytes) else raw) is not None


_HEX_ONLY: Final = re.compile(r"[0-9A-Fa-f-]*")


def text_may_hold_secret(text: str) -> bool:
    """The prefilter for decoded text (the same pattern as `payload_may_hold_secret`). Hex text
    (UUIDs, trace ids: most request ids) is answered without the regex call."""
    if _HEX_ONLY.fullmatch(text) is not None:
        return False
    return _PREFILTER_BYTES.search(text.encode("utf-8", "surrogatepass")) is not None


@lru_cache(maxsize=65_536)
def identifier_holds_secret(value: str) -> bool:
    """Whether an identifier (key_id, project_id) holds a secret in any position or decoration.
    Cached: services send few distinct key ids, and this runs on every decoded event."""
    return bool(find_secrets(value))


# ---------------------------------------------------------------------------------- events


def _replace(event: Any, changes: dict[str, str]) -> Any:
    """A copy of a pydantic KeyUsageEvent (`model_copy`) or a msgspec FastUsageEvent (`replace`)."""
    model_copy = getattr(event, "model_copy", None)
    if model_copy is not None:
        return model_copy(update=changes)
    import msgspec

    return msgspec.structs.replace(event, **changes)


_SEPARATOR: Final = "\x00"  # in no rule's alphabet: fields never join into one token


def _event_text(event: Any) -> str:
    return _SEPARATOR.join([getattr(event, name) for name in SCRUBBED_FIELDS])


def _batch_may_hold_secret(events: Sequence[Any]) -> bool:
    text = _SEPARATOR.join([_SEPARATOR.join([getattr(e, name) for name in SCRUBBED_FIELDS]) for e in events])
    return _PREFILTER_BYTES.search(text.encode("utf-8", "surrogatepass")) is not None


def scrub_event(event: Any) -> tuple[Any, list[str]]:
    """The event with every secret in its free-text fields redacted, and the names of the fields
    that were. Works on `KeyUsageEvent` and `FastUsageEvent` alike; a clean event is returned as is.
    Redacted values are cut to the field's maximum length, so the event stays a valid contract event."""
    fields, _kinds = _scrub_fields(event)
    if not fields:
        return event, []
    return _replace(event, fields), list(fields)


def _scrub_fields(event: Any, *, prefiltered: bool = False) -> tuple[dict[str, str], list[str]]:
    if not prefiltered and not text_may_hold_secret(_event_text(event)):
        return {}, []
    changes: dict[str, str] = {}
    kinds: list[str] = []
    for name in SCRUBBED_FIELDS:
        value = getattr(event, name)
        matches = find_secrets(value)
        if matches:
            redacted = redact_text(value)[: _FIELD_MAX_LENGTH[name]]
            if name == "method":  # the contract allows only letters there
                redacted = "OTHER"
            changes[name] = redacted
            kinds.extend(m.kind for m in matches if m.kind not in kinds)
    return changes, kinds


def secret_exposed_signal(event: Any, fields: Sequence[str], kinds: Sequence[str] = ()):  # noqa: ANN201
    """The `secret_exposed` signal for one event: names the key and the fields, never the secret.

    Deterministic: the same key, field set and minute give the same signal id (replays and
    redeliveries do not raise it twice)."""
    from keytrail.schemas.signals import Severity, Signal, SignalKind, signal_id_for

    occurred = event.occurred_at
    window_start = occurred.replace(second=0, microsecond=0)
    names = sorted(set(fields))
    kind_names = sorted(set(kinds))
    what = ", ".join(kind_names) if kind_names else "a secret"
    return Signal(
        signal_id=signal_id_for(event.key_id, SignalKind.SECRET_EXPOSED.value, window_start.isoformat(),
                                ",".join(names)),
        key_id=event.key_id,
        project_id=event.project_id,
        kind=SignalKind.SECRET_EXPOSED,
        severity=Severity.HIGH,
        score=float(len(names)),
        observed=float(len(names)),
        expected=0.0,
        window_start=window_start,
        window_end=window_start + timedelta(minutes=1),
        detected_at=occurred,
        evidence={"fields": names, "secret_kinds": kind_names, "event_ids": [str(event.event_id)]},
        message=(
            f"A credential ({what}) was sent in the {', '.join(names)} field(s) of a usage event of key "
            f"{event.key_id} (service {redact_text(event.service)[:64]}). KeyTrail redacted it before storing the "
            "event; whoever sent it leaks it elsewhere too (logs, proxies): rotate that credential and "
            "stop the client from putting it there."
        ),
    )


@dataclass(slots=True)
class ScrubbedBatch:
    """A batch after scrubbing: the events to store, one signal per key/field set/minute, and how
    many events had something redacted."""

    events: list[Any] = field(default_factory=list)
    signals: list[Any] = field(default_factory=list)
    redacted_events: int = 0


SCRUB_CHUNK: Final = 64
"""Events judged by one prefilter call; only chunks it flags are scanned event by event."""


def scrub_events(events: Iterable[Any]) -> ScrubbedBatch:
    """Scrub a batch of events; clean events pass through untouched (the same objects).

    The prefilter runs once over the whole batch's text (about 2 ns per byte), then over chunks of
    64 events, and only the events of flagged chunks are scanned one by one."""
    pending = list(events)
    batch = ScrubbedBatch()
    if not pending or not _batch_may_hold_secret(pending):
        batch.events = pending
        return batch
    seen: set[str] = set()
    for offset in range(0, len(pending), SCRUB_CHUNK):
        chunk = pending[offset : offset + SCRUB_CHUNK]
        if len(pending) > SCRUB_CHUNK and not _batch_may_hold_secret(chunk):
            batch.events.extend(chunk)
            continue
        for event in chunk:
            _scrub_one(event, batch, seen)
    return batch


def _scrub_one(event: Any, batch: ScrubbedBatch, seen: set[str]) -> None:
    changes, kinds = _scrub_fields(event)
    if not changes:
        batch.events.append(event)
        return
    batch.redacted_events += 1
    scrubbed = _replace(event, changes)
    batch.events.append(scrubbed)
    signal = secret_exposed_signal(scrubbed, list(changes), kinds)
    if signal.signal_id not in seen:
        seen.add(signal.signal_id)
        batch.signals.append(signal)


__all__ = [
    "PREFILTER_ENGINE",
    "PREFILTER_PATTERN",
    "REDACTION_FORMAT",
    "REFUSED_FIELDS",
    "SCRUBBED_FIELDS",
    "ScrubbedBatch",
    "SecretMatch",
    "find_secrets",
    "holds_secret",
    "identifier_holds_secret",
    "looks_random",
    "payload_may_hold_secret",
    "redact_text",
    "scrub_event",
    "scrub_events",
    "secret_exposed_signal",
    "text_may_hold_secret",
]
