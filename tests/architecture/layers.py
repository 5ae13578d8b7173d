"""KeyTrail's layers and the directions imports may point in (docs/architecture.md explains them).

Walks the source folders with `ast`, so it needs nothing installed and sees imports inside
functions too. Used by `test_import_directions.py`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PACKAGE_DIRS = {
    "keytrail": "keytrail",
    "keytrail.schemas": "schemas",
    "keytrail.producers": "producers",
    "keytrail.stream_processors": "stream_processors",
    "keytrail.keystore": "keystore",
    "keytrail.console": "console",
    "keytrail.sql": "sql",
}
"""Import name -> repository folder, as in pyproject.toml's package-dir."""

ALLOWED: dict[str, frozenset[str]] = {
    "settings": frozenset(),
    "schemas": frozenset(),
    "core": frozenset({"schemas"}),
    "sql": frozenset({"schemas", "settings"}),
    "keystore": frozenset({"schemas", "settings"}),
    "producers": frozenset({"schemas", "settings"}),
    "stream": frozenset({"schemas", "settings", "core", "sql", "keystore"}),
    "front": frozenset({"schemas", "settings", "producers"}),
    "entry": frozenset({"console"}),
    "console": frozenset({"schemas", "settings", "core", "sql", "keystore", "producers", "stream"}),
}
"""Layer -> the other layers it may import (its own layer is always allowed)."""

LAZY_EXCEPTIONS = {("keytrail.producers.factory", "keystore")}
"""(module, layer) pairs allowed inside a function only: `verifier_from_settings(mode="local")`
opens the key store, which an SDK-only install does not have (the remote verifier needs nothing)."""

IO_PACKAGES = frozenset(
    {"confluent_kafka", "faust", "aiokafka", "chdb", "clickhouse_connect", "pyarrow", "sqlalchemy",
     "alembic", "psycopg", "httpx", "fastapi", "starlette", "uvicorn", "rocksdict"}
)
"""Third-party I/O the pure core (and the contracts) must never import."""

NOT_IN_THE_SDK = frozenset(
    {"faust", "aiokafka", "chdb", "clickhouse_connect", "pyarrow", "sqlalchemy", "alembic", "psycopg",
     "fastapi", "uvicorn", "rocksdict", "typer", "rich", "prometheus_client", "yaml"}
)
"""Packages `pip install keytrail` leaves out: the SDK's modules must not import them at all."""


def layer_of(module: str) -> str:
    """The layer a `keytrail.…` module belongs to."""
    if module == "keytrail.settings":
        return "settings"
    if module == "keytrail.command":
        return "entry"
    if module == "keytrail" or module.startswith("keytrail.") and module.count(".") == 1 and \
            module.split(".")[1] not in {p.split(".")[1] for p in PACKAGE_DIRS if "." in p}:
        return "front"
    part = module.split(".")[1]
    if part == "stream_processors":
        sub = module.split(".")[2] if module.count(".") >= 2 else ""
        return "core" if sub in {"core", "detectors"} else "stream"
    return {"schemas": "schemas", "producers": "producers", "keystore": "keystore", "console": "console",
            "sql": "sql"}[part]


@dataclass(frozen=True)
class ImportSite:
    """One import statement in a KeyTrail module."""

    module: str
    """The importing module (`keytrail.…`)."""
    imported: str
    """The imported module's full name."""
    path: Path
    line: int
    lazy: bool
    """Inside a function (or under `if TYPE_CHECKING:`), not at module import time."""


def module_name(path: Path) -> str:
    """The import name of a source file."""
    relative = path.relative_to(REPO)
    for name, folder in PACKAGE_DIRS.items():
        if relative.parts[0] == folder:
            parts = [*name.split("."), *relative.with_suffix("").parts[1:]]
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join(parts)
    raise ValueError(f"{path} is not in a package folder")


def source_files() -> Iterator[Path]:
    """Every Python file of the product."""
    for folder in PACKAGE_DIRS.values():
        yield from sorted((REPO / folder).rglob("*.py"))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_sites(path: Path) -> Iterator[ImportSite]:
    """The imports of one file, resolved to full module names."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))

    def visit(node: ast.AST, lazy: bool) -> Iterator[ImportSite]:
        for child in ast.iter_child_nodes(node):
            child_lazy = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) or (
                isinstance(child, ast.If) and _is_type_checking(child))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield ImportSite(module, alias.name, path, child.lineno, lazy)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    target = ".".join([*base, *(child.module.split(".") if child.module else [])])
                else:
                    target = child.module or ""
                yield ImportSite(module, target, path, child.lineno, lazy)
            yield from visit(child, child_lazy)

    yield from visit(tree, False)


def violations() -> list[str]:
    """Every import that points the wrong way, as `file:line: what and why`."""
    found = []
    for path in source_files():
        for site in import_sites(path):
            where = f"{site.path.relative_to(REPO)}:{site.line}"
            source_layer = layer_of(site.module)
            top = site.imported.split(".")[0]
            if top == "keytrail" and site.imported != "keytrail":
                target_layer = layer_of(site.imported)
                if target_layer == source_layer or target_layer in ALLOWED[source_layer]:
                    continue
                if site.lazy and (site.module, target_layer) in LAZY_EXCEPTIONS:
                    continue
                found.append(f"{where}: {site.module} ({source_layer}) imports {site.imported} ({target_layer})")
            elif top in (("schemas", "producers", "stream_processors", "keystore", "console", "sql")):
                found.append(f"{where}: {site.module} imports {site.imported} by its old top-level name")
            elif source_layer in {"core", "schemas", "settings"} and top in IO_PACKAGES:
                found.append(f"{where}: {site.module} ({source_layer}) imports the I/O package {top}")
            elif source_layer in {"producers", "schemas", "settings", "front"} and top in NOT_IN_THE_SDK:
                found.append(f"{where}: {site.module} ({source_layer}) imports {top}, which the SDK install lacks")
    return found
