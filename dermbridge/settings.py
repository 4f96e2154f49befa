"""One validated Settings per process, from DERMBRIDGE_* environment variables or a .env file."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydicom.datadict import tag_for_keyword

from dermbridge.roles import Role, plan_for
from dermbridge.storage_url import MAX_URL, BlobUrl, StorageUrl, parse_blob_url, parse_storage_url, sqlite_at
from dicom_node.callers import SERVICES, DicomCaller, Service


def listed(value: Any) -> Any:
    """A list setting from the environment: a JSON list, or values separated by commas."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return json.loads(text)
    return [part.strip() for part in text.split(",") if part.strip()]


class Settings(BaseSettings):
    # hide_input_in_errors: a refused value (a storage URL with its password, a key) is never echoed
    model_config = SettingsConfigDict(
        env_prefix="DERMBRIDGE_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    host: str = Field("127.0.0.1", description="interface the HTTP API listens on")
    port: int = Field(8080, ge=0, le=65535)
    data_dir: Path = Field(Path("var"), description="where tenant databases and blobs live")
    storage: str = Field(
        "",
        max_length=MAX_URL,
        description="the engine holding the tenants: sqlite:///DIR (default: SQLite files under DATA_DIR) or "
        "postgresql://user@host:port/db (one schema per tenant); keys, blobs and anchors stay under DATA_DIR",
    )
    default_tenant: str = "default"
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="larger request bodies get 413")
    http_header_timeout_seconds: float = Field(
        10.0, gt=0, le=600, description="a request's line and headers must arrive within this; else 408 and close"
    )
    http_body_timeout_seconds: float = Field(
        30.0, gt=0, le=3600, description="a request body that sends nothing for this long is closed"
    )
    http_max_header_bytes: int = Field(65536, ge=4096, description="larger request heads get 431 and close")
    default_page_size: int = Field(20, ge=1)
    max_page_size: int = Field(1000, ge=1)
    sqlite_readers: int = Field(4, ge=1, le=64, description="concurrent read connections per tenant")
    postgres_pool_size: int = Field(
        20, ge=1, le=500,
        description="PostgreSQL connections per tenant per process (plus 3: outbox and control): keep "
        "tenants x processes x (this + 3) under the server's max_connections",
    )  # fmt: skip
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = Field(
        "json", description="json: one JSON object a line (access and association lines included); text: plain"
    )
    health_port: int | None = Field(
        None, ge=0, le=65535, description="roles without the HTTP API serve /healthz, /readyz, /metrics here"
    )
    metrics_token: str | None = Field(
        None, min_length=16, description="bearer token /metrics asks of callers not on loopback; unset: loopback only"
    )
    gil_switch_interval_ms: float = Field(
        1.0,
        gt=0,
        le=100,
        description="Python's thread switch interval: short keeps DIMSE threads and the loop responsive",
    )
    public_url: str = Field("", description="base URL clients reach the HTTP API at; default http://HOST:PORT")
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="reverse proxies whose X-Forwarded-For/-Proto are trusted (IPs or CIDRs); empty: none",
    )

    auth_enabled: bool = Field(
        True, description="false: the insecure development mode, every request unrestricted (warned on each start)"
    )
    auth_token_lifetime_seconds: int = Field(300, ge=30, le=86400)
    auth_session_lifetime_seconds: int = Field(
        8 * 3600, ge=60, le=7 * 86400, description="a person's browser session ends this long after sign-in"
    )
    auth_refresh_lifetime_seconds: int = Field(
        8 * 3600, ge=60, le=90 * 86400, description="a SMART app's refresh token (rotated at each use) lives this long"
    )
    auth_bootstrap_admin: bool = Field(True, description="create and print an admin client on a fresh data dir")
    oidc_issuer: str | None = Field(None, description="an external OpenID provider whose access tokens are accepted")
    oidc_jwks: str | None = Field(None, description="its JWKS: a file path or an https:// URL")
    oidc_audience: str | None = None
    oidc_tenant_claim: str = "tenant"
    oidc_login_client_id: str | None = Field(
        None, description="this server's client id at the OpenID provider: people sign in there in the browser"
    )
    oidc_login_client_secret: str | None = Field(None, description="its client secret at the provider")
    oidc_max_token_lifetime_seconds: int = Field(
        86400, ge=60, le=30 * 86400, description="provider tokens living longer (exp - iat) get 401"
    )

    encryption_enabled: bool = Field(True, description="envelope encryption of every stored resource version")
    master_key: str | None = Field(
        None, description="base64 32-byte master key (else key files in DATA_DIR/keys, created on first start)"
    )
    master_key_kind: Literal["aes", "hybrid"] = Field(
        "aes", description="the first master key file: AES-256, or hybrid X25519 + ML-KEM-768"
    )

    retention_every_hours: float = Field(
        24.0, ge=0, le=24 * 366, description="run the retention job every N hours in the server; 0: never"
    )
    review_sweep_seconds: float = Field(
        60.0, ge=0, le=86400, description="return lapsed review claims to the queue every N seconds; 0: never"
    )

    audit_enabled: bool = Field(True, description="an AuditEvent for every FHIR interaction")
    audit_checkpoint_every: int = Field(256, ge=1, description="sign the audit chain head every N events")
    audit_checkpoint_interval_s: float = Field(
        10.0, gt=0, le=3600, description="and every this many seconds while events come; verify fails past 2x + 5 s"
    )
    audit_anchor_dir: Path | None = Field(
        None, description="where signed heads are also appended (default DATA_DIR/audit-anchors): keep it elsewhere"
    )
    audit_loader: Literal["process", "inline", "role"] = Field(
        "process",
        description="who loads staged AuditEvents into the store: process: a loader process; inline: the API; "
        "role: a `serve --role audit` process",
    )
    audit_poll_seconds: float = Field(
        1.0, gt=0, le=60, description="how often a `serve --role audit` process looks for staged AuditEvents"
    )

    # DICOM DIMSE
    dicom_enabled: bool = True
    dicom_ae_title: str = Field("DERMBRIDGE", max_length=16)
    dicom_host: str = "127.0.0.1"
    dicom_port: int = Field(11112, ge=0, le=65535)
    dicom_ae_tenants: dict[str, str | DicomCaller] = Field(
        default_factory=dict,
        max_length=4096,
        description='calling AE title -> tenant, e.g. {"PACS": "default"}, or -> tenant, the DIMSE services it may'
        ' use and optionally the addresses it must call from, e.g. {"DERMATOSCOPE1": {"tenant": "default",'
        ' "roles": ["echo", "store"], "hosts": ["10.0.0.0/24"]}}',
    )
    dicom_default_roles: list[Service] = Field(
        list(SERVICES),
        description='the DIMSE services of AEs mapped in the plain form {"AE": "tenant"} and of DICOM_ANY_AE_TENANT'
        " callers (default all five, as before per-AE roles existed)",
    )
    dicom_any_ae_tenant: str | None = Field(None, description="tenant for callers not listed; unset: refuse them")
    dicom_move_destinations: dict[str, str] = Field(
        default_factory=dict, description='C-MOVE destinations, e.g. {"PACS": "10.0.0.5:104"}'
    )
    dicom_duplicates: Literal["keep", "replace"] = "keep"
    dicom_max_associations: int = Field(64, ge=1, le=4096, description="open associations, all peers")
    dicom_max_associations_per_peer: int = Field(8, ge=1, le=4096, description="open associations per peer address")
    dicom_reserved_associations: int = Field(
        8, ge=0, le=4096, description="further slots only for calling AEs listed in DICOM_AE_TENANTS"
    )
    dicom_artim_timeout_seconds: float = Field(10.0, gt=0, le=600, description="connection to whole A-ASSOCIATE-RQ")
    dicom_pdu_read_timeout_seconds: float = Field(30.0, gt=0, le=3600, description="a PDU's first to last byte")
    dicom_max_pdu_bytes: int = Field(
        1024 * 1024, ge=4096, le=64 * 1024 * 1024, description="Maximum Length Received announced and enforced"
    )
    dicom_lesion_key: dict[str, str] = Field(
        default_factory=dict,
        description="tenant -> the DICOM attribute grouping images into lesions (default SeriesInstanceUID: one "
        "series per lesion, a later visit linked by an unambiguous site; a label attribute is the identity), "
        'e.g. {"default": "SeriesDescription"}',
    )
    dicom_timezone: dict[str, str] = Field(
        default_factory=dict,
        description="tenant -> IANA zone of its devices' local times when objects carry no TimezoneOffsetFromUTC, "
        'e.g. {"default": "Europe/Berlin"}; unset: such times are kept as dates only',
    )
    blob_dir: Path | None = Field(None, description="where DICOM objects live; default DATA_DIR/blobs")
    blobs: str = Field(
        "",
        max_length=MAX_URL,
        description="the DICOM object store: file:///DIR (a file tree, a shared mount for several nodes; default "
        "BLOB_DIR) or postgresql (in the STORAGE database, which must then be PostgreSQL)",
    )
    dicom_tls_port: int | None = Field(None, ge=0, le=65535)
    dicom_tls_certificate: Path | None = None
    dicom_tls_private_key: Path | None = None
    dicom_tls_client_ca: Path | None = Field(None, description="verify client certificates against this CA")

    # AI inference
    role: Role = Field("all", description="what this process runs (dermbridge/roles.py): all, or one part")
    inference_enabled: bool = Field(True, description="analyse every stored image with the configured models")
    inference_models: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="MONAI bundle directories or TorchScript files; empty: the demo model"
    )
    inference_device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda, cuda:1...")
    inference_batch: int = Field(8, ge=1, le=256, description="images analysed in one forward pass")
    inference_abcd: bool = Field(True, description="the interpretable ABCD analysis next to the model's findings")
    inference_human_review: bool = Field(
        True, description="send a case to clinician review when AI analysis is not permitted or fails"
    )

    subscriptions_enabled: bool = Field(True, description="deliver FHIR Subscriptions (rest-hook, email, websocket)")
    subscription_max_attempts: int = Field(5, ge=1, le=100, description="failed deliveries before status=error")
    subscription_retry_seconds: float = Field(30.0, gt=0, le=3600, description="first retry delay, doubled each time")
    subscription_poll_seconds: float = Field(1.0, gt=0, le=60)
    subscription_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        max_length=256,
        description="rest-hook hosts or CIDRs allowed although loopback/private/link-local, "
        'e.g. ["hooks.internal", "10.1.0.0/16"]; empty: only public addresses',
    )
    subscription_max_lifetime_days: float = Field(
        30.0, gt=0, le=3650, description="longest Subscription.end from its last write; later or none is capped"
    )
    subscription_websocket_bind_seconds: float = Field(
        30.0, gt=0, le=3600, description="a Subscription websocket with no bind after this is closed"
    )
    subscription_websocket_max_seconds: float = Field(
        3600.0, gt=0, le=86400, description="a Subscription websocket's longest life (the client reconnects)"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        max_length=64,
        description="browser origins (https://viewer.example) allowed cross-origin calls; none: no CORS",
    )
    notify_config: Path | None = Field(None, description="JSON file: per-tenant SMTP, templates, suppression")

    _lists = field_validator(
        "forwarded_allow_ips", "inference_models", "subscription_allowed_hosts", "cors_origins", mode="before"
    )(listed)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        """Each an origin (RFC 6454 §7: scheme://host[:port], no path); ``*`` is refused: with
        credentials in the Authorization header, any site could then act as the user's viewer."""
        bad = [o for o in value if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", o)]
        if bad:
            raise ValueError(f"not origins (scheme://host[:port], '*' is not allowed): {bad}")
        return value

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        if value:
            parse_storage_url(value)
        return value

    @field_validator("blobs")
    @classmethod
    def _blob_url(cls, value: str) -> str:
        if value:
            parse_blob_url(value, None)
        return value

    @field_validator("dicom_lesion_key")
    @classmethod
    def _known_keywords(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = [k for k in value.values() if tag_for_keyword(k) is None]
        if unknown:
            raise ValueError(f"not DICOM keywords: {unknown}")
        return value

    @field_validator("dicom_timezone")
    @classmethod
    def _known_zones(cls, value: dict[str, str]) -> dict[str, str]:
        for zone in value.values():
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"not an IANA time zone: {zone!r}") from exc
        return value

    @model_validator(mode="after")
    def _login_needs_provider(self) -> Settings:
        """Browser sign-in at the OpenID provider (``oidc_login_client_id``) needs the provider itself."""
        if self.oidc_login_client_id and not self.oidc_issuer:
            raise ValueError("DERMBRIDGE_OIDC_LOGIN_CLIENT_ID needs DERMBRIDGE_OIDC_ISSUER")
        self.blob_url()  # blobs=postgresql needs a PostgreSQL storage
        return self

    def check_serving(self) -> None:
        """What only a serving process must satisfy (the CLI's other commands share the environment): with
        ``audit_loader=role`` loading is left to a ``serve --role audit`` process, and a single ``--role all``
        process has none, so its staged AuditEvents would load only at a read's flush or at shutdown."""
        if self.audit_loader == "role" and self.role == "all":
            raise ValueError(
                "DERMBRIDGE_AUDIT_LOADER=role needs a `serve --role audit` process: with role all, use process/inline"
            )

    def storage_url(self) -> StorageUrl:
        """The engine the tenants live in (``storage``; SQLite under ``data_dir`` when unset)."""
        return parse_storage_url(self.storage) if self.storage else sqlite_at(self.data_dir)

    def blob_root(self) -> Path:
        return self.blob_dir or self.data_dir / "blobs"

    def blob_url(self, storage: StorageUrl | None = None) -> BlobUrl:
        """Where the DICOM objects of ``storage`` (default: the ``storage`` setting) are kept (``blobs``)."""
        if not self.blobs:  # the directory itself: a path may hold what a URL may not ("#", "?")
            return BlobUrl(path=self.blob_root())
        return parse_blob_url(self.blobs, storage or self.storage_url())

    def audit_anchor_root(self) -> Path:
        return self.audit_anchor_dir or self.data_dir / "audit-anchors"

    def listen_port(self) -> int:
        """The HTTP port: the API's, or the health port of a role without the API."""
        return self.port if plan_for(self.role).http_api or self.health_port is None else self.health_port

    def base_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.host}:{self.port}"
