"""Wire the application: the engine, the FHIR router and its HTTP adapter, the outbox dispatcher."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from conformance.capability import capability_statement
from conformance.dicom import dicom_conformance
from conformance.http import ConformanceSources
from conformance.http import router as conformance_router
from conformance.terminology_capabilities import terminology_capabilities
from dermbridge import __version__
from dermbridge.dicom import TrailSink, build_dimse, build_forwarder, build_ingestor
from dermbridge.health import parts_of
from dermbridge.identity import consent_watcher, register_identity
from dermbridge.operations import install_operations, start_audit_sweep, stop_worker
from dermbridge.outcomes import register as register_outcomes
from dermbridge.outcomes import start_linker
from dermbridge.people import install_people
from dermbridge.profiles import register_conformance_profiles
from dermbridge.roles import plan_for
from dermbridge.settings import Settings
from dermbridge.storage import open_audit_trail, open_engine
from dermbridge.workflow import flow_library, register_workflow, start_engine
from dicom_node.backfill import backfill_tenants
from dicom_node.dimse import DimseServer
from dicom_node.erasure import DicomErasure
from dicom_node.forwarding.routes import router as forwarding_router
from dicom_node.web.routes import router as dicomweb_router
from dicom_node.web.service import DicomWeb
from dicom_node.web.wado_uri import router as wado_uri_router
from fhir_server.api.auth_http import AuthHttp
from fhir_server.api.auth_http import router as auth_router
from fhir_server.api.bundles import BundleProcessor
from fhir_server.api.http import FhirHttp, error_response, unexpected_error_response
from fhir_server.api.http import router as fhir_http_router
from fhir_server.api.router import FhirRouter, Operation
from fhir_server.api.terminology_operations import register_terminology
from fhir_server.audit.remote import LoaderProcess
from fhir_server.audit.trail import AuditTrail
from fhir_server.consent.operation import DECIDE_DEFINITION, consent_decide
from fhir_server.crypto.erase import ERASE_DEFINITION, Erasure
from fhir_server.errors import OperationOutcomeError
from fhir_server.notify.config import NotifyConfig
from fhir_server.outbox import OutboxDispatcher
from fhir_server.retention.job import RetentionJob
from fhir_server.retention.operation import LEGAL_HOLD_DEFINITION, RELEASE_DEFINITION, LegalHolds
from fhir_server.retention.operation import TARGETS as HOLD_TARGETS
from fhir_server.retention.schedule import RetentionSchedule
from fhir_server.search.extract import warm_up as warm_up_index
from fhir_server.security.api_keys import ApiKeys
from fhir_server.security.bearer import Authenticator
from fhir_server.security.clients import ClientRegistry
from fhir_server.security.endpoint import TokenEndpoint
from fhir_server.security.lockout import Lockout, RecordStrikes
from fhir_server.security.revocation import ClientStates
from fhir_server.security.standing import StandingCredentials
from fhir_server.security.tokens import ExternalProvider, TokenService, load_token_signer
from fhir_server.storage.port import Engine
from fhir_server.storage.postgres.errors import outcome_for as database_outcome
from fhir_server.subscriptions.activation import SubscriptionRules, activation_hook
from fhir_server.subscriptions.channels import Channels
from fhir_server.subscriptions.guard import EndpointGuard
from fhir_server.subscriptions.sockets import SocketHub, SocketLimits
from fhir_server.subscriptions.status import STATUS_DEFINITION, subscription_status
from fhir_server.subscriptions.websocket import router as subscription_websocket_router
from fhir_server.subscriptions.worker import SubscriptionWorker
from fhir_server.validation import WARM_TYPES, warm_up
from fhir_server.workflow.library import FlowLibrary
from fhir_server.workflow.review.operations import ReviewOperations
from fhir_server.workflow.review.sweep import LapsedClaimSweep
from inference.clinician_export import SignOffExport
from terminology.content import base_content

log = logging.getLogger(__name__)


def build_router(
    erasure: Erasure | None = None, holds: LegalHolds | None = None, subscriptions: SubscriptionRules | None = None
) -> FhirRouter:
    router: FhirRouter

    def capability(base_url: str, mode: str | None = None) -> dict[str, Any]:
        if mode == "terminology":
            return terminology_capabilities(base_url, router, __version__, _shipped_code_systems)
        return capability_statement(base_url, router, __version__)

    router = FhirRouter(capability)
    router.batch_handler = BundleProcessor(router)
    router.write_hooks["Subscription"] = activation_hook(subscriptions or SubscriptionRules())
    router.register(Operation("decide", ("Consent",), False, consent_decide, DECIDE_DEFINITION))
    router.register(Operation("status", ("Subscription",), True, subscription_status, STATUS_DEFINITION))
    ReviewOperations().register(router)
    register_terminology(router)
    register_conformance_profiles(router)
    if erasure is not None:
        router.register(Operation("erase", ("Patient",), True, erasure, ERASE_DEFINITION, True, "d"))
    if holds is not None:
        for name, handler, definition in (
            ("legal-hold", holds.place, LEGAL_HOLD_DEFINITION),
            ("release-legal-hold", holds.release, RELEASE_DEFINITION),
        ):
            router.register(Operation(name, HOLD_TARGETS, True, handler, definition, True, "u"))
    return router


def served_router(
    flows: FlowLibrary, audit: AuditTrail | None, erasure: Erasure | None, subscriptions: SubscriptionRules
) -> FhirRouter:
    """The router with every operation the server serves (the IG package lists the same ones)."""
    router = build_router(erasure, LegalHolds(audit), subscriptions)
    register_identity(router, audit)
    register_workflow(router, flows)
    register_outcomes(router)
    return router


def _shipped_code_systems() -> list[tuple[str, str | None]]:
    """The read-only base content's code systems (terminology/README.md), which every tenant can read."""
    return [(cs["url"], cs.get("version")) for cs in base_content().resources("CodeSystem")]


