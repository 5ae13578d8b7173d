"""The security team's canned queries: one .sql file each, loaded by name, parameters bound, never formatted.

`run_query(backend, "key_ips", key_id=..., since="7d")` validates the parameters against the
file's header and returns the rows; the CLI (`keytrail usage …`) and the HTTP API both use it.
"""

from keytrail.sql.queries.runner import query_spec, query_specs, run_query
from keytrail.sql.queries.spec import InvalidParameter, QueryError, QuerySpec, UnknownQuery, parse_time

__all__ = [
    "InvalidParameter",
    "QueryError",
    "QuerySpec",
    "UnknownQuery",
    "parse_time",
    "query_spec",
    "query_specs",
    "run_query",
]
