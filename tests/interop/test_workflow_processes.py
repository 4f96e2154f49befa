"""Issue 14 end to end with real processes: ``dermbridge serve`` as its own process (DIMSE, the demo model,
the workflow engine, the Subscription worker), dcmtk's storescu as the device, reviewer clients acting for
their Practitioner over HTTP, the EHR's rest-hook endpoint (a real HTTP server) and an SMTP server
(aiosmtpd). Each of the four shipped flows is activated by the tenant in the running server (the FHIR API's
``$activate``, or the CLI) and applies to the next image without a restart. The EHR subscribes to final
reports (rest-hook, the report as payload) and the dermatology team to the review queue (email: a review
Task that is ``requested``, i.e. opened or back in the queue). A kill -9 of the server (and its audit
loader) right after an image is acknowledged, and again while a notification is undelivered, resumes on
restart without a second Task or a second notification.

Every "exactly" is counted once every outbox consumer has acknowledged every event (``Clinic.settled``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.fhir_server.subscriptions.endpoints import HookServer, Inbox, hook_server, smtp_server
from tests.inference.test_worker import lesion_instance
from tests.interop.clinic import CASE_TASK, NAEVUS, REVIEW, SERVER_ENV, SNOMED, Clinic, Reviewer, override, until
from tests.server import cli, crash, free_port, running_server

pytestmark = pytest.mark.interop
BENIGN_SEED, SUSPICIOUS_SEED = 26, 28  # the demo model: nevus 1.00; melanoma 0.99
TEAM = "dermatology-team@example.org"
MELANOMA = {"coding": [{"system": SNOMED, "code": "93655004", "display": "Malignant melanoma of skin"}]}
BENIGN = "Benign melanocytic naevus; no follow-up needed."
FINAL = "DiagnosticReport?status=final"
QUEUED = f"Task?code={REVIEW}&status=requested"


@dataclass
class Ehr:
    hook: HookServer
    inbox: Inbox

    def puts(self, report_id: str) -> list[dict[str, Any]]:
        """The final reports the rest-hook endpoint received for the case."""
        path = f"/hook/DiagnosticReport/{report_id}"
        return [json.loads(r.body) for r in self.hook.received if r.path == path and r.method == "PUT"]

    def emails(self, task_id: str) -> list[str]:
        """The Message-IDs of the emails about the review Task (a link to it, nothing personal)."""
        link = f"/fhir/default/Task/{task_id}"
        return [str(m["Message-ID"]) for _, m in self.inbox.messages if any(
            word.endswith(link) for word in m.get_content().split())]  # fmt: skip

    def refuse(self, refusing: bool) -> None:
        """The endpoint answers 503 and the mail server 451 (try later) while ``refusing``."""
        self.hook.fail_next = 10**6 if refusing else 0
        self.inbox.refusing = refusing


def notify_config(tmp: Path, smtp_port: int) -> Path:
    path = tmp / "notify.json"
    smtp = {"host": "127.0.0.1", "port": smtp_port, "tls": "none", "sender": "noreply@dermbridge.test"}
    path.write_text(json.dumps({"default": {"smtp": smtp}}))
    return path


@contextmanager
def ehr_endpoints() -> Iterator[tuple[Ehr, int]]:
    with hook_server() as hook, smtp_server() as (smtp_port, inbox):
        yield Ehr(hook, inbox), smtp_port


def subscribe(clinic: Clinic, hook: HookServer) -> None:
    """The EHR's Subscriptions: final reports by rest-hook (the report as payload), the queue by email."""
    reports = {"resourceType": "Subscription", "status": "requested", "reason": "final reports to the EHR",
               "criteria": FINAL, "channel": {"type": "rest-hook", "endpoint": hook.url,
                                              "payload": "application/fhir+json"}}  # fmt: skip
    queue = {"resourceType": "Subscription", "status": "requested", "reason": "cases waiting for a dermatologist",
             "criteria": QUEUED, "channel": {"type": "email", "endpoint": f"mailto:{TEAM}"}}  # fmt: skip
    for body in (reports, queue):
        assert clinic.post("Subscription", body)["status"] == "active"


def image(tmp: Path, name: str, seed: int, suspicious: bool = True, mrn: str = "", **study: Any) -> Path:
    """A dermoscopic image of patient ``mrn`` (default ``name``) in a file ``name``.dcm."""
    path = tmp / f"{name}.dcm"
    ds = lesion_instance(mrn or name, seed=seed, suspicious=suspicious, accession=mrn or name, **study)
    ds.save_as(path, enforce_file_format=True)
    return path


