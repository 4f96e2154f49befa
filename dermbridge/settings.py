"""One validated Settings per process, from DERMBRIDGE_* environment variables or a .env file."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DERMBRIDGE_", env_file=".env", extra="ignore")

    host: str = Field("127.0.0.1", description="interface the HTTP API listens on")
    port: int = Field(8080, ge=0, le=65535)
    data_dir: Path = Field(Path("var"), description="where tenant databases and blobs live")
    default_tenant: str = "default"
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="larger request bodies get 413")
    default_page_size: int = Field(20, ge=1)
    max_page_size: int = Field(1000, ge=1)
    sqlite_readers: int = Field(4, ge=1, le=64, description="concurrent read connections per tenant")
    log_level: str = "INFO"
