"""``dermbridge user create|list|disable|enable|reset-password|totp``: people of the built-in user directory
(``fhir_server.people.users``). Passwords are read from standard input (``--password-stdin``) or generated
and shown once; never taken as an argument (it would land in the shell history and the process list)."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from pathlib import Path

import pyotp

from dermbridge.cli_support import opened_engine, settings_from
from fhir_server.people.users import UserDirectory, UserError
from fhir_server.repository import Repository
from fhir_server.security.scopes import ROLES
from fhir_server.storage.port import TenantUnknownError


def _password(args: argparse.Namespace) -> tuple[str, bool]:
    """The new password and whether it was generated (then shown once)."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    return secrets.token_urlsafe(15), True


def user_command(args: argparse.Namespace) -> int:
    settings = settings_from(args)

    async def run() -> int:
        async with opened_engine(settings) as engine:
            users = UserDirectory(engine)
            if args.action == "list":
                for user in await users.every(args.tenant):
                    state = "active" if user.active else "disabled"
                    print(
                        f"{user.username}\t{user.fhir_user}\t{','.join(user.roles)}\t{state}"
                        f"\t{'totp' if user.totp_secret else 'password'}"
                    )
                return 0
            if not args.username:
                print("--username is required", file=sys.stderr)
                return 2
            if args.action == "create":
                store = await engine.tenant(args.tenant)
                repo = Repository.system(store, reason="dermbridge user create: the user's Practitioner exists")
                if await repo.current("Practitioner", args.practitioner or "") is None:
                    print(
                        f"no Practitioner/{args.practitioner} in tenant {args.tenant}: create it first", file=sys.stderr
                    )
                    return 2
                password, generated = (None, False) if args.no_password else _password(args)
                roles = args.role or ["clinician-reviewer"]
                user = await users.create(
                    args.tenant, args.username, args.practitioner, roles, password, args.oidc_subject
                )
                shown = {"username": user.username, "fhirUser": user.fhir_user, "roles": list(user.roles)}
                print(json.dumps({**shown, **({"password": password} if generated else {})}, indent=2))
            elif args.action in ("disable", "enable"):
                await users.set_active(args.tenant, args.username, args.action == "enable")
                print(f"{args.username} {args.action}d")
            elif args.action == "reset-password":
                password, generated = _password(args)
                await users.reset_password(args.tenant, args.username, password)
                print(json.dumps({"username": args.username, **({"password": password} if generated else {})}))
            elif args.action == "totp":
                user, secret = await users.set_totp(args.tenant, args.username, not args.off)
                if secret is None:
                    print(f"two-factor sign-in is off for {user.username}")
                else:
                    uri = pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name="DermBridge")
                    print(json.dumps({"username": user.username, "totp_secret": secret, "otpauth_uri": uri}))
            return 0

    try:
        return asyncio.run(run())
    except (UserError, TenantUnknownError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return 2


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    user = commands.add_parser("user", help="people who sign in with a password (the built-in user directory)")
    user.add_argument("action", choices=["create", "list", "disable", "enable", "reset-password", "totp"])
    user.add_argument("--tenant", default="default")
    user.add_argument("--username")
    user.add_argument("--practitioner", help="create: the id of the user's Practitioner in the tenant")
    user.add_argument("--role", action="append", choices=sorted(ROLES), help="create: repeat for several roles")
    user.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    user.add_argument("--oidc-subject", help="create: the user's sub at the OpenID provider (signs in there)")
    user.add_argument("--no-password", action="store_true", help="create: sign in only at the OpenID provider")
    user.add_argument("--off", action="store_true", help="totp: turn the second factor off")
    user.add_argument("--data-dir", type=Path)
    user.set_defaults(func=user_command)