@dataclass
class Site:
    clinic: Clinic
    ehr: Ehr
    tmp: Path
    reviewers: dict[str, Reviewer]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("flows")
    data, dimse = tmp / "var", free_port()
    with ehr_endpoints() as (ehr, smtp_port):
        env = {**SERVER_ENV, "DERMBRIDGE_DICOM_PORT": str(dimse),
               "DERMBRIDGE_NOTIFY_CONFIG": str(notify_config(tmp, smtp_port))}  # fmt: skip
        with running_server(data, env=env) as server:
            clinic = Clinic(server, data, dimse)
            subscribe(clinic, ehr.hook)
            reviewers = {name: clinic.reviewer(name) for name in ("Dr Ada", "Dr Ben")}
            yield Site(clinic, ehr, tmp, reviewers)
            for reviewer in reviewers.values():
                reviewer.http.close()
        assert "Traceback" not in server.output, server.output[-4000:]


def count(clinic: Clinic, path: str, **params: str) -> int:
    return len(clinic.found(path, **params))


def assert_one_tree(clinic: Clinic, report_id: str, root: dict[str, Any]) -> None:
    """One root Task for the case, one Task per step, one review Task (none duplicated)."""
    focus = f"DiagnosticReport/{report_id}"
    assert count(clinic, "Task", code=CASE_TASK, focus=focus) == 1
    steps = [t["code"]["coding"][0]["code"] for t in clinic.found("Task", **{"part-of": f"Task/{root['id']}"})]
    assert len(steps) == len(set(steps)), steps
    assert count(clinic, "Task", code=REVIEW, focus=focus) <= 1


def lesion_of(clinic: Clinic, patient_id: str) -> str:
    """The patient's lesion (the first, when a study's images show several)."""
    lesions = clinic.found("BodyStructure", patient=f"Patient/{patient_id}")
    return f"BodyStructure/{lesions[0]['id']}"


def assert_signed_off(site: Site, report_id: str, reviewer: Reviewer) -> dict[str, Any]:
    """The case is final with the reviewer as interpreter, and the EHR got it exactly once."""
    site.clinic.settled()
    report = site.clinic.get(f"DiagnosticReport/{report_id}")
    assert report["status"] == "final"
    assert [r["reference"] for r in report["resultsInterpreter"]] == [reviewer.practitioner]
    (sent,) = site.ehr.puts(report_id)
    assert sent["status"] == "final" and sent["resultsInterpreter"] == report["resultsInterpreter"]
    return report


def test_ai_then_signoff_claim_decline_reclaim_and_decide(site: Site) -> None:
    clinic, ehr, ada, ben = site.clinic, site.ehr, site.reviewers["Dr Ada"], site.reviewers["Dr Ben"]
    plan = clinic.activate("ai-then-signoff")
    patient = clinic.consenting_patient("E2E-SO")
    clinic.storescu(image(site.tmp, "E2E-SO", SUSPICIOUS_SEED))
    report, root = clinic.case(patient)
    assert root["instantiatesCanonical"] == f"{plan['url']}|{plan['version']}"  # no restart needed
    task = clinic.review(report["id"])
    clinic.settled()
    task = clinic.get(f"Task/{task['id']}")
    assert task["status"] == "requested" and task["priority"] == "asap"  # melanoma 0.99: the 2-week wait
    ai = risks(clinic, patient)
    assert len(ehr.emails(task["id"])) == 1 and ehr.puts(report["id"]) == []

    assert task["id"] in [t["id"] for t in ada.worklist()]
    claimed = ada.must(task["id"], "claim")
    assert claimed["status"] == "in-progress" and claimed["owner"]["reference"] == ada.practitioner
    assert ben.op(task["id"], "claim").status_code == 409  # a claim is exclusive
    declined = ada.must(task["id"], "decline", {"name": "reason", "valueCode": "outside-expertise"})
    assert declined["status"] == "requested" and "owner" not in declined
    assert task["id"] not in [t["id"] for t in ada.worklist()]  # not offered again to who declined it
    clinic.settled()  # each state reaches the Subscription worker before the next (it matches the current one)
    assert len(ehr.emails(task["id"])) == 2  # back in the queue: the team is told again
    ben.must(task["id"], "claim")
    clinic.settled()
    assert ben.must(task["id"], "release")["status"] == "requested"
    clinic.settled()
    ben.must(task["id"], "claim")  # re-claimed
    # the demo model's output is no diagnosis to confirm: the reviewer records their own
    refused = ben.op(task["id"], "complete", {"name": "decision", "valueCode": "confirm"})
    assert refused.status_code == 422 and "demonstration model" in refused.json()["issue"][0]["diagnostics"]
    done = ben.must(task["id"], "complete", *override(lesion_of(clinic, patient), MELANOMA, "asap"))
    assert done["status"] == "completed"

    signed = assert_signed_off(site, report["id"], ben)
    clinician = [clinic.get(r["reference"]) for r in signed["result"]]
    assert {o["id"] for o in ai} <= {o["id"] for o in clinician}  # the AI's results stay beside the clinician's
    decided = [o for o in clinician if any(p["reference"] == ben.practitioner for p in o.get("performer", []))]
    assert [o["valueCodeableConcept"]["coding"][0]["code"] for o in decided] == ["93655004"]
    outputs = [o["valueReference"]["reference"] for o in done["output"] if "valueReference" in o]
    provenance = clinic.get(next(r for r in outputs if r.startswith("Provenance/")))
    assert provenance["agent"][0]["who"]["reference"] == ben.practitioner
    assert provenance["agent"][0]["type"]["coding"][0]["code"] == "verifier"
    # the team was told each time the case entered the queue: opened, after the decline, after the release
    assert len(set(ehr.emails(task["id"]))) == len(ehr.emails(task["id"])) == 3
    assert_one_tree(clinic, report["id"], root)


