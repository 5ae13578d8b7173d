"""KeyTrail's one settings object. Every option is a `KEYTRAIL_*` environment variable."""

from enum import StrEnum
from functools import lru_cache
from ipaddress import ip_network
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class RunMode(StrEnum):
    """`embedded`: one process, chDB + SQLite. `production`: Kafka, ClickHouse server, Postgres."""

    EMBEDDED = "embedded"
    PRODUCTION = "production"


class MissingSecret(RuntimeError):
    """Production mode needs KEYTRAIL_SECRET to hash keys; refusing to start without it."""


DEV_SECRET = "keytrail-embedded-development-secret-not-for-production"


class Settings(BaseSettings):
    """Configuration from the environment (prefix `KEYTRAIL_`) or a `.env` file.

    Store URLs choose the backend: `chdb://PATH` or `http(s)://…` for ClickHouse,
    `sqlite:///PATH` or `postgresql://…` for the key store.
    """

    model_config = SettingsConfigDict(env_prefix="KEYTRAIL_", env_file=".env", extra="ignore")

    mode: RunMode = RunMode.EMBEDDED
    data_dir: Path = Field(default=Path(".keytrail"), description="where the embedded default keeps its data")
    clickhouse_url: str = Field(default="", description="chdb://PATH or http(s)://user:pass@host:8123/db")
    keystore_url: str = Field(default="", description="sqlite:///PATH or postgresql://user@host/db")
    kafka_bootstrap: str = "127.0.0.1:9092"
    secret: SecretStr | None = Field(default=None, description="HMAC key for stored key hashes")
    ingest_key: SecretStr | None = Field(
        default=None, description="KeyTrail key with the ingest scope, for HTTP emitters and remote verification"
    )
    api_key: SecretStr | None = Field(
        default=None, description="KeyTrail key the CLI sends to a running console for admin actions "
        "(marking signals expected); default: the embedded DATA_DIR/admin.key"
    )
    key_env: str = Field(default="live", pattern=r"^[a-z0-9]{1,10}$", description="the <env> in kt_<env>_…")
    api_url: str = Field(default="http://127.0.0.1:8477", description="where `keytrail serve` listens")
    worker_batch_size: int = Field(default=5000, ge=1, description="most Kafka records in one worker batch")
    worker_batch_events: int = Field(
        default=200_000, ge=1, description="most events in one worker batch (an envelope carries up to 500)"
    )
    worker_batch_seconds: float = Field(default=0.5, gt=0, description="longest wait to fill a worker batch")
    worker_state_cache_keys: int = Field(
        default=50_000, ge=0, description="decoded key states the worker keeps between batches (~5 KB each); 0 = all"
    )
    allowed_lateness_seconds: int = Field(default=300, ge=0)
    worker_app_id: str = Field(default="keytrail-worker", description="Faust app id: consumer group and table prefix")
    projector_group_id: str = Field(default="keytrail-projector", description="consumer group of the projector")
    usage_partitions: int = Field(default=8, ge=1, description="partitions of keytrail.usage.v1 (and the state table)")
    faust_store: str = Field(default="memory://", description="memory:// or rocksdb:// for Faust tables")
    log_level: str = "INFO"
    trusted_proxies: str = Field(
        default="",
        description=(
            "comma-separated addresses/CIDRs of reverse proxies whose X-Forwarded-For / Forwarded "
            "headers are believed; empty = the TCP peer is always the client"
        ),
    )
    ingest_existing_keys_only: str = Field(
        default="",
        description=(
            "comma-separated project ids whose ingest accepts only key ids that exist in the key "
            "store (besides the middleware's 'anonymous'/'unknown'); '*' = every project"
        ),
    )
    keystore_busy_timeout_seconds: float = Field(
        default=1.5, gt=0, le=60, description="longest wait for a SQLite key store locked by another process"
    )
    max_request_body_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="largest request body the console reads (413 above it)"
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: str) -> str:
        for part in value.split(","):
            if part.strip():
                try:
                    ip_network(part.strip(), strict=False)
                except ValueError:
                    raise ValueError(
                        f"KEYTRAIL_TRUSTED_PROXIES: {part.strip()[:64]!r} is not an address or CIDR"
                    ) from None
        return value

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> "Settings":
        if not self.clickhouse_url:
            self.clickhouse_url = f"chdb://{self.data_dir / 'chdb'}"
        if not self.keystore_url:
            self.keystore_url = f"sqlite:///{self.data_dir / 'keys.db'}"
        return self

    def trusted_proxy_list(self) -> list[str]:
        """`trusted_proxies` as a list of addresses/CIDRs."""
        return [part.strip() for part in self.trusted_proxies.split(",") if part.strip()]

    def requires_existing_keys(self, project_id: str) -> bool:
        """Whether ingest for `project_id` accepts only key ids the key store knows."""
        projects = {part.strip() for part in self.ingest_existing_keys_only.split(",") if part.strip()}
        return "*" in projects or project_id in projects

    def hashing_secret(self) -> bytes:
        """The key-hashing secret; a fixed development secret only in embedded mode."""
        if self.secret is not None and self.secret.get_secret_value():
            return self.secret.get_secret_value().encode()
        if self.mode is RunMode.PRODUCTION:
            raise MissingSecret(
                "KEYTRAIL_SECRET is not set: production mode needs a server secret to hash API keys "
                "(generate one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        return DEV_SECRET.encode()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
