"""``dermbridge client create|list|disable|enable|allow-basic|deny-basic``, ``dermbridge client key
create|list|revoke`` and ``dermbridge token``: OAuth clients and their standing credentials for operators."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from dermbridge.cli_support import opened_engine, settings_from
from dermbridge.storage import open_audit_trail
from fhir_server.audit.events import token_event
from fhir_server.security.api_keys import ApiKeys
from fhir_server.security.clients import ClientError, ClientRegistry
from fhir_server.security.revocation import CLIENT_STATE_TTL
from fhir_server.security.scopes import ROLES, grant, role_scopes
from fhir_server.storage.port import TenantUnknownError


def client_command(args: argparse.Namespace) -> int:
    settings = settings_from(args)

    try:
        jwks = json.loads(Path(args.jwks).read_text()) if args.jwks else None
    except (OSError, ValueError) as exc:
        print(f"cannot read the JWKS: {exc}", file=sys.stderr)
        return 2

    async def run() -> int:
        async with opened_engine(settings) as engine:
            clients = ClientRegistry(engine)
            if args.tenant == settings.default_tenant:
                await engine.create_tenant(args.tenant)  # the server creates it on start anyway
            try:
                if args.action == "create":
                    client, secret = await clients.create(
                        args.tenant,
                        args.name,
                        args.role or ["integration"],
                        secret=not args.no_secret,
                        jwks=jwks,
                        fhir_user=args.fhir_user,
                        redirect_uris=args.redirect_uri,
                        first_party=args.first_party,
                    )
                    shown = {"client_id": client.client_id, "tenant": client.tenant, "roles": list(client.roles)}
                    if secret:
                        shown["client_secret"] = secret
                    print(json.dumps(shown, indent=2))
                    if secret:
                        print("the secret is shown only this once", file=sys.stderr)
                elif args.action == "list":
                    for client in await clients.list(args.tenant):
                        state = "active" if client.active else "disabled"
                        auth = "private_key_jwt" if client.jwks else "secret"
                        auth += "+basic" if client.basic_auth else ""
                        print(f"{client.client_id}\t{client.name}\t{','.join(client.roles)}\t{auth}\t{state}")
                elif args.action == "key":
                    return await key_command(args, clients, ApiKeys(engine))
                elif not args.client_id:
                    print("name the client: --client-id", file=sys.stderr)
                    return 2
                elif args.action in ("allow-basic", "deny-basic"):
                    client = await clients.set_basic_auth(args.client_id, args.action == "allow-basic")
                    allowed = "may now" if client.basic_auth else "may no longer"
                    print(f"{client.client_id} {allowed} send its id and secret as HTTP Basic")
                else:
                    client = await clients.set_active(args.client_id, args.action == "enable")
                    revoked = f": the tokens it holds stop working within {CLIENT_STATE_TTL:g} s"
                    print(f"{client.client_id} {'enabled' if client.active else 'disabled' + revoked}")
            except TenantUnknownError:
                print(f"no tenant {args.tenant!r}: dermbridge tenant create {args.tenant}", file=sys.stderr)
                return 2
            except (ClientError, OSError, ValueError) as exc:
                what = f"{args.key_action} the key" if args.action == "key" else f"{args.action} the client"
                print(f"cannot {what}: {exc}", file=sys.stderr)
                return 2
            return 0

    return asyncio.run(run())


async def key_command(args: argparse.Namespace, clients: ClientRegistry, keys: ApiKeys) -> int:
    """``dermbridge client key create|list|revoke --client-id ...``: a client's API keys."""
    client = await clients.get(args.client_id or "")
    if args.key_action is None:
        print("say what to do with keys: dermbridge client key create|list|revoke", file=sys.stderr)
        return 2
    if client is None:
        print("name an existing client: --client-id", file=sys.stderr)
        return 2
    if args.key_action == "create":
        key, text = await keys.create(client, args.name, args.scope, args.patient)
        shown = {"key_id": key.key_id, "client_id": key.client_id, "scopes": list(key.scopes), "api_key": text}
        print(json.dumps({**shown, **({"patient": key.patient} if key.patient else {})}, indent=2))
        print("the key is shown only this once", file=sys.stderr)
    elif args.key_action == "list":
        for key in await keys.list(client.tenant, client.client_id):
            state = f"revoked {key.revoked}" if key.revoked else "active"
            print(f"{key.key_id}\t{key.name}\t{' '.join(key.scopes)}\t{key.patient or '-'}\t{state}")
    else:
        if not args.key_id:
            print("name the key: --key-id", file=sys.stderr)
            return 2
        key = await keys.revoke(client.tenant, args.key_id)
        print(f"{key.key_id} revoked: its next use is refused")
    return 0


