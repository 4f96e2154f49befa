"""``dermbridge retention set|unset|list|run``: a tenant's retention policies and the job that keeps them."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from dermbridge.cli_support import run_on_tenant
from fhir_server.audit.trail import AuditTrail
from fhir_server.retention.job import RetentionJob, RunReport
from fhir_server.retention.policies import (
    ACTIONS,
    SETTING,
    PolicyError,
    RetentionPolicy,
    list_policies,
    remove_policy,
    set_policy,
)
from fhir_server.storage.port import TenantStore
from fhir_server.tenant_settings import SOFTWARE_CONFIGURATION, setting_event


def retention_command(args: argparse.Namespace) -> int:
    return run_on_tenant(args, lambda store, trail: _act(args, store, trail))


async def _act(args: argparse.Namespace, store: TenantStore, trail: AuditTrail | None) -> int:
    if args.action == "set":
        try:
            policy = RetentionPolicy(args.type, args.days, args.retention_action)
        except (PolicyError, TypeError) as exc:
            print(exc, file=sys.stderr)
            return 2
        await _audited(store, trail, await set_policy(store, policy))
        print(f"{args.tenant}: {policy.resource_type} is deleted {policy.days} days after its last update")
        return 0
    if args.action == "unset":
        await _audited(store, trail, await remove_policy(store, args.type))
        print(f"{args.tenant}: no retention policy for {args.type}")
        return 0
    if args.action == "list":
        for policy in await list_policies(store):
            print(_line(policy))
        return 0
    job = RetentionJob(trail)
    report = await job.run(store, dry_run=args.dry_run, now=args.as_of)
    _print(args, report)
    return 0


def _line(policy: RetentionPolicy) -> str:
    return f"{policy.resource_type}\t{policy.days} days\t{policy.action}"


async def _audited(store: TenantStore, trail: AuditTrail | None, policies: list[RetentionPolicy]) -> None:
    """A change of the tenant's policies, audited as a tenant setting's change (what they are now)."""
    if trail is not None:
        now = "; ".join(_line(p).replace("\t", " ") for p in policies) or "(none)"
        await trail.record(store, setting_event(SETTING, SOFTWARE_CONFIGURATION, "dermbridge CLI", f"now {now}"))


def _print(args: argparse.Namespace, report: RunReport) -> None:
    if args.json:
        print(json.dumps({**asdict(report), "counts": report.counts}))
        return
    if not report.claimed:
        print(f"{args.tenant}: another retention run holds the lease; nothing done")
        return
    verb = "would delete" if report.dry_run else "deleted"
    for reference in report.deleted:
        print(f"{verb} {reference}")
    for line in report.held:
        print(f"kept {line}")
    for reference in report.changed:
        print(f"left {reference} (changed or held since it was found)")
    counts = report.counts
    print(f"{args.tenant}: {verb} {counts['deleted']}, kept under legal hold {counts['held']}")


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    retention = commands.add_parser("retention", help="a tenant's retention policies, and the retention job")
    retention.add_argument("action", choices=["set", "unset", "list", "run"])
    retention.add_argument("type", nargs="?", help="set/unset: the resource type")
    retention.add_argument("days", nargs="?", type=int, help="set: days kept after the last update")
    retention.add_argument("--action", dest="retention_action", choices=ACTIONS, default="delete")
    retention.add_argument("--dry-run", action="store_true", help="run: list what would be done, change nothing")
    retention.add_argument("--json", action="store_true", help="run: the report as JSON")
    retention.add_argument(
        "--as-of", type=_instant, help="run: the moment expiry is measured from (default now), e.g. 2027-01-31"
    )
    retention.add_argument("--tenant", default="default")
    retention.add_argument("--data-dir", type=Path)
    retention.set_defaults(func=retention_command)