def build_tokens(settings: Settings) -> TokenService:
    external = None
    if settings.oidc_issuer:
        if not (settings.oidc_jwks and settings.oidc_audience):
            raise ValueError("DERMBRIDGE_OIDC_ISSUER needs DERMBRIDGE_OIDC_JWKS and DERMBRIDGE_OIDC_AUDIENCE too")
        external = ExternalProvider(
            settings.oidc_issuer,
            settings.oidc_jwks,
            settings.oidc_audience,
            settings.oidc_tenant_claim,
            settings.oidc_max_token_lifetime_seconds,
        )
    signer = load_token_signer(settings.data_dir / "keys")
    return TokenService(signer, settings.base_url(), settings.auth_token_lifetime_seconds, external)


async def bootstrap_admin(clients: ClientRegistry, settings: Settings) -> None:
    """On a fresh data directory: one admin client, its secret printed once (never logged)."""
    if await clients.list(settings.default_tenant):
        return
    client, secret = await clients.create(settings.default_tenant, "bootstrap admin", ["admin"])
    sys.stderr.write(
        f"\nDermBridge: created the first admin client of tenant {settings.default_tenant!r}. "
        "Its secret is shown only this once:\n"
        f"  client_id:     {client.client_id}\n  client_secret: {secret}\n"
        f"  get a token:   curl -s -u '{client.client_id}:<client_secret>' -d grant_type=client_credentials "
        f"{settings.base_url()}/auth/token\n"
        "  more clients:  dermbridge client create --tenant <tenant> --role <role>\n"
    )
    sys.stderr.flush()


def _warm_up() -> None:
    """Compile validators and search parameters before the first requests pay for them."""
    warm_up()
    warm_up_index(WARM_TYPES)


async def _start_audit_loader(settings: Settings, audit: AuditTrail | None) -> LoaderProcess | None:
    """The audit loader process (``fhir_server.audit.remote``), when the trail is on and asks for it (an audit
    role process loads with its sweep instead)."""
    if audit is None or settings.audit_loader != "process" or plan_for(settings.role).audit_loader:
        return None
    loader = LoaderProcess([sys.executable, "-m", "dermbridge.audit_loader"], settings.model_dump(mode="json"))
    await loader.start()
    audit.loader = loader
    return loader


def _start_retention(settings: Settings, engine: Engine, audit: AuditTrail | None) -> RetentionSchedule | None:
    """The scheduled retention job (``fhir_server.retention``), unless DERMBRIDGE_RETENTION_EVERY_HOURS is 0."""
    if settings.retention_every_hours <= 0 or not plan_for(settings.role).consumers:
        return None
    schedule = RetentionSchedule(engine, RetentionJob(audit), settings.retention_every_hours * 3600)
    schedule.start()
    return schedule


def _start_review_sweep(settings: Settings, engine: Engine, audit: AuditTrail | None) -> LapsedClaimSweep | None:
    """The lapsed-claim sweep (``fhir_server.workflow.review.sweep``), unless DERMBRIDGE_REVIEW_SWEEP_SECONDS is 0."""
    if settings.review_sweep_seconds <= 0 or not plan_for(settings.role).consumers:
        return None
    sweep = LapsedClaimSweep(engine, audit, settings.review_sweep_seconds)
    sweep.start()
    return sweep


