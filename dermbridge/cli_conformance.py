"""``dermbridge conformance package [--out DIR]``: the DermBridge implementation guide as a FHIR NPM package
(``DIR/package.tgz``) built from the router every server serves, for the HL7 validator (``-ig package.tgz``),
HAPI, Firely or SUSHI to load."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from conformance.ig.build import build_package
from conformance.ig.guide import PACKAGE_ID
from conformance.ig.profiles import profiles
from dermbridge import __version__
from dermbridge.app import served_router
from dermbridge.ig_examples import server_examples
from dermbridge.workflow import flow_library
from fhir_server.api.router import FhirRouter
from fhir_server.crypto.erase import Erasure
from fhir_server.subscriptions.activation import SubscriptionRules


def package_router() -> FhirRouter:
    """A router with every operation a server can serve: ``$erase`` too (served where encryption is on)."""
    return served_router(flow_library(True), None, Erasure(), SubscriptionRules())


def package_command(args: argparse.Namespace) -> int:
    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    examples = server_examples(profiles())  # a case through a server in this process (dermbridge.ig_examples)
    for url, why in examples.missing.items():
        print(f"no example of {url}: {why}", file=sys.stderr)
    path = build_package(package_router(), __version__, examples.resources, args.out)
    print(f"wrote {PACKAGE_ID}#{__version__} to {path} ({len(examples.resources)} examples)")
    return 0


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    conformance = commands.add_parser("conformance", help="write the implementation guide as a FHIR NPM package")
    conformance.add_argument("action", choices=["package"])
    conformance.add_argument("--out", type=Path, default=Path("."), help="folder for package.tgz (default: .)")
    conformance.set_defaults(func=package_command)
