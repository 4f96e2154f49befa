"""The scope matrix, generated: every FHIR and DICOMweb interaction x scope kind (patient/, user/,
system/, imaging, none for the type) x the launch patient's own data or another patient's, each asked
of the real HTTP app and classified as allowed (the caller saw or changed the target) or denied
(403/404, or the target absent from what came back; never another patient's data).

The expected answer follows one rule (``expected``): user/ and system/ scopes reach every patient's
data; a patient/ scope reaches only what its launch patient owns, and never matches on criteria
(conditional update and delete), reads a whole type's history or stores DICOM (STOW-RS); no scope on
the type, nothing. A DICOMweb interaction reaches a patient's study (synced to the ImagingStudy of the
Patient its PatientID names) by the same rule, with ImagingStudy and Patient scopes together; the
``imaging`` kind (ImagingStudy without Patient, a device's scope) stores DICOM but reads none of it:
a DICOM object carries its patient's name and birth date.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import httpx2
import pytest
from pydicom import Dataset

from tests.conftest import BASE, FhirTestClient, make_client
from tests.dicom_factories import dermoscopic, stow_body
from tests.factories import observation, patient
from tests.fhir_server.security.smart import IdentityProvider

Kind = Literal["patient", "user", "system", "imaging", "none"]
Owner = Literal["own", "other"]
MRN = "urn:dermbridge:test-mrn"
SCOPES = "{kind}/Patient.cruds {kind}/Observation.cruds {kind}/ImagingStudy.cruds"
DICOMWEB = "/dicomweb/default"


@dataclass
class World:
    """The app, the two patients (alice is the launch patient of patient/ tokens) and one token per kind."""

    client: FhirTestClient
    patients: dict[Owner, str]
    families: dict[Owner, str]
    tokens: dict[Kind, dict[str, str]]
    images: dict[Owner, Dataset]  # an instance of a study of each patient, stored by the admin

    def observation(self, owner: Owner) -> str:
        """A fresh Observation of ``owner``'s patient, made by the admin."""
        made = self.client.post(f"{BASE}/Observation", json=observation(f"Patient/{self.patients[owner]}"))
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    def exists(self, id: str, status: str = "final") -> bool:
        """Whether the admin still sees Observation ``id`` live and with ``status``."""
        found = self.client.get(f"{BASE}/Observation/{id}")
        return found.status_code == 200 and found.json()["status"] == status

    def image(self, owner: Owner) -> Dataset:
        """A new instance of ``owner``'s patient (its PatientID is the patient's identifier)."""
        ds = dermoscopic(patient_id=self.families[owner])
        ds.IssuerOfPatientID = MRN
        return ds

    def stow(self, datasets: list[Dataset], headers: dict[str, str] | None = None) -> httpx2.Response:
        body, media = stow_body(*datasets)
        return self.client.post(f"{DICOMWEB}/studies", content=body, headers={**(headers or {}), "Content-Type": media})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("matrix")
    provider = IdentityProvider(directory)
    with make_client(directory / "var", **provider.settings) as client:
        patients: dict[Owner, str] = {}
        families: dict[Owner, str] = {}
        for owner in ("own", "other"):
            families[owner] = f"Matrix{uuid.uuid4().hex[:8]}"
            made = patient(family=families[owner], identifier=[{"system": MRN, "value": families[owner]}])
            patients[owner] = client.post(f"{BASE}/Patient", json=made).json()["id"]
        tokens: dict[Kind, dict[str, str]] = {
            "patient": provider.headers(SCOPES.format(kind="patient"), patients["own"]),
            "user": provider.headers(SCOPES.format(kind="user")),
            "system": {"Authorization": f"Bearer {client.token(scope=SCOPES.format(kind='system'))}"},
            "imaging": {"Authorization": f"Bearer {client.token(scope='system/ImagingStudy.cruds')}"},
            "none": {"Authorization": f"Bearer {client.token(scope='system/Practitioner.cruds')}"},
        }
        world = World(client, patients, families, tokens, {})
        world.images = {owner: world.image(owner) for owner in OWNERS}
        assert world.stow(list(world.images.values())).status_code == 200
        yield world


# -- the probes: each does one interaction on the target patient's data and says allowed or denied -----

Verdict = Literal["allowed", "denied"]
Probe = Callable[[World, dict[str, str], Owner], Verdict]
DENIED = (403, 404)


def _status(response: httpx2.Response, allowed: tuple[int, ...]) -> Verdict:
    if response.status_code in allowed:
        return "allowed"
    assert response.status_code in DENIED, f"{response.status_code}: {response.text}"
    return "denied"


def _ids(response: httpx2.Response) -> set[str]:
    """The ids a searchset or history Bundle holds; a refusal holds none."""
    if response.status_code in DENIED:
        return set()
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", []) if "resource" in e}


