"""Emitters and verifiers built from KeyTrail's settings (`KEYTRAIL_*` environment variables)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from keytrail.producers.emitter import UsageEmitter
from keytrail.producers.verifiers import KeyVerifier

if TYPE_CHECKING:
    from keytrail.settings import Settings

"""A KeyTrail key with the ingest scope, sent by the HTTP transport (optional in embedded mode)."""


def _settings(settings: Settings | None) -> Settings:
    if settings is not None:
        return settings
    from keytrail.settings import get_settings

    return get_settings()


def emitter_from_settings(
    settings: Settings | None = None,
    *,
    transport: Literal["kafka", "http"] | None = None,
    topic: str | None = None,
) -> UsageEmitter:
    """Production mode: `KafkaEmitter` on `kafka_bootstrap`; embedded mode: `HttpEmitter` to `api_url`
    (with `KEYTRAIL_INGEST_KEY` as bearer token when set). Spools live under `data_dir/spool`."""
    settings = _settings(settings)
    chosen = transport or ("kafka" if settings.mode.value == "production" else "http")
    spool_base = settings.data_dir / "spool"
    if chosen == "kafka":
        from keytrail.producers.kafka_emitter import KafkaEmitter
        from keytrail.schemas.topics import Topics

        name = topic or Topics.USAGE.value
        return KafkaEmitter(settings.kafka_bootstrap, topic=name, spool_base=spool_base / f"kafka-{name}")
    from keytrail.producers.http_emitter import HttpEmitter

    return HttpEmitter(
        settings.api_url, ingest_key=_ingest_key(settings), spool_base=spool_base / "http"
    )


def verifier_from_settings(
    settings: Settings | None = None, *, mode: Literal["local", "remote"] = "local"
) -> KeyVerifier:
    """`local`: the key store at `keystore_url` (`KeyStore.verify`, cached); `remote`: the console's
    `POST {api_url}/v1/verify`, authenticated with `KEYTRAIL_INGEST_KEY`."""
    settings = _settings(settings)
    if mode == "remote":
        from keytrail.producers.verifiers import RemoteKeyVerifier

        return RemoteKeyVerifier(settings.api_url, credential=_ingest_key(settings))
    from keytrail.keystore.store import KeyStore
    from keytrail.producers.verifiers import LocalKeyVerifier

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = KeyStore.open(settings.keystore_url, settings.hashing_secret(), env=settings.key_env)
    return LocalKeyVerifier(store)


def _ingest_key(settings: Settings) -> str | None:
    """`KEYTRAIL_INGEST_KEY`, through the settings object."""
    return settings.ingest_key.get_secret_value() if settings.ingest_key is not None else None
