"""The ``dermbridge`` command: serve, tenants, the audit trail, OAuth clients and tokens."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import signal
import sys
from pathlib import Path

from dermbridge.cli_clients import add_parsers
from dermbridge.cli_conformance import add_parsers as add_conformance_parsers
from dermbridge.cli_keys import add_parsers as add_key_parsers
from dermbridge.cli_models import add_parsers as add_model_parsers
from dermbridge.cli_notify import add_parsers as add_notify_parsers
from dermbridge.cli_outcomes import add_parsers as add_outcomes_parsers
from dermbridge.cli_retention import add_parsers as add_retention_parsers
from dermbridge.cli_settings import add_parsers as add_settings_parsers
from dermbridge.cli_storage import add_parsers as add_storage_parsers
from dermbridge.cli_support import opened_engine, settings_from, tenant_or_none
from dermbridge.cli_terminology import add_parsers as add_terminology_parsers
from dermbridge.cli_users import add_parsers as add_user_parsers
from dermbridge.cli_workflow import add_parsers as add_workflow_parsers
from dermbridge.roles import PLANS, plan_for
from dermbridge.settings import Settings
from dermbridge.storage import open_audit_trail
from fhir_server.audit.verify import verify_summary
from fhir_server.storage.sqlite.engine import check_tenant_name

WS_MAX_FRAME = 4096  # a client only sends "bind {id}"


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from dermbridge.app import create_app
    from dermbridge.http_protocol import deadline_protocol
    from dermbridge.logs import configure

    settings = settings_from(args)
    configure(settings.log_level, settings.log_format)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    if hasattr(signal, "SIGUSR1"):  # an operator (or a test) asks for every thread's stack: kill -USR1 <pid>
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    _announce(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.listen_port(),
        log_level="warning",
        log_config=None,  # uvicorn's own lines go through this process's logging (``dermbridge.logs``)
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http=deadline_protocol(settings),
        ws="websockets-sansio",  # the Subscription websocket channel (fhir_server/subscriptions/websocket.py)
        ws_max_size=WS_MAX_FRAME,
        # the caller's address is the socket's unless a configured proxy forwards it (uvicorn would
        # otherwise trust X-Forwarded-For from 127.0.0.1, letting any local caller pick its address)
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
    )
    return 0


def _announce(settings: Settings) -> None:
    """What this process serves, on its terminal."""
    from dicom_node.callers import Callers

    plan = plan_for(settings.role)
    if plan.http_api:
        print(f"DermBridge FHIR R4 API on http://{settings.host}:{settings.port}/fhir/{settings.default_tenant}")
    else:
        print(f"DermBridge {settings.role} role; /healthz, /readyz, /metrics on "
              f"http://{settings.host}:{settings.listen_port()}")  # fmt: skip
    if plan.inference and settings.inference_enabled:
        print(f"inference worker on {settings.data_dir.resolve()}")
    if settings.dicom_enabled and plan.dimse:
        known = Callers(settings.dicom_ae_tenants, settings.dicom_default_roles, settings.dicom_any_ae_tenant)
        callers = ", ".join(f"{ae}->{caller.describe()}" for ae, caller in known.by_ae.items()) or (
            "none, so every caller is refused: set DERMBRIDGE_DICOM_AE_TENANTS"
        )
        anyone = f"; any other AE -> {known.anyone.describe()}" if known.anyone else ""
        print(
            f"DICOM DIMSE on {settings.dicom_host}:{settings.dicom_port} as AE {settings.dicom_ae_title}"
            f" (calling AEs: {callers}{anyone})"
        )
    print(f"data in {settings.data_dir.resolve()}")
    print("Ctrl-C stops the server.", flush=True)


def _tenant(args: argparse.Namespace) -> int:
    settings = settings_from(args)

    async def run() -> int:
        async with opened_engine(settings) as engine:
            if args.action == "create":
                try:
                    check_tenant_name(args.name)
                except ValueError as exc:
                    print(exc, file=sys.stderr)
                    return 2
                await engine.create_tenant(args.name)
                await open_audit_trail(settings).checkpoint(await engine.tenant(args.name))  # its first head
                print(f"tenant {args.name} ready: /fhir/{args.name}")
            else:
                for name in await engine.tenant_names():
                    print(name)
            return 0

    return asyncio.run(run())


def _audit(args: argparse.Namespace) -> int:
    """``dermbridge audit verify|checkpoint --tenant T``: check a tenant's audit trail (exit 1 when
    anything was altered or is missing), or load what is staged and sign its head."""

    settings = settings_from(args)
    trail = open_audit_trail(settings)

    async def run() -> int:
        async with opened_engine(settings) as engine:
            store = await tenant_or_none(engine, args.tenant)
            if store is None:
                return 2
            if args.action == "checkpoint":
                await trail.flush(store)  # staged events join the chain first (the server may be running)
                head = await trail.checkpoint(store)
                print(f"signed the head: event {head.seq}, staging {head.staged_seq}, anchored in "
                      f"{settings.audit_anchor_root()}")  # fmt: skip
                return 0
            report = await trail.verify(store)  # as found: verifying never loads nor signs
            print(verify_summary(args.tenant, report))
            return 0 if report.ok else 1

    return asyncio.run(run())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dermbridge", description="FHIR R4 / DICOM server for dermatology AI")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--data-dir", type=Path)
    serve.add_argument("--role", dest="serve_role", choices=list(PLANS), help="what this process runs; default all")
    serve.set_defaults(func=_serve)
    tenant = commands.add_parser("tenant", help="create or list tenants")
    tenant.add_argument("action", choices=["create", "list"])
    tenant.add_argument("name", nargs="?")
    tenant.add_argument("--data-dir", type=Path)
    tenant.set_defaults(func=_tenant)
    audit = commands.add_parser("audit", help="verify or checkpoint a tenant's audit trail")
    audit.add_argument("action", choices=["verify", "checkpoint"])
    audit.add_argument("--tenant", default="default")
    audit.add_argument("--data-dir", type=Path)
    audit.set_defaults(func=_audit)
    add_parsers(commands)
    add_model_parsers(commands)
    add_key_parsers(commands)
    add_retention_parsers(commands)
    add_settings_parsers(commands)
    add_notify_parsers(commands)
    add_workflow_parsers(commands)
    add_user_parsers(commands)
    add_terminology_parsers(commands)
    add_outcomes_parsers(commands)
    add_conformance_parsers(commands)
    add_storage_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "tenant" and args.action == "create" and not args.name:
        parser.error("tenant create needs a NAME")
    if args.command == "workflow" and args.action != "list" and not args.name:
        parser.error(f"workflow {args.action} needs a NAME")
    if args.command == "retention" and args.action in ("set", "unset") and not args.type:
        parser.error(f"retention {args.action} needs a resource TYPE")
    try:
        sys.exit(args.func(args))
    except KeyboardInterrupt:
        sys.exit(130)