def _shows(response: httpx2.Response, id: str) -> Verdict:
    return "allowed" if id in _ids(response) else "denied"


def read(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    return _status(w.client.get(f"{BASE}/Observation/{w.observation(owner)}", headers=h), (200,))


def vread(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    return _status(w.client.get(f"{BASE}/Observation/{w.observation(owner)}/_history/1", headers=h), (200,))


def history_instance(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    id = w.observation(owner)
    return _shows(w.client.get(f"{BASE}/Observation/{id}/_history", headers=h), id)


def history_type(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    id = w.observation(owner)
    return _shows(w.client.get(f"{BASE}/Observation/_history", params={"_count": "5"}, headers=h), id)


def search(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    id = w.observation(owner)
    return _shows(w.client.get(f"{BASE}/Observation", params={"_id": id}, headers=h), id)


def chained_search(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    id = w.observation(owner)
    params = {"_id": id, "subject:Patient.family": w.families[owner]}
    return _shows(w.client.get(f"{BASE}/Observation", params=params, headers=h), id)


def include(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    params = {"_id": w.observation(owner), "_include": "Observation:subject"}
    return _shows(w.client.get(f"{BASE}/Observation", params=params, headers=h), w.patients[owner])


def revinclude(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    id = w.observation(owner)
    params = {"_id": w.patients[owner], "_revinclude": "Observation:subject"}
    return _shows(w.client.get(f"{BASE}/Patient", params=params, headers=h), id)


def has(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    params = {"_has:Observation:subject:_id": w.observation(owner)}
    return _shows(w.client.get(f"{BASE}/Patient", params=params, headers=h), w.patients[owner])


def create(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    made = w.client.post(f"{BASE}/Observation", json=observation(f"Patient/{w.patients[owner]}"), headers=h)
    return _status(made, (201,))


def conditional_create(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    """The body is the caller's own (the launch patient's); the criteria match the target's Observation."""
    id = w.observation(owner)
    body = observation(f"Patient/{w.patients['own']}")
    made = w.client.post(f"{BASE}/Observation", json=body, headers={**h, "If-None-Exist": f"_id={id}"})
    if made.status_code == 201:  # no visible match: a new resource, never the target
        assert made.json()["id"] != id
        return "denied"
    verdict = _status(made, (200,))
    assert verdict == "denied" or made.json()["id"] == id
    return verdict


def update(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    id = w.observation(owner)
    body = {**observation(f"Patient/{w.patients[owner]}"), "id": id, "status": "amended"}
    verdict = _status(w.client.put(f"{BASE}/Observation/{id}", json=body, headers=h), (200,))
    assert w.exists(id, "amended" if verdict == "allowed" else "final")
    return verdict


def conditional_update(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    id = w.observation(owner)
    body = {**observation(f"Patient/{w.patients[owner]}"), "status": "amended"}
    verdict = _status(w.client.put(f"{BASE}/Observation", params={"_id": id}, json=body, headers=h), (200,))
    assert w.exists(id, "amended" if verdict == "allowed" else "final")
    return verdict


def patch(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    id = w.observation(owner)
    body = [{"op": "replace", "path": "/status", "value": "amended"}]
    patched = w.client.patch(
        f"{BASE}/Observation/{id}", json=body, headers={**h, "Content-Type": "application/json-patch+json"}
    )
    verdict = _status(patched, (200,))
    assert w.exists(id, "amended" if verdict == "allowed" else "final")
    return verdict


def delete(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    id = w.observation(owner)
    verdict = _status(w.client.delete(f"{BASE}/Observation/{id}", headers=h), (200,))
    assert w.exists(id) == (verdict == "denied")
    return verdict


def conditional_delete(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    id = w.observation(owner)
    verdict = _status(w.client.delete(f"{BASE}/Observation", params={"_id": id}, headers=h), (200,))
    assert w.exists(id) == (verdict == "denied")
    return verdict


def batch_conditional_reference(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    body = observation(f"Patient?identifier={MRN}|{w.families[owner]}")
    batch = {"resourceType": "Bundle", "type": "batch",
             "entry": [{"request": {"method": "POST", "url": "Observation"}, "resource": body}]}  # fmt: skip
    answer = w.client.post(BASE, json=batch, headers=h)
    assert answer.status_code == 200, answer.text
    (result,) = answer.json()["entry"]
    status = int(result["response"]["status"][:3])
    assert status in (201, *DENIED), result
    assert w.patients[owner] not in str(result) or status == 201  # a refusal names no patient
    return "allowed" if status == 201 else "denied"


def everything(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    id = w.observation(owner)
    return _shows(w.client.get(f"{BASE}/Patient/{w.patients[owner]}/$everything", headers=h), id)


# DICOMweb (PS3.18): a search shows the target patient's study or not; a retrieval answers it or not
def _instance_url(w: World, owner: Owner) -> str:
    ds = w.images[owner]
    return f"{DICOMWEB}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def _shows_study(response: httpx2.Response, w: World, owner: Owner) -> Verdict:
    if response.status_code in (*DENIED, 204):
        return "denied"
    assert response.status_code == 200, response.text
    found = {entry["0020000D"]["Value"][0] for entry in response.json()}
    return "allowed" if w.images[owner].StudyInstanceUID in found else "denied"


def qido_studies(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    params = {"PatientID": w.families[owner]}
    return _shows_study(w.client.get(f"{DICOMWEB}/studies", params=params, headers=h), w, owner)


def qido_study_by_uid(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    params = {"StudyInstanceUID": w.images[owner].StudyInstanceUID}
    return _shows_study(w.client.get(f"{DICOMWEB}/studies", params=params, headers=h), w, owner)


def qido_series(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    url = f"{DICOMWEB}/studies/{w.images[owner].StudyInstanceUID}/series"
    return _shows_study(w.client.get(url, headers=h), w, owner)


def qido_instances(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    params = {"StudyInstanceUID": w.images[owner].StudyInstanceUID}
    return _shows_study(w.client.get(f"{DICOMWEB}/instances", params=params, headers=h), w, owner)


def wado_study(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    url = f"{DICOMWEB}/studies/{w.images[owner].StudyInstanceUID}"
    return _status(w.client.get(url, headers={**h, "Accept": 'multipart/related; type="application/dicom"'}), (200,))


def wado_metadata(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    return _status(w.client.get(f"{_instance_url(w, owner)}/metadata", headers=h), (200,))


def wado_frames(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    return _status(w.client.get(f"{_instance_url(w, owner)}/frames/1", headers=h), (200,))


def wado_rendered(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    return _status(w.client.get(f"{_instance_url(w, owner)}/rendered", headers={**h, "Accept": "image/png"}), (200,))


def stow(w: World, h: dict[str, str], owner: Owner) -> Verdict:
    ds = w.image(owner)
    verdict = _status(w.stow([ds], h), (200,))
    found = w.client.get(f"{DICOMWEB}/instances", params={"SOPInstanceUID": ds.SOPInstanceUID})
    assert (found.status_code == 200) == (verdict == "allowed")  # a refused object is not stored
    return verdict


PROBES: dict[str, Probe] = {
    "read": read,
    "vread": vread,
    "history-instance": history_instance,
    "history-type": history_type,
    "search": search,
    "chained-search": chained_search,
    "include": include,
    "revinclude": revinclude,
    "has": has,
    "create": create,
    "conditional-create": conditional_create,
    "update": update,
    "conditional-update": conditional_update,
    "patch": patch,
    "delete": delete,
    "conditional-delete": conditional_delete,
    "batch-conditional-reference": batch_conditional_reference,
    "everything": everything,
    "dicomweb-qido-studies": qido_studies,
    "dicomweb-qido-study-by-uid": qido_study_by_uid,
    "dicomweb-qido-series": qido_series,
    "dicomweb-qido-instances": qido_instances,
    "dicomweb-wado-study": wado_study,
    "dicomweb-wado-metadata": wado_metadata,
    "dicomweb-wado-frames": wado_frames,
    "dicomweb-wado-rendered": wado_rendered,
    "dicomweb-stow": stow,
}
PATIENT_NEVER = frozenset({"history-type", "conditional-update", "conditional-delete", "dicomweb-stow"})
KINDS: tuple[Kind, ...] = ("patient", "user", "system", "imaging", "none")
OWNERS: tuple[Owner, ...] = ("own", "other")


def expected(interaction: str, kind: Kind, owner: Owner) -> Verdict:
    """The rule the server must follow (see the module docstring)."""
    if kind == "none":
        return "denied"
    if kind == "imaging":  # no Patient scope: stores images, reads nothing (objects carry the Patient module)
        return "allowed" if interaction == "dicomweb-stow" else "denied"
    if kind == "patient":
        return "allowed" if owner == "own" and interaction not in PATIENT_NEVER else "denied"
    return "allowed"


@pytest.mark.parametrize(
    ("interaction", "kind", "owner"),
    [(i, k, o) for i in PROBES for k in KINDS for o in OWNERS],
    ids=lambda v: str(v),
)
def test_scope_matrix(world: World, interaction: str, kind: Kind, owner: Owner) -> None:
    verdict = PROBES[interaction](world, world.tokens[kind], owner)
    assert verdict == expected(interaction, kind, owner)