def build_subscriptions(
    settings: Settings, engine: Engine, audit: AuditTrail | None, clients: ClientRegistry
) -> SubscriptionWorker | None:
    """The Subscription delivery worker (``fhir_server.subscriptions``), when enabled."""
    if not settings.subscriptions_enabled or not plan_for(settings.role).subscriptions:
        return None
    channels = Channels(
        NotifyConfig.load(settings.notify_config), guard=EndpointGuard(settings.subscription_allowed_hosts)
    )
    return SubscriptionWorker(
        engine,
        channels,
        public_base=settings.base_url(),
        audit=audit,
        max_attempts=settings.subscription_max_attempts,
        retry_seconds=settings.subscription_retry_seconds,
        poll_seconds=settings.subscription_poll_seconds,
        clients=clients,
    )


def create_app(settings: Settings) -> FastAPI:
    settings.check_serving()
    plan = plan_for(settings.role)
    engine = open_engine(settings)
    dispatcher = OutboxDispatcher(engine)
    dispatcher.subscribe(consent_watcher(engine).subscription())
    flows = flow_library(settings.inference_human_review)
    workflow = start_engine(dispatcher, engine, flows)
    clients = ClientRegistry(engine)
    tokens = build_tokens(settings) if settings.auth_enabled else None
    audit = open_audit_trail(settings) if settings.audit_enabled else None
    if audit is not None and settings.audit_loader == "role":
        audit.loads_staged = False  # a `serve --role audit` process loads them
    sink = TrailSink(engine, audit, settings.default_tenant) if audit is not None else None
    start_linker(dispatcher, engine, audit)
    ingestor = build_ingestor(settings, engine, audit)
    dispatcher.subscribe(SignOffExport(engine, ingestor.blobs, audit, __version__).subscription())  # signed-off SR
    dimse = build_dimse(settings, engine, ingestor, sink) if settings.dicom_enabled and plan.dimse else None
    forwarder = build_forwarder(settings, engine, ingestor, audit) if plan.consumers else None
    # failed attempts at the token endpoint and with standing credentials count together, in the database:
    # every API process behind a load balancer sees the same strikes
    lockout = Lockout(book=RecordStrikes(engine, settings.default_tenant))
    standing = StandingCredentials(clients, ApiKeys(engine), lockout)
    authenticator = Authenticator(tokens, ClientStates(clients), standing)
    subscriptions = build_subscriptions(settings, engine, audit, clients)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await engine.open()
        await engine.create_tenant(settings.default_tenant)
        await ingestor.blobs.open()
        await ingestor.blobs.sweep_incoming()  # remains of stores cut short by a crash
        await backfill_tenants(engine)  # index records of earlier versions get their owner (once)
        if tokens is None:
            log.warning("INSECURE development mode: authentication is off, every request is unrestricted")
        elif settings.auth_bootstrap_admin and plan.http_api:
            await bootstrap_admin(clients, settings)
        await asyncio.to_thread(_warm_up)
        if plan.consumers:
            await dispatcher.start()
        if forwarder is not None:
            await forwarder.start()
        audit_sweep = start_audit_sweep(settings, engine, audit)
        retention = _start_retention(settings, engine, audit)
        review_sweep = _start_review_sweep(settings, engine, audit)
        if subscriptions is not None:
            await subscriptions.start()
        await app.state.auth_http.start()
        loader = await _start_audit_loader(settings, audit)
        worker = None
        try:
            if settings.inference_enabled and plan.inference:
                from dermbridge.inference import build_worker  # torch and MONAI load only when needed

                worker = await asyncio.to_thread(build_worker, settings, engine, ingestor.blobs, audit)
                await worker.start()
            app.state.inference = worker
            if sink is not None:
                sink.loop = asyncio.get_running_loop()
            if dimse is not None:
                await dimse.use_stored_peers()  # AE titles and destinations: the tenants' own, editable live
                dimse.start(asyncio.get_running_loop())
            app.state.parts = parts_of(consumers=dispatcher if plan.consumers else None, subscriptions=subscriptions,
                                       inference=worker, audit_loader=audit_sweep, dimse=dimse)  # fmt: skip
        except BaseException:
            if loader is not None:
                await loader.close()  # a failed start leaves no loader process behind
            raise
        try:
            yield
        finally:
            if dimse is not None:
                await asyncio.to_thread(dimse.stop)
            if worker is not None:
                await stop_worker(worker)
            if audit_sweep is not None:
                await audit_sweep.stop()
            if retention is not None:
                await retention.stop()
            if review_sweep is not None:
                await review_sweep.stop()
            if subscriptions is not None:
                await subscriptions.stop()
            await dispatcher.stop()
            if forwarder is not None:
                await forwarder.stop()
            await app.state.auth_http.close()
            if loader is not None:
                await loader.close()
            if audit is not None:
                await audit.close()
            await ingestor.blobs.close()
            await engine.close()

    app = FastAPI(title="DermBridge", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.engine = engine
    app.state.audit = audit
    app.state.dispatcher = dispatcher
    app.state.workflow = workflow
    app.state.subscriptions = subscriptions
    limits = SocketLimits(
        bind_seconds=settings.subscription_websocket_bind_seconds,
        max_seconds=settings.subscription_websocket_max_seconds,
        poll_seconds=settings.subscription_poll_seconds,
    )
    app.state.sockets = SocketHub(audit, limits)
    if subscriptions is not None:  # the worker in this process wakes the sockets at once
        subscriptions.feed_listeners.append(app.state.sockets.wake)
    app.state.ingestor = ingestor
    app.state.forwarder = forwarder
    app.state.dimse = dimse
    erasure = Erasure()
    erasure.hooks.append(DicomErasure(ingestor.blobs))
    rules = SubscriptionRules(
        EndpointGuard(settings.subscription_allowed_hosts), timedelta(days=settings.subscription_max_lifetime_days)
    )
    router = served_router(flows, audit, erasure if settings.encryption_enabled else None, rules)
    app.state.fhir_http = FhirHttp(
        engine,
        router,
        max_body_bytes=settings.max_body_bytes,
        default_count=settings.default_page_size,
        max_count=settings.max_page_size,
        audit=audit,
        authenticator=authenticator,
    )
    app.state.clients = clients
    token_endpoint = TokenEndpoint(clients, tokens, lockout) if tokens is not None else None
    app.state.auth_http = AuthHttp(
        engine,
        authenticator,
        token_endpoint,
        audit,
        settings.default_tenant,
        settings.base_url(),
    )
    app.state.dicomweb = DicomWeb(engine, ingestor, ingestor.public_url, audit)
    if plan.http_api:
        app.include_router(auth_router)
        app.include_router(fhir_http_router)
        app.include_router(dicomweb_router)
        app.include_router(wado_uri_router)
        app.include_router(forwarding_router)
        _install_cors(app, settings)
        app.include_router(subscription_websocket_router)
        _install_conformance(app, settings, dimse, router)
    if token_endpoint is not None:  # after the FHIR API's routes: each request tries the routes in turn
        install_people(app, settings, engine, clients, token_endpoint, authenticator, audit)
        app.state.people.use_refusals(app.state.auth_http.refusals)  # aggregated with refused token requests
    install_operations(app, engine, router.operations)
    _install_error_handlers(app)
    return app


def _install_cors(app: FastAPI, settings: Settings) -> None:
    """CORS (Fetch standard §3.2) for the listed origins only, so a browser viewer on another origin (OHIF)
    can call DICOMweb and FHIR with its Authorization header; no origins listed: no preflight is answered."""
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["authorization", "accept", "content-type", "if-match", "if-none-exist", "prefer"],
            expose_headers=["content-location", "etag", "last-modified", "location", "retry-after", "warning"],
            max_age=600,
        )


def _install_conformance(app: FastAPI, settings: Settings, dimse: DimseServer | None, router: FhirRouter) -> None:
    base_url = f"{settings.base_url()}/fhir/{settings.default_tenant}"
    app.state.conformance = ConformanceSources(
        capability=lambda: capability_statement(base_url, router, __version__),
        dicom=None
        if dimse is None
        else lambda: dicom_conformance(dimse.config, settings.dicom_duplicates, version=__version__),
    )
    app.include_router(conformance_router)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OperationOutcomeError)
    async def on_outcome(request: Request, exc: OperationOutcomeError) -> Response:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        code = "not-found" if exc.status_code == 404 else "processing"
        return error_response(OperationOutcomeError.of(exc.status_code, code, str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> Response:
        return error_response(OperationOutcomeError.of(400, "invalid", "the request is malformed"))

    @app.exception_handler(asyncpg.PostgresError)
    async def on_database(request: Request, exc: asyncpg.PostgresError) -> Response:
        refused = database_outcome(exc)
        if refused is None:
            return await on_unexpected(request, exc)
        log.warning("PostgreSQL refused a %s request: SQLSTATE %s", request.method, exc.sqlstate)
        return error_response(refused)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return unexpected_error_response()
