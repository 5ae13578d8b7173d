"""Apply the numbered migrations under sql/clickhouse/ idempotently, recording what ran."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from keytrail.sql.backends import ClickHouseBackend

MIGRATIONS_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version
"""

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One numbered DDL file."""

    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """The file's statements, split on semicolons that end a line; comments dropped."""
        lines = [line for line in self.sql.splitlines() if not line.lstrip().startswith("--")]
        return [stmt.strip() for stmt in re.split(r";\s*$", "\n".join(lines), flags=re.M) if stmt.strip()]


def available_migrations() -> list[Migration]:
    """Every migration shipped with KeyTrail, in version order."""
    folder = resources.files("keytrail.sql") / "clickhouse"
    found = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def applied_versions(backend: ClickHouseBackend) -> set[int]:
    """Versions already recorded in `schema_migrations`."""
    backend.command(MIGRATIONS_TABLE_DDL)
    return {int(row["version"]) for row in backend.query("SELECT version FROM schema_migrations FINAL")}


def migrate(backend: ClickHouseBackend) -> list[Migration]:
    """Apply what is missing; returns the migrations applied now (empty when up to date)."""
    done = applied_versions(backend)
    applied = []
    for migration in available_migrations():
        if migration.version in done:
            continue
        for statement in migration.statements():
            backend.command(statement)
        backend.command(
            "INSERT INTO schema_migrations (version, name) VALUES ({version:UInt32}, {name:String})",
            {"version": migration.version, "name": migration.name},
        )
        applied.append(migration)
    return applied
