"""The reviewer app (``/app/``) in a real browser: Playwright driving Debian's Chromium (``/usr/bin/chromium``,
never a downloaded browser) against a real ``dermbridge serve`` with the demo model, a case made by C-STORE
of a real image (``tests.interop.clinic``). Reviewers sign in with the built-in user directory, or at the
hospital's OpenID provider (``tests.fhir_server.people.oidc_provider``, a real one on loopback with a sign-in form).

Each page is audited with axe-core (installed by ``make install`` under ``.venv/node``; never fetched at test
time): no serious or critical violation. Any content security policy violation the browser reports fails the
test. Screenshots of each page go to ``tmp/screenshots/reviewer_app/`` (git-ignored)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fhir_server.people import oidc_provider
from tests.interop.clinic import DERMATOLOGY, SERVER_ENV, Clinic
from tests.interop.test_workflow_processes import SUSPICIOUS_SEED, image
from tests.server import free_port, running_server

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.interop
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / ".venv" / "node" / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = ROOT / "tmp" / "screenshots" / "reviewer_app"
PASSWORD = "a long test password 42"
MELANOMA = "93655004"
AXE_RUN = """async () => (await axe.run(document, {resultTypes: ['violations']})).violations
    .map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' '))}))"""


@dataclass
class Site:
    clinic: Clinic
    task_id: str
    report_id: str
    users: dict[str, str]  # username -> Practitioner reference
    provider: oidc_provider.Provider


def _user(clinic: Clinic, username: str, role_period: dict[str, str] | None = None, subject: str = "") -> str:
    """A Practitioner with a Dermatology PractitionerRole and a built-in directory user of theirs (signing in at
    the hospital's OpenID provider as ``subject`` when given)."""
    practitioner = clinic.post("Practitioner", {"resourceType": "Practitioner", "name": [{"text": username}]})["id"]
    role: dict[str, Any] = {"resourceType": "PractitionerRole", "active": True, "specialty": [DERMATOLOGY],
                            "practitioner": {"reference": f"Practitioner/{practitioner}"}}  # fmt: skip
    if role_period:
        role["period"] = role_period
    clinic.post("PractitionerRole", role)
    command = [sys.executable, "-m", "dermbridge", "user", "create", "--tenant", "default", "--username", username,
               "--practitioner", practitioner, "--role", "clinician-reviewer", "--password-stdin",
               "--data-dir", str(clinic.data_dir), *(["--oidc-subject", subject] if subject else [])]  # fmt: skip
    made = subprocess.run(command, input=PASSWORD, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    return f"Practitioner/{practitioner}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not CHROMIUM.exists() or not AXE.exists():
        pytest.fail(f"{CHROMIUM} (make system-deps) and {AXE} (make install) are needed")
    tmp = tmp_path_factory.mktemp("reviewer-app")
    data, dimse = tmp / "var", free_port()
    with oidc_provider.running_provider() as provider:
        env = {**SERVER_ENV, "DERMBRIDGE_DICOM_PORT": str(dimse), **oidc_provider.provider_env(provider)}
        yield from _site(tmp, data, dimse, env, provider)


def _site(tmp: Path, data: Path, dimse: int, env: dict[str, str], provider: oidc_provider.Provider) -> Iterator[Site]:
    with running_server(data, env=env) as server:
        provider.login_form = True
        clinic = Clinic(server, data, dimse)
        clinic.activate("ai-then-signoff")
        users = {name: _user(clinic, name) for name in ("ada", "ben")}
        users["hana"] = _user(clinic, "hana", subject="hospital-hana")
        users["cy"] = _user(clinic, "cy", {"start": "2020-01-01", "end": "2021-01-01"})  # credential expired
        patient = clinic.consenting_patient("APP-1")
        clinic.storescu(image(tmp, "APP-1", SUSPICIOUS_SEED))
        report, _root = clinic.case(patient)
        task = clinic.review(report["id"])
        clinic.settled()  # the AI findings and the saliency map are written
        yield Site(clinic, task["id"], report["id"], users, provider)
    assert "Traceback" not in server.output, server.output[-4000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


class Reviewer:
    """One person's browser context (their own cookies), failing on any CSP violation."""

    def __init__(self, browser: Any, site: Site, username: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 1000})
        self.page = self.context.new_page()
        self.root = site.clinic.server.root
        self.violations: list[str] = []
        self.page.on("console", self._console)

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.violations.append(message.text)

    def sign_in(self, username: str) -> None:
        self.page.goto(f"{self.root}/app/")
        assert "/auth/login" in self.page.url  # no session: the sign-in page
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(f"{self.root}/app/")

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def audit(self) -> None:
        """axe-core on the page as it is: no serious or critical violation, no CSP violation."""
        self.page.evaluate(AXE.read_text() + "\n;0")  # evaluated by the driver, not injected as inline script
        found = self.page.evaluate(AXE_RUN)
        assert [v for v in found if v["impact"] in ("serious", "critical")] == []
        assert self.violations == []

    def close(self) -> None:
        self.context.close()


def _claim_button(reviewer: Reviewer, task_id: str) -> Any:
    return reviewer.page.locator(f"tr[data-task='{task_id}']").get_by_role("button", name="Claim")


def test_a_reviewer_claims_views_the_overlay_overrides_and_signs_off(browser: Any, site: Site) -> None:
    ada, ben, cy = (Reviewer(browser, site, name) for name in ("ada", "ben", "cy"))
    ada.sign_in("ada")
    row = ada.page.locator(f"tr[data-task='{site.task_id}']")
    assert row.is_visible() and "asap" in row.inner_text()  # the demo model's melanoma score: the 2-week wait
    assert ada.page.locator("#count-total").inner_text() == "1"
    ada.shot("worklist")
    ada.audit()

    ben.sign_in("ben")  # Ben's worklist offers the case too, until someone claims it
    assert _claim_button(ben, site.task_id).is_visible()
    ben.page.goto(f"{ben.root}/app/cases/{site.task_id}")  # the case page Ben opens before Ada's claim

    cy.sign_in("cy")  # an expired PractitionerRole: the case is not offered, and claiming it is refused
    assert cy.page.locator(f"tr[data-task='{site.task_id}']").count() == 0
    cy.page.goto(f"{cy.root}/app/cases/{site.task_id}")
    cy.page.locator("#claim").click()
    assert "the role (credential) expired on 2021-01-01" in cy.page.get_by_role("alert").inner_text()
    cy.shot("claim-refused-expired")

    _claim_button(ada, site.task_id).click()
    ada.page.wait_for_url(f"{ada.root}/app/cases/{site.task_id}")
    ben.page.locator("#claim").click()  # the page Ben loaded before Ada's claim
    assert ben.page.get_by_role("alert").is_visible()
    assert ben.page.url.endswith(f"/app/cases/{site.task_id}/claim")
    ben.shot("claim-refused-taken")

    case = ada.page
    assert case.locator("#demo-label").is_visible()
    assert case.locator("#d-confirm").count() == 0  # a demonstration model's output cannot be confirmed
    overlay = case.locator("img.overlay").first
    overlay.wait_for(state="visible")
    drawn = overlay.evaluate("img => img.complete && img.naturalWidth > 0")
    image_drawn = case.locator("img.image").first.evaluate("img => img.complete && img.naturalWidth > 0")
    assert drawn and image_drawn
    opacity = overlay.evaluate("img => getComputedStyle(img).opacity")
    assert opacity == "0.5"
    case.locator(".overlay-opacity").first.focus()
    case.keyboard.press("End")
    assert overlay.evaluate("img => getComputedStyle(img).opacity") == "1"
    case.locator("h1").click()
    case.keyboard.press("o")  # the on/off key
    assert overlay.is_hidden()
    case.keyboard.press("o")
    assert overlay.is_visible()
    assert case.locator("#body-map").is_visible() and case.locator("#case-history").is_visible()
    image = case.locator("img.image").first
    assert "viewport=" in (image.get_attribute("src") or "")  # the rendering at viewport size first
    case.locator(".zoom-in").first.click()
    case.wait_for_function(
        "() => { const img = document.querySelector('img.image');"
        " return !img.src.includes('viewport=') && img.complete && img.naturalWidth > 0; }"
    )
    assert case.locator(".zoom-level").first.inner_text() == "150%"  # full resolution on demand, drawn
    case.locator(".zoom-reset").first.click()
    ada.shot("case")
    ada.audit()

    case.goto(f"{ada.root}/app/?status=mine")  # the filters: claimed by me, then waiting to be claimed
    assert case.locator("#count-mine").inner_text() == "1"
    assert case.locator(f"tr[data-task='{site.task_id}']").get_by_role("button", name="Release").is_visible()
    case.locator("#status").select_option("queued")
    case.get_by_role("button", name="Filter").click()
    case.wait_for_url("**status=queued**")
    assert case.locator(f"tr[data-task='{site.task_id}']").count() == 0
    case.goto(f"{ada.root}/app/cases/{site.task_id}")

    case.locator("#diagnosis").select_option(MELANOMA)
    case.locator("#urgency").select_option("asap")
    case.locator("#management").select_option("biopsy")
    case.locator("#note").fill("Atypical network; excise.")
    case.locator("#note").press("Control+Enter")  # the sign-off shortcut
    case.wait_for_url(f"{ada.root}/app/?done=complete")
    ada.shot("worklist-after-sign-off")

    report = site.clinic.get(f"DiagnosticReport/{site.report_id}")  # over the FHIR API
    assert report["status"] == "final"
    assert [r["reference"] for r in report["resultsInterpreter"]] == [site.users["ada"]]
    assert "Biopsy" in report["conclusion"]

    ada.page.locator("#logout").click()
    ada.page.wait_for_url("**/auth/login**")
    ada.page.goto(f"{ada.root}/app/")
    assert "/auth/login" in ada.page.url  # the session ended
    for reviewer in (ada, ben, cy):
        reviewer.close()


def test_an_open_worklist_follows_new_and_claimed_cases_without_reload(
    browser: Any, site: Site, tmp_path: Path
) -> None:
    """Server-sent events: a case that arrives, then a case another reviewer claims, change the list in place."""
    ada, ben = Reviewer(browser, site, "ada"), Reviewer(browser, site, "ben")
    ada.sign_in("ada")
    ada.page.locator("body[data-live='on']").wait_for(timeout=30_000)  # the event stream is open
    ada.page.evaluate("document.body.dataset.loadedOnce = 'yes'")  # gone if the page were reloaded

    patient = site.clinic.consenting_patient("APP-LIVE")  # a new case: C-STORE, AI, review Task
    site.clinic.storescu(image(tmp_path, "APP-LIVE", SUSPICIOUS_SEED))
    report, _root = site.clinic.case(patient)
    task = site.clinic.review(report["id"])
    _claim_button(ada, task["id"]).wait_for(timeout=60_000)

    ben.sign_in("ben")
    _claim_button(ben, task["id"]).click()
    ben.page.wait_for_url(f"{ben.root}/app/cases/{task['id']}")
    _claim_button(ada, task["id"]).wait_for(state="detached", timeout=60_000)  # no longer offered to Ada
    assert ada.page.evaluate("document.body.dataset.loadedOnce") == "yes"
    ada.shot("worklist-live")
    ada.audit()
    for reviewer in (ada, ben):
        reviewer.close()


def test_an_administrator_adds_a_dicom_caller_and_a_reviewer_is_refused_the_admin_pages(
    browser: Any, site: Site
) -> None:
    """The admin flow (issue 18, "Admin"): an admin adds a calling AE on the DICOM page (stored for the running
    listener), the page passes the accessibility audit; a reviewer opening an admin page gets the 403 page."""
    clinic = site.clinic
    practitioner = clinic.post("Practitioner", {"resourceType": "Practitioner", "name": [{"text": "dee"}]})["id"]
    command = [sys.executable, "-m", "dermbridge", "user", "create", "--tenant", "default", "--username", "dee",
               "--practitioner", practitioner, "--role", "admin", "--password-stdin",
               "--data-dir", str(clinic.data_dir)]  # fmt: skip
    made = subprocess.run(command, input=PASSWORD, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    dee, ben = Reviewer(browser, site, "dee"), Reviewer(browser, site, "ben")
    dee.sign_in("dee")
    dee.page.locator("#admin-link").click()
    dee.page.get_by_role("link", name="DICOM peers").click()
    dee.page.wait_for_url("**/app/admin/dicom")
    dee.page.get_by_label("AE title", exact=True).first.fill("BROWSERCAM")
    dee.page.locator("#service-echo").check()
    dee.page.locator("#service-store").check()
    dee.page.get_by_role("button", name="Save the calling AE").click()
    dee.page.wait_for_url("**/app/admin/dicom")
    assert "echo, store" in dee.page.locator("tr[data-ae='BROWSERCAM']").inner_text()
    dee.shot("admin-dicom")
    dee.audit()
    dee.page.get_by_role("link", name="Audit trail").click()
    dee.page.get_by_role("button", name="Verify the trail").click()
    assert "audit trail of default:" in dee.page.locator("#verified").inner_text()
    # the change, in the trail: filtered to Security Alerts (110113), since every page read is audited too and
    # the live worklists' reads can push it off the first page of the unfiltered list
    dee.page.locator("#type").fill("110113")
    dee.page.locator("#type").press("Enter")
    dee.page.wait_for_url("**/app/admin/audit?*type=110113*")
    assert "calling AE BROWSERCAM" in dee.page.locator("#events").inner_text()
    dee.shot("admin-audit")
    dee.audit()

    ben.sign_in("ben")
    assert ben.page.locator("#admin-link").count() == 0
    refused = ben.page.goto(f"{ben.root}/app/admin/dicom")
    assert refused is not None and refused.status == 403
    assert "Administrators only" in ben.page.locator("h1").inner_text()
    ben.audit()
    for person in (dee, ben):
        person.close()


def test_sign_in_at_the_hospital_openid_provider(browser: Any, site: Site) -> None:
    """The external-provider path (OpenID Connect Core §3.1): the app, the hospital's sign-in page, back signed in
    to the worklist; a provider subject that is no active user here is refused with a clear page."""
    hana = Reviewer(browser, site, "hana")
    hana.page.goto(f"{hana.root}/app/")
    hana.page.get_by_role("link", name="Sign in with your hospital account").click()
    hana.page.wait_for_url(f"{site.provider.issuer}/authorize**")
    hana.page.get_by_label("Hospital username").fill("hospital-hana")
    hana.page.get_by_label("Hospital password").fill(oidc_provider.PASSWORD)
    hana.page.get_by_role("button", name="Sign in at the hospital").click()
    hana.page.wait_for_url(f"{hana.root}/app/")
    assert hana.page.locator("#count-total").is_visible()  # the worklist, as Hana
    session = hana.page.request.get(f"{hana.root}/auth/session").json()
    assert session["username"] == "hana" and session["fhirUser"] == site.users["hana"]
    hana.shot("worklist-hospital-sign-in")
    hana.audit()
    hana.close()

    stranger = Reviewer(browser, site, "stranger")
    stranger.page.goto(f"{stranger.root}/app/")
    stranger.page.get_by_role("link", name="Sign in with your hospital account").click()
    stranger.page.get_by_label("Hospital username").fill("hospital-nobody")
    stranger.page.get_by_label("Hospital password").fill(oidc_provider.PASSWORD)
    stranger.page.get_by_role("button", name="Sign in at the hospital").click()
    stranger.page.wait_for_url(f"{stranger.root}/auth/oidc/callback**")
    assert "not registered for DermBridge" in stranger.page.content()
    assert stranger.page.request.get(f"{stranger.root}/auth/session").status == 401
    stranger.shot("hospital-sign-in-refused")
    stranger.audit()
    stranger.close()
