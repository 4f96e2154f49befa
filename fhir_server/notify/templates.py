"""Notification templates (``string.Template``: ``$name`` placeholders).

Every template may use ``$tenant``, ``$resource_type``, ``$id``, ``$link`` (the resource's URL on
this server, readable only with a token), ``$subscription`` and ``$topic`` (a topic-based Subscription's
topic). Only a template flagged ``personal_data: true`` may use ``$resource`` (the resource's JSON) or ``$summary`` (its
narrative text): by default a notification carries a link, never clinical content.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from string import Template as _StringTemplate
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

NEUTRAL = frozenset({"tenant", "resource_type", "id", "link", "subscription", "topic"})
PERSONAL = frozenset({"resource", "summary"})


@dataclass(frozen=True, slots=True)
class Context:
    tenant: str
    resource_type: str
    id: str
    link: str
    subscription: str
    resource: dict[str, Any]
    topic: str = ""

    def values(self, personal: bool) -> dict[str, str]:
        values = {
            "tenant": self.tenant,
            "resource_type": self.resource_type,
            "id": self.id,
            "link": self.link,
            "subscription": self.subscription,
            "topic": self.topic,
        }
        if personal:
            div = str((self.resource.get("text") or {}).get("div") or "")
            values["summary"] = re.sub(r"<[^>]+>", " ", div).strip()
            values["resource"] = json.dumps(self.resource, indent=2)
        return values


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    subject: str = Field("", max_length=200)
    body: str = Field(..., max_length=20_000)
    personal_data: bool = False

    @model_validator(mode="after")
    def _placeholders_allowed(self) -> Template:
        allowed = NEUTRAL | PERSONAL if self.personal_data else NEUTRAL
        for text in (self.subject, self.body):
            names = {m.group("named") or m.group("braced") for m in _StringTemplate.pattern.finditer(text)} - {None}
            unknown = names - allowed
            if unknown:
                why = " (set personal_data: true to allow it)" if unknown & PERSONAL else ""
                raise ValueError(f"template placeholder(s) {sorted(unknown)} not allowed{why}")
        return self

    def render(self, context: Context) -> tuple[str, str]:
        """(subject, body) with the placeholders filled in."""
        values = context.values(self.personal_data)
        return _StringTemplate(self.subject).safe_substitute(values), _StringTemplate(self.body).safe_substitute(values)


DEFAULT_EMAIL = Template(
    subject="DermBridge: $resource_type updated",
    body="A $resource_type you subscribed to has changed.\n\nOpen it in DermBridge: $link\n\n"
    "(Subscription/$subscription; this message carries no clinical details.)\n",
)
DEFAULT_WEBHOOK = Template(subject="", body="DermBridge: a $resource_type you subscribed to has changed: $link")
DEFAULT_REVIEWER_EMAIL = Template(
    subject="DermBridge: an urgent case is waiting for review",
    body="An urgent case is waiting in your DermBridge review queue.\n\nOpen it: $link\n\n"
    "(This message carries no clinical details.)\n",
)
