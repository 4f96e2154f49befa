"""``dermbridge conformance package [--out DIR]``: the DermBridge implementation guide as a FHIR NPM package
(``DIR/package.tgz``) built from the router every server serves, for the HL7 validator (``-ig package.tgz``),
HAPI, Firely or SUSHI to load."""

from __future__ import annotations

import argparse
from pathlib import Path

from conformance.ig.build import build_package
from conformance.ig.guide import PACKAGE_ID
from dermbridge import __version__
from dermbridge.app import served_router
from dermbridge.workflow import flow_library
from fhir_server.api.router import FhirRouter
from fhir_server.crypto.erase import Erasure
from fhir_server.subscriptions.activation import SubscriptionRules


def package_router() -> FhirRouter:
    """A router with every operation a server can serve: ``$erase`` too (served where encryption is on)."""
    return served_router(flow_library(True), None, Erasure(), SubscriptionRules())


def package_command(args: argparse.Namespace) -> int:
    path = build_package(package_router(), __version__, args.out)
    print(f"wrote {PACKAGE_ID}#{__version__} to {path}")
    return 0


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    conformance = commands.add_parser("conformance", help="write the implementation guide as a FHIR NPM package")
    conformance.add_argument("action", choices=["package"])
    conformance.add_argument("--out", type=Path, default=Path("."), help="folder for package.tgz (default: .)")
    conformance.set_defaults(func=package_command)
