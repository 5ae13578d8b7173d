"""Alert rules: thresholds with defaults, overridden by a YAML file and by `KEYTRAIL_ALERT_*` variables.

Precedence (highest first): keyword arguments, environment (`KEYTRAIL_ALERT_IDLE_DAYS=60`,
dicts and lists as JSON), the YAML file named by `KEYTRAIL_ALERT_RULES`, the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from keytrail.schemas.signals import Severity, SignalKind

RULES_FILE_VARIABLE = "KEYTRAIL_ALERT_RULES"

IDLE = "idle"
NEVER_USED = "never_used"
EXPIRING_SOON = "expiring_soon"
INACTIVE_KEY_USE = "use_of_inactive_key"
QUOTA_PREFIX = "quota_"
SCANNED_RULE_PREFIXES = (IDLE, NEVER_USED, EXPIRING_SOON, QUOTA_PREFIX)
"""Rules whose condition the scanner re-evaluates, so their alerts resolve by themselves when it clears."""

ANOMALY_KINDS = (
    SignalKind.RATE_SPIKE,
    SignalKind.NEW_NETWORK,
    SignalKind.MANY_IPS,
    SignalKind.NEW_ROUTE,
    SignalKind.DENIAL_BURST,
    SignalKind.DORMANT_KEY_ACTIVE,
    SignalKind.UNUSUAL_HOUR,
)


def quota_rule(percent: int) -> str:
    """The rule name of a quota threshold: `quota_80`, `quota_100`."""
    return f"{QUOTA_PREFIX}{percent}"


def is_scanned_rule(rule: str) -> bool:
    return rule in (IDLE, NEVER_USED, EXPIRING_SOON) or rule.startswith(QUOTA_PREFIX)


class Channel(BaseModel):
    """Where notifications go: a generic signed JSON webhook or a Slack-compatible incoming webhook."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    url: str = Field(pattern=r"^https?://")
    format: Literal["webhook", "slack"] = "webhook"
    secret: SecretStr | None = Field(default=None, description="HMAC-SHA-256 secret for X-KeyTrail-Signature")
    min_severity: Severity = Severity.INFO


DEFAULT_ANOMALY_MIN_SEVERITY: dict[SignalKind, Severity] = {
    SignalKind.RATE_SPIKE: Severity.MEDIUM,
    SignalKind.NEW_NETWORK: Severity.MEDIUM,
    SignalKind.MANY_IPS: Severity.MEDIUM,
    SignalKind.NEW_ROUTE: Severity.HIGH,
    SignalKind.DENIAL_BURST: Severity.MEDIUM,
    SignalKind.DORMANT_KEY_ACTIVE: Severity.MEDIUM,
    SignalKind.UNUSUAL_HOUR: Severity.HIGH,
}


class AlertRules(BaseSettings):
    """Every alerting threshold and switch. Defaults are what the issue asks for; all are optional."""

    model_config = SettingsConfigDict(env_prefix="KEYTRAIL_ALERT_", extra="forbid", frozen=True)

    idle_days: int | None = Field(
        default=90, ge=1, description="alert when a used key has not been used for N days; null = off"
    )
    never_used_days: int | None = Field(
        default=30, ge=1, description="alert when a key is never used N days after creation"
    )
    expiring_within_days: int | None = Field(
        default=7, ge=0, description="alert when an active key expires within N days"
    )
    inactive_key_use: bool = Field(
        default=True, description="alert on any use of a revoked, expired or disabled key"
    )
    inactive_key_severity: Severity = Severity.HIGH
    quota_percents: list[int] = Field(
        default_factory=lambda: [80, 100], description="quota thresholds, percent of quota/day"
    )
    anomaly_min_severity: dict[SignalKind, Severity] = Field(
        default_factory=lambda: dict(DEFAULT_ANOMALY_MIN_SEVERITY),
        description="per signal kind, the lowest severity that opens an alert; kinds not listed use anomaly_default_min_severity",
    )
    anomaly_default_min_severity: Severity = Severity.MEDIUM
    cooldown_hours: float = Field(
        default=24.0, gt=0, description="re-notify an open, unacknowledged alert after this long"
    )
    channels: list[Channel] = Field(default_factory=list)
    webhook_url: str | None = Field(default=None, description="shorthand for one generic webhook channel")
    webhook_secret: SecretStr | None = None
    slack_webhook_url: str | None = Field(default=None, description="shorthand for one Slack channel")
    delivery_timeout_seconds: float = Field(default=5.0, gt=0)
    delivery_max_attempts: int = Field(default=5, ge=1)
    delivery_backoff_seconds: float = Field(
        default=0.5, ge=0, description="first retry delay, doubled each attempt"
    )
    delivery_max_backoff_seconds: float = Field(default=60.0, ge=0)
    scan_interval_seconds: float = Field(default=300.0, gt=0)
    auto_disable_on_critical: bool = Field(default=False, description="disable a key on a critical signal")
    auto_disable_idle_days: int | None = Field(
        default=None, ge=1, description="disable keys idle beyond N days; null = off"
    )

    @field_validator("quota_percents")
    @classmethod
    def _sorted_percents(cls, value: list[int]) -> list[int]:
        if any(p <= 0 for p in value):
            raise ValueError("quota percents must be positive")
        return sorted(set(value))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = os.environ.get(RULES_FILE_VARIABLE)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    def min_severity_for(self, kind: SignalKind) -> Severity:
        return self.anomaly_min_severity.get(kind, self.anomaly_default_min_severity)

    def all_channels(self) -> list[Channel]:
        """`channels` plus the shorthand webhook and Slack URLs."""
        found = list(self.channels)
        if self.webhook_url:
            found.append(
                Channel(name="webhook", url=self.webhook_url, format="webhook", secret=self.webhook_secret)
            )
        if self.slack_webhook_url:
            found.append(Channel(name="slack", url=self.slack_webhook_url, format="slack"))
        return found


class AlertRulesFileError(ValueError):
    """The rules file is missing or invalid; the message names the file and the field."""


def load_alert_rules(path: str | Path | None = None, **overrides: Any) -> AlertRules:
    """The rules from `path` (or `$KEYTRAIL_ALERT_RULES`), then the environment, then `overrides`."""
    previous = os.environ.get(RULES_FILE_VARIABLE)
    if path is not None:
        if not Path(path).is_file():
            raise AlertRulesFileError(f"alert rules file {str(path)!r} does not exist")
        os.environ[RULES_FILE_VARIABLE] = str(path)
    try:
        return AlertRules(**overrides)
    except ValueError as exc:
        source = os.environ.get(RULES_FILE_VARIABLE) or "the environment"
        raise AlertRulesFileError(f"invalid alert rules (from {source}): {exc}") from exc
    finally:
        if path is not None:
            if previous is None:
                os.environ.pop(RULES_FILE_VARIABLE, None)
            else:
                os.environ[RULES_FILE_VARIABLE] = previous
