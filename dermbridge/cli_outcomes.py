"""``dermbridge ai-performance check``: each model's figures against its card, drift alerts raised
(``fhir_server.outcomes.drift``); every alert is a DetectedIssue, an outbox event and an AuditEvent."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from dermbridge.cli_support import run_on_tenant
from dermbridge.outcomes import MIN_CASES
from fhir_server.audit.trail import AuditTrail
from fhir_server.errors import OperationOutcomeError
from fhir_server.outcomes.drift import check_device, default_window, device_label, model_devices
from fhir_server.storage.port import TenantStore
from inference.body_site_groups import site_group


def check_command(args: argparse.Namespace) -> int:
    start, end = default_window(datetime.now(UTC))
    start, end = args.start or start, args.end or end

    async def check(store: TenantStore, trail: AuditTrail | None) -> int:
        devices = await model_devices(store, args.model)
        if args.model and not devices:
            print(f"no Device {args.model!r} in tenant {args.tenant!r}")
            return 2
        drifts = 0
        for device in devices:
            try:
                found = await check_device(store, device, start, end, site_group=site_group,
                                           min_cases=args.min_cases, trail=trail)  # fmt: skip
            except OperationOutcomeError as error:
                print(f"skipped\t{device_label(device)}: {error} (narrow --from/--to)")
                continue
            for evaluation in found:
                drifts += evaluation.status == "drift"
                if args.json:
                    print(json.dumps({**asdict(evaluation), "device": f"Device/{device['id']}"}))
                else:
                    where = f" -> {evaluation.issue}" if evaluation.issue else ""
                    line = evaluation.sentence(start, end)
                    print(f"{evaluation.status}\t{device_label(device)}: {line}{where}")
        return 1 if drifts else 0

    return run_on_tenant(args, check)


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    performance = commands.add_parser("ai-performance", help="AI performance against the model cards")
    performance.add_argument("action", choices=["check"])
    performance.add_argument("--tenant", default="default")
    performance.add_argument("--model", help="Device/<id> (default: every model Device of the tenant)")
    performance.add_argument("--from", dest="start", help="period start (default: 11 months before this month)")
    performance.add_argument("--to", dest="end", help="period end, exclusive (default: the start of next month)")
    performance.add_argument("--min-cases", type=int, default=MIN_CASES,
                             help="lesions with (without) the condition before a drift can be raised")  # fmt: skip
    performance.add_argument("--json", action="store_true", help="one JSON line per claim checked")
    performance.add_argument("--data-dir", type=Path)
    performance.set_defaults(func=check_command)
