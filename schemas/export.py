"""JSON Schema export, so producers in any language can validate against the contracts."""

import json
from pathlib import Path

from pydantic import BaseModel

from keytrail.schemas.envelope import UsageEnvelope
from keytrail.schemas.keys import KeyRecord
from keytrail.schemas.last_used import LastUsed
from keytrail.schemas.lifecycle import KeyLifecycleEvent
from keytrail.schemas.signals import Signal
from keytrail.schemas.usage import KeyUsageEvent

EXPORTED_MODELS: dict[str, type[BaseModel]] = {
    "key-usage-event.v1": KeyUsageEvent,
    "usage-envelope.v1": UsageEnvelope,
    "last-used.v1": LastUsed,
    "key-lifecycle-event.v1": KeyLifecycleEvent,
    "signal.v1": Signal,
    "key-record.v1": KeyRecord,
}


def json_schemas() -> dict[str, dict]:
    """The published JSON Schema of every contract, by file stem."""
    return {name: model.model_json_schema(mode="serialization") for name, model in EXPORTED_MODELS.items()}


def export_json_schemas(directory: Path) -> list[Path]:
    """Write one `<name>.schema.json` per contract into `directory`; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
