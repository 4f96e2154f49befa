"""The scopes a person's token gets (SMART App Launch 2.x, scopes-and-launch-context.html).

Resource scopes: what the app asked for, narrowed to what the user's roles give **and** what the app's
registered roles give (an app never gets more than it was registered for, a user never more than their
roles). A person acts in the ``user/`` context, so a ``system/`` role counts as its ``user/`` form. With a
patient in context (EHR launch), ``patient/`` requests are answered by the same scopes bounded to that
patient. Launch-context and identity scopes are granted when asked and available: ``openid`` and
``fhirUser`` (an id_token naming the user), ``launch`` and ``launch/patient`` (only with a launch context
holding a patient: this server has no patient picker), ``offline_access`` / ``online_access`` (a refresh
token).
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.security.scopes import Scope, grant, role_scopes

IDENTITY = ("openid", "fhirUser", "profile")
REFRESH = ("offline_access", "online_access")


@dataclass(frozen=True, slots=True)
class Granted:
    resources: list[Scope]
    others: list[str]  # openid, fhirUser, launch, launch/patient, offline_access...

    @property
    def text(self) -> str:
        return " ".join([*(str(s) for s in self.resources), *self.others])

    @property
    def openid(self) -> bool:
        return "openid" in self.others

    @property
    def refresh(self) -> bool:
        return any(s in self.others for s in REFRESH)


def as_user(scopes: list[Scope]) -> list[Scope]:
    return [Scope("user", s.resource_type, s.permissions) if s.context == "system" else s for s in scopes]


def person_grant(
    requested: str, user_roles: tuple[str, ...], app_roles: tuple[str, ...], patient: str | None
) -> Granted:
    """What a person's token carries: ``requested`` narrowed by both the user's and the app's roles."""
    user = as_user(role_scopes(user_roles))
    app = as_user(role_scopes(app_roles))
    both = grant(" ".join(str(s) for s in user), app)
    allowed = both + ([Scope("patient", s.resource_type, s.permissions) for s in both] if patient else [])
    words = requested.split()
    resources = grant(" ".join(words), allowed) if any("/" in w and "." in w for w in words) else []
    others = [w for w in dict.fromkeys(words) if w in (*IDENTITY, *REFRESH)]
    if patient and ("launch" in words or "launch/patient" in words):
        others += [w for w in ("launch", "launch/patient") if w in words]
    return Granted(resources, others)
