"""What a canned query takes: parameter specs read from the comment header of its .sql file.

Each file under sql/queries/ starts with a header like

    -- key_ips: the addresses one key was used from, with first and last seen.
    -- Answers: ...free text, any number of lines...
    -- Parameters:
    --   key_id   String                the key's public id
    --   since    DateTime = 7d         start of the window (inclusive)
    --   limit    UInt32[1..10000] = 100 rows to return

and binds every parameter in its SQL with ClickHouse's `{name:Type}` syntax. The header is the
one place a parameter is defined: validation, the CLI's help, the HTTP API's docs and the
placeholder check (`QuerySpec.check_placeholders`) all come from it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_STRING = 1000
"""Longest string parameter accepted (key ids, routes and user agents are shorter)."""
MAX_ARRAY = 1_000_000
"""Most elements an array parameter may carry (a key store's key list)."""

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_HEADER_TITLE = re.compile(r"^--\s*([a-z0-9_]+):\s*(.+)$")
_PARAM_LINE = re.compile(
    r"^--\s{2,}(?P<name>[a-z_][a-z0-9_]*)\s+(?P<type>[A-Za-z][A-Za-z0-9]*(?:\([^)]*\)|\[[^\]]*\])?)"
    r"(?:\s*=\s*(?P<default>'[^']*'|\S+))?\s*(?P<doc>.*)$"
)
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):([^{}]+)\}")

CLICKHOUSE_TYPES = {
    "String": "String",
    "Project": "String",
    "Enum": "String",
    "Timezone": "String",
    "UInt32": "UInt32",
    "Float64": "Float64",
    "DateTime": "DateTime64(3, 'UTC')",
    "Array(String)": "Array(String)",
    "Array(DateTime)": "Array(DateTime64(3, 'UTC'))",
}
"""Header type -> the ClickHouse type its placeholder must use."""


class QueryError(ValueError):
    """A canned query was asked for wrongly; the message says what to change."""


