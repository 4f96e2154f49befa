"""The ``storage`` setting: SQLite files under the data directory unless it names another engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dermbridge import storage
from dermbridge.app import create_app
from dermbridge.settings import Settings
from dermbridge.storage_url import parse_storage_url
from fhir_server.storage.sqlite import SqliteEngine


def test_unset_it_is_sqlite_in_the_data_directory(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "var")
    url = settings.storage_url()
    assert (url.engine, url.path) == ("sqlite", tmp_path / "var")
    engine = storage.plain_engine(url, settings)
    assert isinstance(engine, SqliteEngine) and engine.directory == tmp_path / "var" / "tenants"


@pytest.mark.parametrize(
    ("text", "engine", "path"),
    [("sqlite:///var", "sqlite", Path("var")), ("sqlite:////srv/dermbridge", "sqlite", Path("/srv/dermbridge")),
     ("postgresql://dermbridge@db.internal:5433/fhir", "postgresql", None),
     ("postgres://dermbridge@localhost/fhir", "postgresql", None)],
)  # fmt: skip
def test_urls_name_their_engine(text: str, engine: str, path: Path | None) -> None:
    url = parse_storage_url(text)
    assert (url.engine, url.path, url.url) == (engine, path, text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [("mysql://db/fhir", "storage must be"), ("sqlite:///", "needs a directory"),
     ("postgresql://db.internal:5432", "one database name"), ("postgresql://db.internal:99999/fhir", "port"),
     ("sqlite:///" + "a" * 3000, "at most")],
)  # fmt: skip
def test_bad_urls_are_refused_at_start(text: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        Settings(_env_file=None, storage=text)


def test_a_password_is_never_shown() -> None:
    url = parse_storage_url("postgresql://dermbridge:s3cret@db/fhir")
    assert "s3cret" not in url.shown() and url.shown() == "postgresql://dermbridge:***@db/fhir"


def test_an_engine_missing_from_the_build_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(storage, "POSTGRES_MODULE", "fhir_server.storage.no_such_engine")
    settings = Settings(_env_file=None, data_dir=tmp_path, storage="postgresql://u:pw@db/fhir")
    with pytest.raises(storage.EngineUnavailable, match=r"PostgreSQL engine .* is not available") as raised:
        storage.open_engine(settings)
    assert "pw" not in str(raised.value)


def test_a_mistyped_scheme_names_the_scheme_and_never_the_password() -> None:
    with pytest.raises(ValidationError, match="not a 'postgressql' URL") as raised:
        Settings(_env_file=None, storage="postgressql://dermbridge:s3cret@db/fhir")
    assert "s3cret" not in str(raised.value)


def test_the_audit_role_loader_is_refused_for_the_single_process(tmp_path: Path) -> None:
    """Refused when serving (``create_app``); a CLI command in the same environment still runs."""
    single = Settings(_env_file=None, data_dir=tmp_path, audit_loader="role", role="all")
    with pytest.raises(ValueError, match="needs a `serve --role audit` process"):
        create_app(single)
    for role in ("api", "dicom", "worker", "inference", "audit"):
        Settings(_env_file=None, audit_loader="role", role=role).check_serving()
    data_dir = tmp_path / "hash#in-path"  # a directory name a URL could not carry
    assert Settings(_env_file=None, data_dir=data_dir).blob_url().path == data_dir / "blobs"


def test_the_postgres_pool_size_is_a_setting(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, storage="postgresql://u@db/fhir", postgres_pool_size=5)
    engine = storage.plain_engine(settings.storage_url(), settings)
    assert engine._pool_size == 5  # type: ignore[attr-defined]
    with pytest.raises(ValidationError):
        Settings(_env_file=None, postgres_pool_size=0)


def test_blobs_name_a_directory_or_the_postgresql_storage(tmp_path: Path) -> None:
    assert Settings(_env_file=None, data_dir=tmp_path).blob_url().path == tmp_path / "blobs"  # the default
    assert Settings(_env_file=None, blobs="file:///srv/blobs").blob_url().path == Path("/srv/blobs")
    dsn = "postgresql://dermbridge@db:5432/fhir"
    assert Settings(_env_file=None, storage=dsn, blobs="postgresql").blob_url().dsn == dsn
    with pytest.raises(ValidationError, match="set storage=postgresql"):
        Settings(_env_file=None, data_dir=tmp_path, blobs="postgresql")  # no PostgreSQL to keep them in
    with pytest.raises(ValidationError, match="file:///DIRECTORY or postgresql"):
        Settings(_env_file=None, blobs="s3://bucket")
