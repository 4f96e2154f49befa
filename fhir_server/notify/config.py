"""Per-tenant notification settings: the tenant setting ``notify`` (``dermbridge notify set``, kept
in the tenant's database and seen by every process without a restart), else the tenant's entry in
the JSON file ``DERMBRIDGE_NOTIFY_CONFIG`` (read at start), else the built-in templates. The file:

    {"default": {
       "smtp": {"host": "smtp.example.org", "port": 587, "tls": "starttls",
                "username": "dermbridge", "password_env": "SMTP_PASSWORD", "sender": "noreply@example.org"},
       "templates": {"email": {"subject": "...", "body": "...", "personal_data": false},
                     "webhook": {"body": "...", "personal_data": false}},
       "suppressed": ["left@example.org"],
       "preferences": {"gp@example.org": {"email": false}},
       "reviewer_email": {"urgencies": ["stat", "asap", "urgent"],
                          "template": {"subject": "...", "body": "... $link", "personal_data": false}}}}

``reviewer_email`` is opt-in (absent: no reviewer is emailed): when a review of one of ``urgencies`` opens
for a tier, each Practitioner who may review the tier now (an active, unexpired PractitionerRole for it) is
emailed at their ``Practitioner.telecom`` email, unless suppressed or their preference turns email off.

A tenant without an entry gets the built-in templates and no SMTP server (email subscriptions
then fail and end in ``error``). Passwords are named by environment variable, never written here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fhir_server.notify.templates import DEFAULT_EMAIL, DEFAULT_REVIEWER_EMAIL, DEFAULT_WEBHOOK, Template
from fhir_server.storage.port import TenantReader, TenantStore
from fhir_server.tenant_settings import read_setting, write_setting

SETTING = "notify"


class SmtpSettings(BaseModel):
    """Where mail goes. ``tls``: none (plain), starttls (RFC 3207 upgrade) or implicit (SMTPS, RFC 8314)."""

    model_config = ConfigDict(extra="forbid")
    host: str
    port: int = Field(25, ge=1, le=65535)
    tls: Literal["none", "starttls", "implicit"] = "starttls"
    username: str | None = None
    password_env: str | None = None
    sender: str = Field(..., max_length=320)
    timeout_seconds: float = Field(30.0, gt=0, le=300)
    ca_file: Path | None = None  # verify the server against this CA instead of the system store

    @property
    def password(self) -> str | None:
        return os.environ.get(self.password_env) if self.password_env else None


class Templates(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Template = DEFAULT_EMAIL
    webhook: Template = DEFAULT_WEBHOOK


Urgency = Literal["stat", "asap", "urgent", "routine"]


class ReviewerEmail(BaseModel):
    """Opt-in email to the eligible reviewers when a review of these urgencies opens (request-priority codes)."""

    model_config = ConfigDict(extra="forbid")
    urgencies: list[Urgency] = Field(default_factory=lambda: list[Urgency](["stat", "asap", "urgent"]), max_length=4)
    template: Template = DEFAULT_REVIEWER_EMAIL


class TenantNotifications(BaseModel):
    model_config = ConfigDict(extra="forbid")
    smtp: SmtpSettings | None = None
    templates: Templates = Templates()
    reviewer_email: ReviewerEmail | None = None
    suppressed: list[str] = Field(default_factory=list, max_length=100_000)
    preferences: dict[str, dict[Literal["email", "webhook"], bool]] = Field(default_factory=dict)

    def wants(self, recipient: str, channel: Literal["email", "webhook"]) -> bool:
        """False when the recipient is suppressed or has turned this channel off."""
        address = recipient.strip().lower()
        if address in {s.strip().lower() for s in self.suppressed}:
            return False
        prefs = {k.strip().lower(): v for k, v in self.preferences.items()}.get(address, {})
        return prefs.get(channel, True)


class NotifyConfig(BaseModel):
    tenants: dict[str, TenantNotifications] = Field(default_factory=dict)

    def tenant(self, name: str) -> TenantNotifications:
        return self.tenants.get(name) or TenantNotifications()

    @classmethod
    def load(cls, path: Path | None) -> NotifyConfig:
        """The file's settings; no file: built-in templates, no SMTP."""
        if path is None:
            return cls()
        return cls(tenants=json.loads(path.read_text(encoding="utf-8")))


async def tenant_notifications(reader: TenantReader, tenant: str, fallback: NotifyConfig) -> TenantNotifications:
    """The tenant's settings: its ``notify`` setting if set, else the file's entry."""
    stored = await read_setting(reader, SETTING)
    if stored is None:
        return fallback.tenant(tenant)
    return TenantNotifications.model_validate(stored)


async def set_tenant_notifications(store: TenantStore, value: object | None) -> TenantNotifications | None:
    """Validate and store the tenant's settings (None: back to the file's); raises ValueError."""
    if value is None:
        await write_setting(store, SETTING, None)
        return None
    settings = TenantNotifications.model_validate(value)
    await write_setting(store, SETTING, settings.model_dump(mode="json", exclude_defaults=True))
    return settings