class UnknownQuery(QueryError, KeyError):
    """No canned query has this name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class InvalidParameter(QueryError):
    """A parameter is missing, unknown, of the wrong type or out of range."""

    def __init__(self, query: str, name: str, problem: str) -> None:
        super().__init__(f"{query}: parameter {name!r} {problem}")
        self.query = query
        self.name = name
        self.problem = problem


def format_clickhouse_time(value: datetime) -> str:
    """UTC `YYYY-MM-DD hh:mm:ss.sss`, the text both backends bind to DateTime64(3) unchanged."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def parse_time(value: Any, now: datetime) -> datetime:
    """A point in time: a datetime, `now`, a duration back from now (`90m`, `24h`, `7d`, `2w`) or ISO 8601.

    ISO values without a zone are taken as UTC.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("needs a timezone (e.g. 2026-11-02T09:00:00Z)")
        return value.astimezone(UTC)
    if not isinstance(value, str):
        raise ValueError(f"expected a time, got {type(value).__name__}")
    text = value.strip()
    if text.lower() == "now":
        return now
    match = _RELATIVE.match(text)
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not a time: use ISO 8601 (2026-11-02T09:00:00Z), now, or 90m / 24h / 7d / 2w ago") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter: its header type, default (None = required) and description."""

    name: str
    type: str
    default: str | None
    doc: str
    choices: tuple[str, ...] = ()
    bounds: tuple[int, int] | None = None

    @property
    def base_type(self) -> str:
        """The type without its choices or bounds: `Enum`, `UInt32`, `Array(String)`, ..."""
        if self.type.startswith("Enum"):
            return "Enum"
        return self.type.split("[", 1)[0]

    @property
    def clickhouse_type(self) -> str:
        return CLICKHOUSE_TYPES[self.base_type]

    @property
    def required(self) -> bool:
        return self.default is None

    @classmethod
    def parse(cls, name: str, type_text: str, default: str | None, doc: str) -> ParamSpec:
        choices: tuple[str, ...] = ()
        bounds = None
        if type_text.startswith("Enum(") and type_text.endswith(")"):
            choices = tuple(c.strip() for c in type_text[5:-1].split("|"))
        elif "[" in type_text:
            low, high = type_text.split("[", 1)[1].rstrip("]").split("..")
            bounds = (int(low), int(high))
        spec = cls(name, type_text, None if default is None else default.strip("'"), doc.strip(), choices, bounds)
        if spec.base_type not in CLICKHOUSE_TYPES:
            raise ValueError(f"parameter {name}: unknown type {type_text!r}; known: {', '.join(CLICKHOUSE_TYPES)}")
        return spec

    def coerce(self, query: str, value: Any, now: datetime) -> Any:
        """The value to bind, checked against the type; raises InvalidParameter."""
        try:
            return self._coerce(value, now)
        except InvalidParameter:
            raise
        except (TypeError, ValueError) as exc:
            raise InvalidParameter(query, self.name, str(exc)) from None

    def _coerce(self, value: Any, now: datetime) -> Any:
        kind = self.base_type
        if kind in ("String", "Project", "Enum", "Timezone"):
            if not isinstance(value, str):
                raise TypeError(f"must be a string, got {type(value).__name__}")
            if len(value) > MAX_STRING:
                raise ValueError(f"is longer than {MAX_STRING} characters")
            if kind == "Enum" and value not in self.choices:
                shown = ", ".join(repr(c) for c in self.choices)
                raise ValueError(f"must be one of {shown}; got {value!r}")
            if kind == "Timezone":
                try:
                    ZoneInfo(value)
                except (ZoneInfoNotFoundError, ValueError):
                    raise ValueError(f"{value!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None
            return value
        if kind == "UInt32":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise TypeError(f"must be a whole number, got {type(value).__name__}")
            number = int(value)
            low, high = self.bounds or (0, 2**32 - 1)
            if not low <= number <= high:
                raise ValueError(f"must be between {low} and {high}; got {number}")
            return number
        if kind == "Float64":
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise TypeError(f"must be a number, got {type(value).__name__}")
            return float(value)
        if kind == "DateTime":
            return format_clickhouse_time(parse_time(value, now))
        if kind in ("Array(String)", "Array(DateTime)"):
            if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
                raise TypeError(f"must be a list, got {type(value).__name__}")
            if len(value) > MAX_ARRAY:
                raise ValueError(f"has more than {MAX_ARRAY} elements")
            if kind == "Array(DateTime)":
                return [format_clickhouse_time(parse_time(v, now)) for v in value]
            for element in value:
                if not isinstance(element, str) or len(element) > MAX_STRING:
                    raise ValueError(f"must hold strings of at most {MAX_STRING} characters")
            return list(value)
        raise AssertionError(kind)  # pragma: no cover - parse() refuses unknown types


@dataclass(frozen=True)
class QuerySpec:
    """A canned query: its name, what it answers, its parameters and its SQL."""

    name: str
    title: str
    answers: str
    params: tuple[ParamSpec, ...]
    sql: str
    param_by_name: Mapping[str, ParamSpec] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "param_by_name", {p.name: p for p in self.params})

    @classmethod
    def parse(cls, name: str, text: str) -> QuerySpec:
        """Read the header of `sql/queries/<name>.sql`."""
        lines = text.splitlines()
        if not lines or not (title := _HEADER_TITLE.match(lines[0])) or title.group(1) != name:
            raise ValueError(f"{name}.sql must start with '-- {name}: <what it answers>'")
        answers: list[str] = []
        params: list[ParamSpec] = []
        section = "answers"
        for line in lines[1:]:
            if not line.startswith("--"):
                break
            body = line[2:].strip()
            if body.lower().startswith("parameters:"):
                section = "params"
                continue
            if section == "params":
                match = _PARAM_LINE.match(line)
                if not match:
                    raise ValueError(f"{name}.sql: cannot read parameter line {line!r}")
                params.append(ParamSpec.parse(match["name"], match["type"], match["default"], match["doc"]))
            else:
                answers.append(body.removeprefix("Answers:").strip())
        spec = cls(name, title.group(2).strip(), " ".join(a for a in answers if a), tuple(params), text)
        spec.check_placeholders()
        return spec

    def check_placeholders(self) -> None:
        """Every `{name:Type}` in the SQL is declared with the matching type, and every declared one is used."""
        used: dict[str, str] = {}
        for pname, ptype in _PLACEHOLDER.findall(_strip_comments(self.sql)):
            used.setdefault(pname, ptype.strip())
            if used[pname] != ptype.strip():
                raise ValueError(f"{self.name}.sql binds {pname} as both {used[pname]} and {ptype}")
        declared = {p.name: p.clickhouse_type for p in self.params}
        for pname, ptype in used.items():
            if pname not in declared:
                raise ValueError(f"{self.name}.sql binds {{{pname}:{ptype}}} but its header does not declare {pname}")
            if ptype != declared[pname]:
                raise ValueError(f"{self.name}.sql binds {pname} as {ptype}; its header type needs {declared[pname]}")
        unused = set(declared) - set(used)
        if unused:
            raise ValueError(f"{self.name}.sql declares {', '.join(sorted(unused))} but never binds it")
        if "project" not in declared or self.param_by_name["project"].base_type != "Project":
            raise ValueError(f"{self.name}.sql must take `project Project` so every read can be scoped to a project")

    def bind(self, values: Mapping[str, Any], now: datetime | None = None) -> dict[str, Any]:
        """Checked, typed values for every parameter (defaults filled in); raises InvalidParameter."""
        now = now or datetime.now(UTC)
        unknown = set(values) - set(self.param_by_name)
        if unknown:
            name = sorted(unknown)[0]
            raise InvalidParameter(self.name, name, f"is not a parameter of {self.name}; it takes {', '.join(self.param_by_name)}")
        bound: dict[str, Any] = {}
        for spec in self.params:
            value = values.get(spec.name)
            if value is None:
                if spec.required:
                    raise InvalidParameter(self.name, spec.name, f"is required ({spec.doc})")
                value = spec.default
            bound[spec.name] = spec.coerce(self.name, value, now)
        self._check_together(bound)
        return bound

    def _check_together(self, bound: dict[str, Any]) -> None:
        if "since" in bound and "until" in bound and bound["since"] >= bound["until"]:
            raise InvalidParameter(self.name, "since", f"({bound['since']}) must be before until ({bound['until']})")
        arrays = [spec.name for spec in self.params if spec.base_type.startswith("Array")]
        lengths = {len(bound[name]) for name in arrays}
        if len(lengths) > 1:
            raise InvalidParameter(
                self.name, arrays[1], f"must have as many elements as {arrays[0]} (they describe the same keys)"
            )

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly description (for `--help`, the HTTP API's docs and docs/queries.md)."""
        return {
            "name": self.name,
            "title": self.title,
            "answers": self.answers,
            "parameters": [
                {"name": p.name, "type": p.type, "required": p.required, "default": p.default, "doc": p.doc}
                for p in self.params
            ],
        }


def _strip_comments(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
