"""WADO-RS honours the transfer syntax asked for in ``Accept`` (PS3.18 8.7.3): dicomweb-client and httpx."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, JPEGLSLossless, RLELossless

from dicom_node.web.multipart import media_parameters, parse
from tests.dicom_factories import dermoscopic
from tests.server import Server, running_server

pytestmark = pytest.mark.interop
OCTET_STREAM_LE = ("application/octet-stream", str(ExplicitVRLittleEndian))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("wado-ts") / "var") as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> DICOMwebClient:
    return DICOMwebClient(f"{server.root}/dicomweb/default", headers=server.headers)


@pytest.fixture(scope="module")
def jpeg(client: DICOMwebClient) -> pydicom.Dataset:
    ds = dermoscopic(syntax=JPEGBaseline8Bit, patient_id="WADOTS")
    client.store_instances([ds])
    return ds


@pytest.fixture(scope="module")
def native(client: DICOMwebClient) -> pydicom.Dataset:
    ds = dermoscopic(patient_id="WADOTS", seed=2)
    client.store_instances([ds])
    return ds


def _url(server: Server, ds: pydicom.Dataset) -> str:
    return (f"{server.root}/dicomweb/default/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")  # fmt: skip


def _parts(server: Server, url: str, accept: str) -> list[tuple[str, bytes]]:
    response = server.http.get(url, headers={"Accept": accept})
    assert response.status_code == 200, response.text
    _, params = media_parameters(response.headers["content-type"])
    return [(part.content_type, part.body) for part in parse(response.content, params["boundary"], "")]


def test_an_instance_asked_in_explicit_le_is_decompressed(client: DICOMwebClient, jpeg: pydicom.Dataset) -> None:
    got = client.retrieve_instance(jpeg.StudyInstanceUID, jpeg.SeriesInstanceUID, jpeg.SOPInstanceUID,
                                   media_types=(("application/dicom", str(ExplicitVRLittleEndian)),))  # fmt: skip
    assert got.SOPInstanceUID == jpeg.SOPInstanceUID
    assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (got.pixel_array == jpeg.pixel_array).all()
    assert got.LossyImageCompression == "01"  # a viewer still learns the pixels went through JPEG


def test_without_a_transfer_syntax_the_default_is_explicit_le_and_star_is_as_stored(
    server: Server, jpeg: pydicom.Dataset
) -> None:
    url = _parts(server, _url(server, jpeg), 'multipart/related; type="application/dicom"')
    ((content_type, data),) = url
    assert content_type == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
    assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    ((_, stored),) = _parts(
        server, _url(server, jpeg), 'multipart/related; type="application/dicom"; transfer-syntax=*'
    )
    kept = pydicom.dcmread(io.BytesIO(stored))
    assert kept.file_meta.TransferSyntaxUID == JPEGBaseline8Bit and kept.PixelData == jpeg.PixelData


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless], ids=lambda s: s.name)
def test_a_lossless_syntax_is_encoded_with_the_installed_codecs(
    client: DICOMwebClient, native: pydicom.Dataset, syntax: pydicom.uid.UID
) -> None:
    got = client.retrieve_instance(native.StudyInstanceUID, native.SeriesInstanceUID, native.SOPInstanceUID,
                                   media_types=(("application/dicom", str(syntax)),))  # fmt: skip
    assert got.file_meta.TransferSyntaxUID == syntax
    assert (got.pixel_array == native.pixel_array).all()


def test_a_syntax_the_node_cannot_produce_is_406(server: Server, native: pydicom.Dataset) -> None:
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={JPEGBaseline8Bit}'
    response = server.http.get(_url(server, native), headers={"Accept": accept})
    assert response.status_code == 406
    assert str(JPEGBaseline8Bit) in response.json()["message"]
    frames = server.http.get(
        f"{_url(server, native)}/frames/1", headers={"Accept": 'multipart/related; type="image/jpeg"'}
    )
    assert frames.status_code == 406


def test_frames_asked_uncompressed_come_back_as_octet_stream(client: DICOMwebClient, server: Server,
                                                             jpeg: pydicom.Dataset) -> None:  # fmt: skip
    (frame,) = client.retrieve_instance_frames(jpeg.StudyInstanceUID, jpeg.SeriesInstanceUID, jpeg.SOPInstanceUID,
                                               frame_numbers=[1], media_types=(OCTET_STREAM_LE,))  # fmt: skip
    assert frame == jpeg.pixel_array.tobytes()  # RGB, interleaved: native Pixel Data
    accept = f'multipart/related; type="application/octet-stream"; transfer-syntax={ExplicitVRLittleEndian}'
    ((content_type, _),) = _parts(server, f"{_url(server, jpeg)}/frames/1", accept)
    assert content_type.startswith("application/octet-stream")
    ((content_type, data),) = _parts(server, f"{_url(server, jpeg)}/frames/1", 'multipart/related; type="image/jpeg"')
    assert content_type == f"image/jpeg; transfer-syntax={JPEGBaseline8Bit}" and data.startswith(b"\xff\xd8")


def test_wado_uri_decompresses_for_an_uncompressed_transfer_syntax(server: Server, jpeg: pydicom.Dataset) -> None:
    params = {"requestType": "WADO", "studyUID": jpeg.StudyInstanceUID, "seriesUID": jpeg.SeriesInstanceUID,
              "objectUID": jpeg.SOPInstanceUID, "contentType": "application/dicom",
              "transferSyntax": str(ExplicitVRLittleEndian)}  # fmt: skip
    response = server.http.get(f"{server.root}/dicomweb/default/wado", params=params)
    assert response.status_code == 200, response.text
    got = pydicom.dcmread(io.BytesIO(response.content))
    assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and got.SOPInstanceUID == jpeg.SOPInstanceUID
    assert (got.pixel_array == jpeg.pixel_array).all()
