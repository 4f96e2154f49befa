"""The one-time backfill of the owner field (dicom_node.backfill): studies stored by a version that did
not write ``fhir.patient`` on the index records are listed to their patient's ``patient/`` token (QIDO-RS,
PS3.18 10.6) once the node has started again, at every level, and still to no other patient's token; once
done, later starts skip the scan (the tenant setting marks it)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import orjson
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from dicom_node.attributes import INSTANCE, PATIENT_FIELD, SERIES, STUDY
from dicom_node.backfill import MARKER, VERSION, backfill_patient_field
from fhir_server.storage.port import Record
from fhir_server.storage.query import RecordQuery
from fhir_server.storage.sqlite.engine import SqliteEngine
from fhir_server.tenant_settings import read_setting, write_setting
from tests.dicom_factories import dermoscopic
from tests.fhir_server.security.smart import IdentityProvider
from tests.server import running_server

pytestmark = pytest.mark.interop
READER = "patient/ImagingStudy.rs patient/Patient.rs"
LEVELS = (STUDY, SERIES, INSTANCE)


async def _as_older_version(data_dir: Path, *, unmark: bool) -> int:
    """Index records as a version before the field wrote them (the field removed through put_record);
    ``unmark``: nor had that version run the backfill. The number of records without the field."""
    engine = SqliteEngine(data_dir)
    await engine.open()
    try:
        store = await engine.tenant("default")
        async with store.transaction() as tx:
            for collection in LEVELS:
                for record in await tx.find_records(RecordQuery(collection)):
                    fields = {name: values for name, values in record.fields.items() if name != PATIENT_FIELD}
                    await tx.put_record(Record(record.collection, record.key, record.body, fields))
        if unmark:
            await write_setting(store, MARKER, None)
        records = [record for collection in LEVELS for record in await store.find_records(RecordQuery(collection))]
        return sum(not record.fields.get(PATIENT_FIELD) for record in records)
    finally:
        await engine.close()


async def _forget_patient(data_dir: Path, study_uid: str) -> None:
    """A study record whose body names no Patient (``fhir`` left out): its owner cannot be told."""
    engine = SqliteEngine(data_dir)
    await engine.open()
    try:
        async with (await engine.tenant("default")).transaction() as tx:
            study = await tx.get_record(STUDY, study_uid)
            assert study is not None
            body = {key: value for key, value in orjson.loads(study.body).items() if key != "fhir"}
            await tx.put_record(Record(STUDY, study.key, orjson.dumps(body), study.fields))
    finally:
        await engine.close()


async def _backfill_again(data_dir: Path) -> tuple[int, object]:
    engine = SqliteEngine(data_dir)
    await engine.open()
    try:
        store = await engine.tenant("default")
        return await backfill_patient_field("default", store), await read_setting(store, MARKER)
    finally:
        await engine.close()


def _uids(found: list[dict[str, object]]) -> set[str]:
    return {entry["0020000D"]["Value"][0] for entry in found}  # type: ignore[index]


def test_older_studies_reach_their_patient_after_a_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    idp = IdentityProvider(tmp_path)
    env = {"DERMBRIDGE_OIDC_ISSUER": "https://idp.example", "DERMBRIDGE_OIDC_JWKS": str(idp.jwks),
           "DERMBRIDGE_OIDC_AUDIENCE": "dermbridge"}  # fmt: skip
    data_dir = tmp_path / "var"
    own = dermoscopic(patient_id="BACKFILL-A", patient_name="OWN^ALICE")
    other = dermoscopic(patient_id="BACKFILL-B", patient_name="OTHER^BOB")
    with running_server(data_dir, env=env) as server:
        admin = DICOMwebClient(f"{server.root}/dicomweb/default", headers=server.headers)
        assert "FailedSOPSequence" not in admin.store_instances([own, other])
        patients = {}
        for mrn in ("BACKFILL-A", "BACKFILL-B"):
            found = server.http.get(f"{server.base}/Patient", params={"identifier": f"urn:clinic:mrn|{mrn}"})
            patients[mrn] = found.json()["entry"][0]["resource"]["id"]
    assert asyncio.run(_as_older_version(data_dir, unmark=True)) == 6  # study, series, instance of each

    with running_server(data_dir, env=env) as server:

        def client(mrn: str) -> DICOMwebClient:
            headers = idp.headers(READER, patients[mrn])
            return DICOMwebClient(f"{server.root}/dicomweb/default", headers=headers)

        alice, bob = client("BACKFILL-A"), client("BACKFILL-B")
        study: pydicom.Dataset = own
        assert _uids(alice.search_for_studies()) == {study.StudyInstanceUID}
        assert _uids(alice.search_for_series()) == {study.StudyInstanceUID}
        assert _uids(alice.search_for_instances()) == {study.StudyInstanceUID}
        assert _uids(alice.search_for_instances(study_instance_uid=study.StudyInstanceUID)) == {study.StudyInstanceUID}
        assert _uids(bob.search_for_studies()) == {other.StudyInstanceUID}
        assert bob.search_for_studies(search_filters={"StudyInstanceUID": study.StudyInstanceUID}) == []
        assert bob.search_for_instances(study_instance_uid=study.StudyInstanceUID) == []

    # done once: with the marker set, a later start does not scan again (records stripped now stay so) ...
    assert asyncio.run(_as_older_version(data_dir, unmark=False)) == 6
    assert asyncio.run(_backfill_again(data_dir)) == (0, VERSION)
    # ... and without it a run files them again (a run cut short is resumed by running again)
    assert asyncio.run(_as_older_version(data_dir, unmark=True)) == 6
    assert asyncio.run(_backfill_again(data_dir)) == (2, VERSION)
    assert asyncio.run(_backfill_again(data_dir)) == (0, VERSION)
    # a study whose patient cannot be told stays without the field, counted in one warning
    assert asyncio.run(_as_older_version(data_dir, unmark=True)) == 6
    asyncio.run(_forget_patient(data_dir, other.StudyInstanceUID))
    with caplog.at_level(logging.WARNING, logger="dicom_node.backfill"):
        assert asyncio.run(_backfill_again(data_dir)) == (1, VERSION)
    assert [r.getMessage() for r in caplog.records if r.name == "dicom_node.backfill"] == [
        "tenant default: 1 DICOM studies name no Patient and stay out of patient/ access"
    ]
