"""ClickHouse DDL (numbered migrations), canned queries and the two ClickHouse backends.

SQL lives here as files, loaded by name, with bound parameters; never string-formatted input.
"""

from importlib import resources

from keytrail.sql.backends import ChdbBackend, ClickHouseBackend, ServerBackend, open_clickhouse

__all__ = ["ChdbBackend", "ClickHouseBackend", "ServerBackend", "load_query", "open_clickhouse"]


def load_query(name: str) -> str:
    """The text of `sql/queries/<name>.sql`; raises KeyError with the known names when missing."""
    path = resources.files("keytrail.sql") / "queries" / f"{name}.sql"
    if not path.is_file():
        known = sorted(p.name.removesuffix(".sql") for p in (resources.files("keytrail.sql") / "queries").iterdir())
        raise KeyError(f"no canned query named {name!r}; known: {', '.join(known)}")
    return path.read_text()