def test_ai_only_with_the_demo_model_goes_to_a_reviewer_who_overrides(site: Site) -> None:
    clinic, ehr, ada = site.clinic, site.ehr, site.reviewers["Dr Ada"]
    clinic.activate("ai-only")
    patient = clinic.consenting_patient("E2E-AI")
    clinic.storescu(image(site.tmp, "E2E-AI", BENIGN_SEED, suspicious=False))
    report, root = clinic.case(patient)
    task = clinic.review(report["id"])
    clinic.settled()
    assert root["instantiatesCanonical"].startswith("urn:dermbridge:workflow:ai-only|")
    assert clinic.get(f"Task/{task['id']}")["priority"] == "routine"  # benign, but not cleared for clinical use
    assert len(ehr.emails(task["id"])) == 1
    ada.must(task["id"], "claim")
    done = ada.must(task["id"], "complete", *override(lesion_of(clinic, patient), NAEVUS, "routine", BENIGN))
    assert done["status"] == "completed"
    signed = assert_signed_off(site, report["id"], ada)
    assert signed["conclusion"] == "Benign melanocytic naevus; no follow-up needed."
    assert len(ehr.emails(task["id"])) == 1
    assert_one_tree(clinic, report["id"], root)


def test_human_only_runs_no_ai_and_the_reviewer_decides(site: Site) -> None:
    clinic, ehr, ben = site.clinic, site.ehr, site.reviewers["Dr Ben"]
    clinic.activate("human-only")
    patient = clinic.consenting_patient("E2E-HU")
    clinic.storescu(image(site.tmp, "E2E-HU", SUSPICIOUS_SEED))
    report, root = clinic.case(patient)
    task = clinic.review(report["id"])
    clinic.settled()
    assert root["instantiatesCanonical"].startswith("urn:dermbridge:workflow:human-only|")
    assert count(clinic, "Observation", subject=f"Patient/{patient}") == 0  # no model ran
    ben.must(task["id"], "claim")
    ben.must(task["id"], "complete", *override(lesion_of(clinic, patient), NAEVUS, "routine", BENIGN))
    assert_signed_off(site, report["id"], ben)
    assert len(ehr.emails(task["id"])) == 1
    assert_one_tree(clinic, report["id"], root)


def test_store_only_activated_by_the_cli_runs_nothing_and_notifies_nobody(site: Site) -> None:
    clinic, ehr = site.clinic, site.ehr
    data = ["--tenant", "default", "--data-dir", str(clinic.data_dir)]
    imported = cli("workflow", "import", "shipped:store-only", *data)
    assert imported.returncode == 0, imported.stderr
    plan_id = imported.stdout.split("PlanDefinition/")[1].split()[0]
    activated = cli("workflow", "activate", plan_id, *data)
    assert activated.returncode == 0, activated.stderr  # written to the files the running server reads
    patient = clinic.consenting_patient("E2E-ST")
    clinic.storescu(image(site.tmp, "E2E-ST", SUSPICIOUS_SEED))
    report, root = clinic.case(patient)
    clinic.settled()
    root = clinic.get(f"Task/{root['id']}")
    assert root["status"] == "completed" and root["businessStatus"]["text"] == "stored"
    assert root["instantiatesCanonical"].startswith("urn:dermbridge:workflow:store-only|")
    assert count(clinic, "Observation", subject=f"Patient/{patient}") == 0
    assert count(clinic, "Task", code=REVIEW, focus=f"DiagnosticReport/{report['id']}") == 0
    assert ehr.puts(report["id"]) == [] and clinic.get(f"DiagnosticReport/{report['id']}")["status"] != "final"
    assert_one_tree(clinic, report["id"], root)


