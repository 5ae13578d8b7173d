"""The `keytrail` CLI, HTTP API and dashboard; configuration; the embedded runner."""
