"""``/conformance``: both statements as HTML pages for people, served without a token."""

from __future__ import annotations

from pathlib import Path

from conformance.markdown_html import to_html
from tests.conftest import make_client
from tests.server import free_port


def test_the_pages_are_served_without_a_token(tmp_path: Path) -> None:
    with make_client(tmp_path / "var", roles=(), dicom_port=free_port()) as anonymous:
        index = anonymous.get("/conformance")
        assert index.status_code == 200 and index.headers["content-type"] == "text/html; charset=utf-8"
        assert 'href="/conformance/fhir"' in index.text and 'href="/conformance/dicom.html"' in index.text

        fhir = anonymous.get("/conformance/fhir")
        assert fhir.status_code == 200 and fhir.headers["content-type"].startswith("text/html")
        assert "<td>Patient</td>" in fhir.text and "history-instance" in fhir.text
        assert '<a href="http://hl7.org/fhir/OperationDefinition/Patient-everything">$everything</a>' in fhir.text
        assert '/fhir/default/OperationDefinition/Task-claim">$claim</a>' in fhir.text
        assert "Observation:subject" in fhir.text  # the _revinclude column

        dicom = anonymous.get("/conformance/dicom.html")
        assert dicom.status_code == 200 and dicom.headers["content-type"].startswith("text/html")
        assert "<h2>1. Networking</h2>" in dicom.text and "<h5>1.2.1.3 Association initiation policy</h5>" in dicom.text
        assert "<td>Dermoscopic Photography Image Storage</td><td>1.2.840.10008.5.1.4.1.1.77.1.7</td>" in dicom.text
        assert "<code>DERMBRIDGE</code>" in dicom.text and "**" not in dicom.text

        markdown = anonymous.get("/conformance/dicom")
        assert markdown.headers["content-type"] == "text/markdown; charset=utf-8"
        assert markdown.text.startswith("# DermBridge DICOM Conformance Statement")


def test_without_dimse_the_dicom_page_says_so(tmp_path: Path) -> None:
    with make_client(tmp_path / "var", roles=(), dicom_enabled=False) as anonymous:
        assert anonymous.get("/conformance/dicom.html").status_code == 404
        assert "DIMSE is disabled" in anonymous.get("/conformance").text
        assert anonymous.get("/conformance/fhir").status_code == 200


def test_markdown_is_rendered_and_escaped() -> None:
    html = to_html(
        "## A <b>\n\nSome `x<y>` and **bold**.\n\n- one\n- two & three\n\n| h | i |\n|---|---|\n| <s> | `c` |\n"
    )
    assert html == (
        "<h2>A &lt;b&gt;</h2>\n<p>Some <code>x&lt;y&gt;</code> and <strong>bold</strong>.</p>\n"
        "<ul><li>one</li><li>two &amp; three</li></ul>\n"
        "<table><thead><tr><th>h</th><th>i</th></tr></thead><tbody><tr><td>&lt;s&gt;</td><td><code>c</code></td></tr>"
        "</tbody></table>"
    )