def token_command(args: argparse.Namespace) -> int:
    """Mint an access token for a registered client with the server's key (operators only: it reads
    the key from the data directory). Audited like a token from the endpoint."""
    from dermbridge.app import build_tokens

    settings = settings_from(args)

    async def run() -> int:
        async with opened_engine(settings) as engine:
            client = await ClientRegistry(engine).get(args.client_id)
            if client is None or not client.active:
                print(f"no active client {args.client_id!r}", file=sys.stderr)
                return 2
            scopes = grant(args.scope, role_scopes(client.roles))
            if not scopes:
                print("none of the requested scopes is allowed to this client", file=sys.stderr)
                return 2
            token, _ = build_tokens(settings).mint(
                tenant=client.tenant, client_id=client.client_id, scopes=scopes, roles=client.roles
            )
            trail = open_audit_trail(settings)
            event = token_event(client_id=client.client_id, status=200, address="dermbridge token (CLI)", reason=None)
            store = await engine.tenant(client.tenant)
            await trail.record(store, event)
            await trail.close()  # loaded, and covered by a signed head
            print(token)
            return 0

    return asyncio.run(run())


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    client = commands.add_parser("client", help="create, list, disable or enable OAuth clients of a tenant")
    client.add_argument("action", choices=["create", "list", "disable", "enable", "allow-basic", "deny-basic", "key"])
    client.add_argument("key_action", nargs="?", choices=["create", "list", "revoke"], help="with 'key'")
    client.add_argument("--tenant", default="default")
    client.add_argument("--name", default="client")
    client.add_argument("--role", action="append", choices=sorted(ROLES), help="repeat for several roles")
    client.add_argument("--jwks", help="a JWKS file of the client's public keys (SMART Backend Services)")
    client.add_argument("--fhir-user", help="the user the client acts for, e.g. Practitioner/123 (fhirUser claim)")
    client.add_argument("--no-secret", action="store_true", help="authenticate with --jwks keys only")
    client.add_argument(
        "--redirect-uri",
        action="append",
        help="a SMART app's redirect URI (repeat); with --no-secret and no --jwks: a public app (PKCE)",
    )
    client.add_argument("--first-party", action="store_true", help="a SMART app of the hospital: no consent screen")
    client.add_argument("--client-id", help="the client to disable, enable, allow Basic or whose keys to manage")
    client.add_argument("--scope", help="key create: space-separated SMART scopes; default all the roles allow")
    client.add_argument("--patient", help="key create: the Patient id of the key's patient/ scopes")
    client.add_argument("--key-id", help="key revoke: the key to revoke")
    client.add_argument("--data-dir", type=Path)
    client.set_defaults(func=client_command)
    token = commands.add_parser("token", help="mint an access token for a client (operators)")
    token.add_argument("--client-id", required=True)
    token.add_argument("--scope", help="space-separated SMART scopes; default all the client's roles allow")
    token.add_argument("--host")
    token.add_argument("--port", type=int, help="the server's port (the token's issuer)")
    token.add_argument("--data-dir", type=Path)
    token.set_defaults(func=token_command)
