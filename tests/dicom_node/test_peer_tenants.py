"""A calling AE title belongs to one tenant (pentest-5 F1, F9): the admin page refuses a title another tenant
lists; a title listed by several tenants (stored before this check, or by two admins at once) is refused for
all of them, logged; an open association keeps the tenant it was admitted for; a host entry with host bits set
is stored as its network, and one tenant's unreadable entries never stop the node or the other tenants' peers.
Real parts: the app in process over httpx (two tenants, an admin of each signed in with the page's CSRF token),
its DIMSE listener on a real socket, pynetdicom as the scanner's SCU, real SQLite."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import DermoscopicPhotographyImageStorage, Verification  # type: ignore[attr-defined]

from dicom_node import statuses
from dicom_node.attributes import INSTANCE
from fhir_server import dicom_peers
from fhir_server.tenant_settings import write_setting
from tests.conftest import FhirTestClient, make_client
from tests.dicom_factories import dermoscopic
from tests.dicom_node.conftest import stored_dataset
from tests.fhir_server.reviewer_app.test_admin_pages import NO_TOKEN, PASSWORD, sign_in
from tests.server import free_port

pytestmark = pytest.mark.interop
SCANNER = {"SCANNER1": {"tenant": "default", "roles": ["echo", "store"], "hosts": ["127.0.0.1"]}}


class Node:
    def __init__(self, client: FhirTestClient, port: int) -> None:
        self.client, self.port = client, port

    def call(self, work: Any, *args: Any) -> Any:
        return self.client.portal.call(work, *args)

    def store_of(self, tenant: str) -> Any:
        return self.call(self.client.app.state.engine.tenant, tenant)  # type: ignore[attr-defined]

    def set_peers(self, tenant: str, peers: dict[str, Any]) -> None:
        """Store a tenant's peers as they are (as an older version, or a concurrent change, may have)."""
        self.call(write_setting, self.store_of(tenant), dicom_peers.SETTING, peers)

    def associate(self, calling: str) -> Association:
        ae = AE(ae_title=calling)
        ae.add_requested_context(Verification)
        ae.add_requested_context(DermoscopicPhotographyImageStorage)
        return ae.associate("127.0.0.1", self.port, ae_title="DERMBRIDGE")

    def admin_of(self, tenant: str, username: str) -> str:
        """An admin of ``tenant`` signed in on the client (its session replaces any other); the CSRF token."""
        if tenant == "default":
            return sign_in(self.client, username, ["admin"])
        self.call(self.client.app.state.people.users.create, tenant, username, f"p-{username}", ["admin"], PASSWORD)  # type: ignore[attr-defined]
        self.client.cookies.clear()
        page = self.client.get("/auth/login", headers=NO_TOKEN)
        form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
        form.update(tenant=tenant, username=username, password=PASSWORD)
        signed = self.client.post("/auth/login", data=form, headers=NO_TOKEN, follow_redirects=False)
        assert signed.status_code == 303, signed.text
        return str(self.client.get("/auth/session", headers=NO_TOKEN).json()["csrf"])

    def save_caller(self, csrf: str, title: str, hosts: str = "") -> Any:
        form = {"csrf": csrf, "ae_title": title, "service-echo": "on", "service-store": "on", "hosts": hosts}
        return self.client.post("/app/admin/dicom/caller/save", data=form, headers=NO_TOKEN, follow_redirects=False)


def started(data_dir: Path, port: int, **settings: Any) -> FhirTestClient:
    return make_client(data_dir, dicom_port=port, dicom_ae_tenants=SCANNER, **settings)


@pytest.fixture(params=[None, "default"], ids=["no-any-ae", "any-ae-tenant"])
def node(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Node]:
    """The node, without and with ``DICOM_ANY_AE_TENANT`` (a contested title is not an unlisted one)."""
    port = free_port()
    with started(tmp_path / "var", port, dicom_any_ae_tenant=request.param) as client:
        client.post("/fhir/default/$nothing")  # the app is up (lifespan ran: the peers are seeded)
        made = Node(client, port)
        made.call(client.app.state.engine.create_tenant, "alpha")  # type: ignore[attr-defined]
        yield made


def test_an_admin_cannot_list_another_tenants_calling_ae_title(node: Node) -> None:
    csrf = node.admin_of("alpha", "eve")
    answer = node.save_caller(csrf, "SCANNER1")
    assert answer.status_code == 422 and "already used by another organisation" in answer.text
    assert "SCANNER1" not in node.call(dicom_peers.read, node.store_of("alpha"))["callers"]
    assert node.save_caller(csrf, "ALPHA_US").status_code == 303  # a title of its own is fine
    scanner = node.associate("SCANNER1")
    try:
        assert scanner.is_established  # still default's, from its own address
    finally:
        scanner.release()


def test_a_title_listed_by_two_tenants_is_refused_for_both(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    node.set_peers("alpha", {"callers": {"SCANNER1": {"services": ["echo", "store"], "hosts": []}}, "destinations": {}})
    with caplog.at_level(logging.ERROR, logger="dicom_node.peers"):
        scanner = node.associate("SCANNER1")
    assert scanner.is_rejected
    assert any("SCANNER1 is listed by tenants alpha, default" in r.getMessage() for r in caplog.records)


def test_an_open_association_keeps_the_tenant_it_was_admitted_for(node: Node) -> None:
    scanner = node.associate("SCANNER1")
    assert scanner.is_established
    try:
        first, second = dermoscopic(), dermoscopic()
        assert scanner.send_c_store(first).Status == statuses.SUCCESS
        # the title moves to alpha while the association is open; any association re-reads the peers
        node.set_peers("default", dicom_peers.empty())
        node.set_peers("alpha", {"callers": {"SCANNER1": {"services": ["store"], "hosts": []}}, "destinations": {}})
        other = node.associate("SOMEONE")  # admitted or not (any-AE tenant), it re-read the peers
        if other.is_established:
            other.release()
        answer = scanner.send_c_store(second)
        assert answer.Status == statuses.NOT_AUTHORIZED  # not stored into alpha
    finally:
        scanner.release()
    assert stored_dataset(node.client, first.SOPInstanceUID).SOPInstanceUID == first.SOPInstanceUID
    assert node.call(node.store_of("alpha").get_record, INSTANCE, second.SOPInstanceUID) is None


def test_a_host_with_host_bits_is_stored_as_its_network_and_a_bad_entry_skips_one_tenant(
    tmp_path: Path, node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    csrf = node.admin_of("alpha", "eve")
    assert node.save_caller(csrf, "ALPHA_US", hosts="10.2.0.7/24").status_code == 303
    assert node.call(dicom_peers.read, node.store_of("alpha"))["callers"]["ALPHA_US"]["hosts"] == ["10.2.0.0/24"]
    # an entry the listener cannot parse (stored raw by an older version): only alpha's peers are skipped
    bad = {"callers": {"ALPHA_US": {"services": ["store"], "hosts": ["10.2.0.7/24"]}}, "destinations": {}}
    node.set_peers("alpha", bad)
    node.client.__exit__(None, None, None)
    with caplog.at_level(logging.ERROR, logger="dicom_node.peers"), started(tmp_path / "var", node.port) as again:
        again.post("/fhir/default/$nothing")  # started: the lifespan read every tenant's peers
        restarted = Node(again, node.port)
        scanner = restarted.associate("SCANNER1")
        assert scanner.is_established  # default's peers apply
        scanner.release()
    assert any("tenant alpha are not valid" in r.getMessage() for r in caplog.records)
