"""``dermbridge issuer ...``, ``dermbridge consent-purposes ...``, ``dermbridge review-policy ...`` and
``dermbridge forwarding ...``: a tenant's patient identifier mapping, the purposes of use that permit AI
analysis, its review policy and its DICOM forwarding destinations and rules. All
are kept in the tenant's database, so a running server uses a change at once, without a restart."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from dermbridge.cli_support import opened_engine, settings_from
from dicom_node.forwarding.config import SETTING as FORWARDING_SETTING
from dicom_node.forwarding.config import describe, read_forwarding, set_forwarding
from fhir_server.audit.signing import load_signer
from fhir_server.audit.trail import AuditTrail
from fhir_server.consent.purposes import SETTING as PURPOSES_SETTING
from fhir_server.consent.purposes import ai_purposes, parse_purpose, set_ai_purposes
from fhir_server.errors import OperationOutcomeError
from fhir_server.identity.issuers import SETTING as ISSUER_SETTING
from fhir_server.identity.issuers import issuer_systems, set_issuer_system
from fhir_server.storage.port import TenantStore, TenantUnknownError
from fhir_server.tenant_settings import SECURITY_CONFIGURATION, SOFTWARE_CONFIGURATION, setting_event
from fhir_server.workflow.review.policy import SETTING as REVIEW_SETTING
from fhir_server.workflow.review.policy import describe_policy, read_policy, set_policy

Change = tuple[str, dict[str, str]]  # (setting name, audit subtype) of a command that changes it


def _on_tenant(
    args: argparse.Namespace, action: Callable[[TenantStore], Awaitable[list[str]]], change: Change | None
) -> int:
    """Run ``action`` on the tenant's store and print its lines; a change is audited in the tenant's trail."""
    settings = settings_from(args)

    async def run() -> int:
        async with opened_engine(settings) as engine:
            try:
                store = await engine.tenant(args.tenant)
                lines = await action(store)
            except TenantUnknownError:
                print(f"no tenant {args.tenant!r}", file=sys.stderr)
                return 2
            except OperationOutcomeError as error:
                print(error.outcome["issue"][0]["diagnostics"], file=sys.stderr)
                return 2
            if change is not None and settings.audit_enabled:
                trail = AuditTrail(load_signer(settings.data_dir / "keys"))
                now = "; ".join(lines) or "(none)"
                await trail.record(store, setting_event(change[0], change[1], "dermbridge CLI", f"now {now}"))
                await trail.flush(store)
        print("\n".join(lines) if lines else "(none)")
        return 0

    return asyncio.run(run())


def issuer_command(args: argparse.Namespace) -> int:
    if (args.action != "list" and not args.issuer) or (args.action == "set" and not args.system):
        print("usage: dermbridge issuer set ISSUER SYSTEM | remove ISSUER | list", file=sys.stderr)
        return 2

    async def act(store: TenantStore) -> list[str]:
        if args.action == "list":
            mapping = await issuer_systems(store)
        else:
            mapping = await set_issuer_system(store, args.issuer, args.system if args.action == "set" else None)
        return [f"{issuer} -> {system}" for issuer, system in sorted(mapping.items())]

    return _on_tenant(args, act, None if args.action == "list" else (ISSUER_SETTING, SOFTWARE_CONFIGURATION))


def purposes_command(args: argparse.Namespace) -> int:
    if args.action == "set" and not args.purpose:
        print("usage: dermbridge consent-purposes set SYSTEM|CODE ...", file=sys.stderr)
        return 2

    async def act(store: TenantStore) -> list[str]:
        if args.action == "list":
            purposes = await ai_purposes(store)
        else:
            wanted = [parse_purpose(p) for p in args.purpose] if args.action == "set" else None
            purposes = await set_ai_purposes(store, wanted)
        return [f"{system}|{code}" for system, code in purposes]

    return _on_tenant(args, act, None if args.action == "list" else (PURPOSES_SETTING, SECURITY_CONFIGURATION))


def review_policy_command(args: argparse.Namespace) -> int:
    if args.action == "set" and not args.file:
        print("usage: dermbridge review-policy set --file policy.json", file=sys.stderr)
        return 2

    try:
        value = json.loads(Path(args.file).read_text()) if args.action == "set" else None
    except (OSError, ValueError) as exc:
        print(f"cannot read the review policy: {exc}", file=sys.stderr)
        return 2

    async def act(store: TenantStore) -> list[str]:
        if args.action == "show":
            return describe_policy(await read_policy(store))
        try:
            return describe_policy(await set_policy(store, value))
        except ValueError as exc:  # ReviewPolicyError
            raise OperationOutcomeError.of(400, "invalid", f"the review policy is not usable: {exc}") from exc

    return _on_tenant(args, act, None if args.action == "show" else (REVIEW_SETTING, SOFTWARE_CONFIGURATION))


def forwarding_command(args: argparse.Namespace) -> int:
    """``forwarding show | set --file forwarding.json | reset``: where the tenant's objects are C-STOREd."""
    if args.action == "set" and not args.file:
        print("usage: dermbridge forwarding set --file forwarding.json", file=sys.stderr)
        return 2
    try:
        value = json.loads(Path(args.file).read_text()) if args.action == "set" else None
    except (OSError, ValueError) as exc:
        print(f"cannot read the forwarding configuration: {exc}", file=sys.stderr)
        return 2

    async def act(store: TenantStore) -> list[str]:
        if args.action == "show":
            return describe(await read_forwarding(store))
        return describe(await set_forwarding(store, value))

    return _on_tenant(args, act, None if args.action == "show" else (FORWARDING_SETTING, SOFTWARE_CONFIGURATION))


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    issuer = commands.add_parser("issuer", help="map DICOM IssuerOfPatientID to the EHR's identifier system")
    issuer.add_argument("action", choices=["list", "set", "remove"])
    issuer.add_argument("issuer", nargs="?", help="the IssuerOfPatientID value, e.g. CLINIC-MRN")
    issuer.add_argument("system", nargs="?", help="set: the identifier system, e.g. urn:clinic:mrn")
    issuer.add_argument("--tenant", default="default")
    issuer.add_argument("--data-dir", type=Path)
    issuer.set_defaults(func=issuer_command)
    purposes = commands.add_parser("consent-purposes", help="the purposes of use whose Consent permits AI analysis")
    purposes.add_argument("action", choices=["list", "set", "reset"])
    purposes.add_argument("purpose", nargs="*", help="set: system|code, e.g. http://terminology.hl7.org/"
                          "CodeSystem/v3-ActReason|TREAT")  # fmt: skip
    purposes.add_argument("--tenant", default="default")
    purposes.add_argument("--data-dir", type=Path)
    purposes.set_defaults(func=purposes_command)
    review = commands.add_parser("review-policy", help="review tiers, due dates by urgency, claim leases, declines")
    review.add_argument("action", choices=["show", "set", "reset"])
    review.add_argument("--file", help="set: a JSON policy (see README, Review queue)")
    review.add_argument("--tenant", default="default")
    review.add_argument("--data-dir", type=Path)
    review.set_defaults(func=review_policy_command)
    forwarding = commands.add_parser("forwarding", help="DICOM forwarding: destinations (PACS) and rules")
    forwarding.add_argument("action", choices=["show", "set", "reset"])
    forwarding.add_argument("--file", help="set: a JSON configuration (see README, Forwarding to a PACS)")
    forwarding.add_argument("--tenant", default="default")
    forwarding.add_argument("--data-dir", type=Path)
    forwarding.set_defaults(func=forwarding_command)
