"""Writes are scoped like reads: a usage event may only name a key of its own `project_id`.

One rule for every way events come in: `POST /v1/events` (console/api/routes_ingest.py) and the
Kafka worker (stream_processors/faust_app.py) both call `scope_refusals`. The HTTP ingest answers a
refused event in its 207/422 body; the worker sends it to `keytrail.dlq.v1` with the same code.

- `key_not_in_project`: the key store knows the key under another project. The reason never says
  which project that is (it would leak another project's key ownership).
- `unknown_key`: the project takes usage of its existing keys only
  (`KEYTRAIL_INGEST_EXISTING_KEYS_ONLY`) and the store does not know the key.

`KeyOwners` caches key -> project for the worker: a key's project never changes once the key
exists, so a known owner is cached for good (bounded, oldest dropped first); an unknown id is asked again after
`negative_ttl_seconds`, so a key created a moment ago is recognised soon. Lookups are per distinct
key of a batch, never per event.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Engine, inspect, select

from keytrail.keystore.tables import api_keys

PLACEHOLDER_KEY_IDS: Final = frozenset({"anonymous", "unknown"})
"""What the middleware records for requests without a key or with a key no store knows; they never
name a real key, so they are accepted even where a project takes its existing keys only."""

KEY_NOT_IN_PROJECT: Final = "key_not_in_project"
UNKNOWN_KEY: Final = "unknown_key"


@dataclass(frozen=True, slots=True)
class ScopeRefusal:
    """One event refused for its key's project: its position in the judged sequence, code, reason."""

    position: int
    code: str
    reason: str


def scope_refusals(
    events: Sequence[tuple[str, str]],
    owners: Mapping[str, str],
    requires_existing_keys: Callable[[str], bool],
) -> list[ScopeRefusal]:
    """The events of `(key_id, project_id)` pairs that break the write scope, given each known
    key's owning project (`owners`; unknown keys absent). Work is per distinct pair."""
    verdicts: dict[tuple[str, str], tuple[str, str] | None] = {}
    refused: list[ScopeRefusal] = []
    for position, pair in enumerate(events):
        verdict = verdicts.get(pair, ())
        if verdict == ():
            verdict = verdicts[pair] = _judge(pair[0], pair[1], owners, requires_existing_keys)
        if verdict is not None:
            refused.append(ScopeRefusal(position, *verdict))
    return refused


def _judge(
    key_id: str, project_id: str, owners: Mapping[str, str], requires_existing_keys: Callable[[str], bool]
) -> tuple[str, str] | None:
    owner = owners.get(key_id)
    if owner is not None and owner != project_id:
        return KEY_NOT_IN_PROJECT, f"key_id {key_id!r} is not a key of project {project_id!r}"
    if owner is None and key_id not in PLACEHOLDER_KEY_IDS and requires_existing_keys(project_id):
        return UNKNOWN_KEY, (
            f"project {project_id!r} takes usage of its existing keys only; key_id {key_id!r} is not one of them"
        )
    return None


def lookup_projects(engine: Engine, key_ids: Iterable[str]) -> dict[str, str]:
    """The project of each of `key_ids` the store at `engine` knows; one indexed query per 500 ids.
    A store without the keys table yet (never migrated: no key was ever created) knows none."""
    wanted = sorted(set(key_ids))
    found: dict[str, str] = {}
    if not wanted:
        return found
    try:
        with engine.connect() as connection:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                query = select(api_keys.c.id, api_keys.c.project_id).where(api_keys.c.id.in_(chunk))
                found.update({row.id: row.project_id for row in connection.execute(query)})
    except Exception:
        if not inspect(engine).has_table(api_keys.name):
            return {}
        raise
    return found


class KeyOwners:
    """Cached key -> project lookups (see the module docstring)."""

    def __init__(
        self,
        lookup: Callable[[Iterable[str]], Mapping[str, str]],
        *,
        negative_ttl_seconds: float = 30.0,
        max_keys: int = 1_000_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._negative_ttl = negative_ttl_seconds
        self._max_keys = max_keys
        self._clock = clock
        self._known: OrderedDict[str, str] = OrderedDict()
        self._unknown_until: dict[str, float] = {}
        self.lookups = 0
        """Store round trips so far (for tests and metrics)."""

    def owners(self, key_ids: Iterable[str]) -> dict[str, str]:
        """The owning project of each known key among `key_ids` (raises what the store raises)."""
        now = self._clock()
        distinct = set(key_ids)
        known = self._known
        found = {key: known[key] for key in distinct if key in known}
        ask = [
            key for key in distinct
            if key not in found and self._unknown_until.get(key, 0.0) <= now
        ]
        if ask:
            self.lookups += 1
            answered = self._lookup(ask)
            for key in ask:
                owner = answered.get(key)
                if owner is None:
                    self._unknown_until[key] = now + self._negative_ttl
                else:
                    self._unknown_until.pop(key, None)
                    known[key] = owner
                    found[key] = owner
            while len(known) > self._max_keys:
                known.popitem(last=False)
            if len(self._unknown_until) > self._max_keys:
                self._unknown_until = {k: t for k, t in self._unknown_until.items() if t > now}
        return found