def test_kill_9_mid_flow_resumes_without_a_second_task_or_notification(tmp_path: Path) -> None:
    """Three kills: right after an image is acknowledged; right after ``$resume`` of a halted case hands the
    engine the events that waited (a second image and its findings); while the final report's notification
    is owed. The endpoints refuse until each restart, so no delivery is cut short by a kill (that one would
    be sent again: delivery is at least once); what is counted is what the server does twice by itself."""
    data, dimse = tmp_path / "var", free_port()
    with ehr_endpoints() as (ehr, smtp_port):
        env = {**SERVER_ENV, "DERMBRIDGE_DICOM_PORT": str(dimse),
               "DERMBRIDGE_NOTIFY_CONFIG": str(notify_config(tmp_path, smtp_port))}  # fmt: skip
        ehr.refuse(True)
        with running_server(data, env=env) as first:
            clinic = Clinic(first, data, dimse)
            clinic.activate("ai-then-signoff")
            subscribe(clinic, ehr.hook)
            reviewer = clinic.reviewer("Dr Ada")
            patient = clinic.consenting_patient("E2E-KILL")
            clinic.storescu(image(tmp_path, "E2E-KILL", SUSPICIOUS_SEED))  # acknowledged: durable
            crash(first.process.pid)  # at once: the engine and the AI are on it, or about to be
        with running_server(data, env=env) as second:
            clinic.server = second
            ehr.refuse(False)
            report, root = clinic.case(patient)
            task = clinic.review(report["id"])
            until(lambda: len(ehr.emails(task["id"])) >= 1, "the review email")
            clinic.settled()
            assert_one_tree(clinic, report["id"], root)
            assert count(clinic, "Task", code=REVIEW, focus=f"DiagnosticReport/{report['id']}") == 1
            assert len(risks(clinic, patient)) == 2  # one result per class of the demo model, not per attempt
            assert len(ehr.emails(task["id"])) == 1

            ehr.refuse(True)
            clinic.post(f"Task/{root['id']}/$halt", reason("a second image is on its way"))
            study = pydicom.dcmread(tmp_path / "E2E-KILL.dcm").StudyInstanceUID
            clinic.storescu(image(tmp_path, "E2E-KILL-2", SUSPICIOUS_SEED + 1, mrn="E2E-KILL", study_uid=study))
            clinic.settled()  # the second image's events wait on the halted case's root Task
            assert "deferred-event" in json.dumps(clinic.get(f"Task/{root['id']}")["input"])
            clinic.post(f"Task/{root['id']}/$resume", reason("the images are complete"))
            crash(second.process.pid)  # the engine is on the events that waited, or about to be
        with running_server(data, env=env) as third:
            clinic.server = third
            reviewer.sign_in()
            ehr.refuse(False)
            clinic.settled()
            assert clinic.get(f"Task/{root['id']}")["status"] == "in-progress"
            assert len(risks(clinic, patient)) == 4  # both images analysed, each once
            assert count(clinic, "Task", code=REVIEW, focus=f"DiagnosticReport/{report['id']}") == 1
            assert clinic.get(f"Task/{task['id']}")["status"] == "requested"
            assert len(ehr.emails(task["id"])) == 1  # the open review was kept, not opened again
            assert_one_tree(clinic, report["id"], root)

            reviewer.must(task["id"], "claim")
            ehr.refuse(True)
            refused = ehr.hook.attempts
            reviewer.must(task["id"], "complete", *override(lesion_of(clinic, patient), NAEVUS, "routine"))  # committed
            until(lambda: ehr.hook.attempts > refused, "a refused delivery of the final report")
            crash(third.process.pid)  # the notification is owed and not sent
        with running_server(data, env=env) as fourth:
            clinic.server = fourth
            ehr.refuse(False)
            until(lambda: ehr.puts(report["id"]), "the final report at the EHR after the restart")
            clinic.settled()
            assert len(ehr.puts(report["id"])) == 1
            assert len(ehr.emails(task["id"])) == 1
            assert clinic.get(f"Task/{task['id']}")["status"] == "completed"
            assert_one_tree(clinic, report["id"], root)
        reviewer.http.close()


def reason(text: str) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": text}]}


def risks(clinic: Clinic, patient: str) -> list[dict[str, Any]]:
    return clinic.found("Observation", subject=f"Patient/{patient}", code="urn:dermbridge:ai-risk|")
