"""The DICOMweb HTTP routes (PS3.18) under ``/dicomweb/{tenant}``: a thin adapter over ``service``."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydicom import Dataset
from pydicom.encaps import generate_frames

from dicom_node import transcoding
from dicom_node.instance_files import ObjectErased
from dicom_node.query import QueryError
from dicom_node.web import multipart, representation
from dicom_node.web.rendering import FORMATS, NotRenderable, render
from dicom_node.web.service import DicomWeb, NotFound
from fhir_server.people.signed_in import session_access
from fhir_server.security.bearer import Authenticator
from fhir_server.security.policy import AccessPolicy
from fhir_server.storage.port import TenantUnknownError

log = logging.getLogger(__name__)
DICOM_JSON = "application/dicom+json"
READ_METHODS = ["GET", "HEAD"]  # RFC 9110 §9.3.2: HEAD answers as GET without the body (uvicorn drops it)
_QIDO_MEDIA = ("application/dicom+json", "application/json", "*/*", "application/*")
MAX_RENDERED_PARTS = 100  # images of one series rendered in one answer
MAX_STOW_BYTES = 1 << 30  # 1 GiB in one request; send larger studies in several


async def caller(request: Request, tenant: str) -> AccessPolicy:
    """The policy of the request's token of the tenant (401 without one, 404 for another tenant's); with
    authentication turned off, the system context says so. Every decision is then the policy's."""
    authenticator: Authenticator = request.app.state.fhir_http.authenticator
    address = request.client.host if request.client else ""
    if request.method in READ_METHODS and not request.headers.get("authorization"):
        signed_in = await session_access(request, tenant)  # the reviewer app's <img>: its session cookie
        if signed_in is not None:
            return AccessPolicy.of(signed_in)
    access = await authenticator.access(request.headers.get("authorization"), tenant, address)
    if access is None:
        return AccessPolicy.system("authentication disabled (DERMBRIDGE_AUTH_ENABLED=false)")
    return AccessPolicy.of(access)


CallerDep = Annotated[AccessPolicy, Depends(caller)]


async def searcher(policy: CallerDep) -> AccessPolicy:
    """QIDO-RS: 403 before anything else unless the policy allows searching DICOM objects."""
    policy.read_dicom("s")
    return policy


async def reader(policy: CallerDep) -> AccessPolicy:
    """WADO-RS: 403 before anything else unless the policy allows reading DICOM objects."""
    policy.read_dicom("r")
    return policy


async def storer(policy: CallerDep) -> AccessPolicy:
    """STOW-RS: 403 before the body is read unless the policy allows storing DICOM objects."""
    policy.store_dicom()
    return policy


SearchDep = Annotated[AccessPolicy, Depends(searcher)]
ReadDep = Annotated[AccessPolicy, Depends(reader)]
MAX_VIEWPORT = 8192
router = APIRouter(prefix="/dicomweb/{tenant}", include_in_schema=False, dependencies=[Depends(caller)])


async def get_dicomweb(request: Request) -> DicomWeb:  # async: a sync dependency costs a thread hop
    service: DicomWeb = request.app.state.dicomweb
    return service


DicomWebDep = Annotated[DicomWeb, Depends(get_dicomweb)]


def problem(status: int, message: str) -> Response:
    return Response(orjson.dumps({"status": status, "message": message}), status, media_type="application/json")


def dicom_json(body: Any) -> Response:
    return Response(orjson.dumps(body), 200, media_type=DICOM_JSON)


async def guarded(coro: Any) -> Response:
    """Turn the service's errors into HTTP answers: a client error is never a 500."""
    try:
        response: Response = await coro
        return response
    except TenantUnknownError:
        return problem(404, "unknown tenant")
    except NotFound as exc:
        return problem(404, str(exc))
    except QueryError as exc:
        return problem(400, str(exc))
    except NotRenderable as exc:
        return problem(400, str(exc))
    except ObjectErased:
        return problem(410, "the instance was erased")


# -- STOW-RS ---------------------------------------------------------------------------------------
async def _stow(service: DicomWeb, tenant: str, request: Request, study: str | None) -> Response:
    media, params = multipart.media_parameters(request.headers.get("content-type", ""))
    if media != "multipart/related" or params.get("type", "application/dicom").lower() != "application/dicom":
        return problem(415, 'STOW-RS takes multipart/related; type="application/dicom"')
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_STOW_BYTES:
        return problem(413, f"a STOW-RS request may carry at most {MAX_STOW_BYTES} bytes")
    boundary = params.get("boundary")
    if not boundary:
        return problem(400, "the multipart Content-Type has no boundary")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_STOW_BYTES:
            return problem(413, f"a STOW-RS request may carry at most {MAX_STOW_BYTES} bytes")
        chunks.append(chunk)
    try:
        parts = multipart.parse(b"".join(chunks), boundary, "application/dicom")
    except multipart.MultipartError as exc:
        return problem(400, str(exc))
    if not parts:
        return problem(400, "the request holds no instance")
    if any(multipart.media_parameters(p.content_type)[0] != "application/dicom" for p in parts):
        return problem(415, "every part must be application/dicom")
    result = await service.stow(tenant, [p.body for p in parts], study)
    return Response(orjson.dumps(result.body), result.status, media_type=DICOM_JSON)


@router.post("/studies", dependencies=[Depends(storer)])
async def stow_studies(tenant: str, request: Request, service: DicomWebDep) -> Response:
    return await guarded(_stow(service, tenant, request, None))


@router.post("/studies/{study}", dependencies=[Depends(storer)])
async def stow_study(tenant: str, study: str, request: Request, service: DicomWebDep) -> Response:
    return await guarded(_stow(service, tenant, request, study))


# -- QIDO-RS ---------------------------------------------------------------------------------------
async def _search(
    service: DicomWeb, tenant: str, policy: AccessPolicy, request: Request, level: str, fixed: dict[str, str]
) -> Response:
    if not _accepts(request, _QIDO_MEDIA):
        return problem(406, "QIDO-RS answers in application/dicom+json only (PS3.18 8.7.3): not in dicom+xml")
    params = parse_qsl(request.url.query, keep_blank_values=True)
    found = await service.search(tenant, policy, level, fixed, params)
    return dicom_json(found) if found else Response(status_code=204)


@router.api_route("/studies", methods=READ_METHODS)
async def search_studies(tenant: str, request: Request, service: DicomWebDep, policy: SearchDep) -> Response:
    return await guarded(_search(service, tenant, policy, request, "STUDY", {}))


@router.api_route("/series", methods=READ_METHODS)
async def search_all_series(tenant: str, request: Request, service: DicomWebDep, policy: SearchDep) -> Response:
    return await guarded(_search(service, tenant, policy, request, "SERIES", {}))


@router.api_route("/studies/{study}/series", methods=READ_METHODS)
async def search_series(tenant: str, study: str, request: Request, service: DicomWebDep, policy: SearchDep) -> Response:
    return await guarded(_search(service, tenant, policy, request, "SERIES", {"StudyInstanceUID": study}))


@router.api_route("/instances", methods=READ_METHODS)
async def search_all_instances(tenant: str, request: Request, service: DicomWebDep, policy: SearchDep) -> Response:
    return await guarded(_search(service, tenant, policy, request, "IMAGE", {}))


@router.api_route("/studies/{study}/instances", methods=READ_METHODS)
async def search_study_instances(
    tenant: str, study: str, request: Request, service: DicomWebDep, policy: SearchDep
) -> Response:
    return await guarded(_search(service, tenant, policy, request, "IMAGE", {"StudyInstanceUID": study}))


@router.api_route("/studies/{study}/series/{series}/instances", methods=READ_METHODS)
async def search_instances(
    tenant: str, study: str, series: str, request: Request, service: DicomWebDep, policy: SearchDep
) -> Response:
    fixed = {"StudyInstanceUID": study, "SeriesInstanceUID": series}
    return await guarded(_search(service, tenant, policy, request, "IMAGE", fixed))


def _accepts(request: Request, media: tuple[str, ...]) -> bool:
    """Whether the Accept header (RFC 9110 §12.5.1; none: anything) names one of ``media``."""
    accept = request.headers.get("accept", "*/*") or "*/*"
    return any(token.split(";")[0].strip().lower() in media for token in accept.split(","))


# -- WADO-RS: instances ----------------------------------------------------------------------------
async def _retrieve(
    service: DicomWeb,
    tenant: str,
    policy: AccessPolicy,
    request: Request,
    study: str,
    series: str | None = None,
    instance: str | None = None,
) -> Response:
    records = await service.instances(tenant, policy, study, series, instance)
    try:
        stored = map(representation.stored_syntax, records)
        chosen = representation.choose(request.headers.get("accept", ""), "instance", stored)
        objects = [await representation.read_as(service, tenant, record, chosen) for record in records]
    except transcoding.TranscodingError as exc:
        return problem(406, str(exc))
    parts = [multipart.Part(f"application/dicom; transfer-syntax={syntax}", data) for syntax, data in objects]
    body, boundary = multipart.build(parts)
    media = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return Response(body, 200, headers={"Content-Type": media})


@router.api_route("/studies/{study}", methods=READ_METHODS)
async def retrieve_study(tenant: str, study: str, request: Request, service: DicomWebDep, policy: ReadDep) -> Response:
    return await guarded(_retrieve(service, tenant, policy, request, study))


@router.api_route("/studies/{study}/series/{series}", methods=READ_METHODS)
async def retrieve_series(
    tenant: str, study: str, series: str, request: Request, service: DicomWebDep, policy: ReadDep
) -> Response:
    return await guarded(_retrieve(service, tenant, policy, request, study, series))


@router.api_route("/studies/{study}/series/{series}/instances/{instance}", methods=READ_METHODS)
async def retrieve_instance(
    tenant: str, study: str, series: str, instance: str, request: Request, service: DicomWebDep, policy: ReadDep
) -> Response:
    return await guarded(_retrieve(service, tenant, policy, request, study, series, instance))


# -- WADO-RS: metadata -----------------------------------------------------------------------------
async def _metadata(service: DicomWeb, tenant: str, policy: AccessPolicy, study: str, series: str | None = None,
                    instance: str | None = None) -> Response:  # fmt: skip
    records = await service.instances(tenant, policy, study, series, instance)
    return dicom_json([service.metadata(tenant, r) for r in records])


@router.api_route("/studies/{study}/metadata", methods=READ_METHODS)
async def study_metadata(tenant: str, study: str, service: DicomWebDep, policy: ReadDep) -> Response:
    return await guarded(_metadata(service, tenant, policy, study))


@router.api_route("/studies/{study}/series/{series}/metadata", methods=READ_METHODS)
async def series_metadata(tenant: str, study: str, series: str, service: DicomWebDep, policy: ReadDep) -> Response:
    return await guarded(_metadata(service, tenant, policy, study, series))


@router.api_route("/studies/{study}/series/{series}/instances/{instance}/metadata", methods=READ_METHODS)
async def instance_metadata(
    tenant: str, study: str, series: str, instance: str, service: DicomWebDep, policy: ReadDep
) -> Response:
    return await guarded(_metadata(service, tenant, policy, study, series, instance))


# -- WADO-RS: frames and rendered ------------------------------------------------------------------
async def _frames(
    service: DicomWeb, tenant: str, policy: AccessPolicy, request: Request, study: str, series: str, instance: str,
    frame_list: str,
) -> Response:  # fmt: skip
    try:
        wanted = [int(f) for f in frame_list.split(",")]
    except ValueError:
        return problem(400, "frames are numbers separated by commas")
    record = (await service.instances(tenant, policy, study, series, instance))[0]
    ds = await service.read_dataset(tenant, record)
    if "PixelData" not in ds:
        return problem(400, "the instance has no pixel data")
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if any(not 1 <= f <= count for f in wanted):
        return problem(404, f"the instance has {count} frame(s)")
    stored = str(ds.file_meta.TransferSyntaxUID)
    try:
        chosen = representation.choose(request.headers.get("accept", ""), "frame", [stored])
        ds = await asyncio.to_thread(transcoding.transcoded, ds, chosen.target(stored))
    except transcoding.TranscodingError as exc:
        return problem(406, str(exc))
    parts = [multipart.Part(chosen.frame_media(stored), frame) for frame in _frame_bytes(ds, count, wanted)]
    body, boundary = multipart.build(parts)
    media = parts[0].content_type.split(";")[0]
    return Response(body, 200, headers={"Content-Type": f'multipart/related; type="{media}"; boundary={boundary}'})


def _frame_bytes(ds: Dataset, count: int, wanted: list[int]) -> list[bytes]:
    """The ``wanted`` frames (1-based) of ``ds``'s Pixel Data, encapsulated or native (PS3.5 8.2, A.4)."""
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        frames = list(generate_frames(ds.PixelData, number_of_frames=count))
        return [frames[f - 1] for f in wanted]
    size = len(ds.PixelData) // count
    return [ds.PixelData[(f - 1) * size : f * size] for f in wanted]


@router.api_route("/studies/{study}/series/{series}/instances/{instance}/frames/{frame_list}", methods=READ_METHODS)
async def retrieve_frames(
    tenant: str, study: str, series: str, instance: str, frame_list: str, request: Request, service: DicomWebDep,
    policy: ReadDep,
) -> Response:  # fmt: skip
    return await guarded(_frames(service, tenant, policy, request, study, series, instance, frame_list))


def _image_type(request: Request) -> str | None:
    accept = request.headers.get("accept", "image/jpeg")
    for token in accept.split(","):
        media = token.split(";")[0].strip().lower()
        if media in FORMATS:
            return media
        if media in ("*/*", "image/*"):
            return "image/jpeg"
    return None


def _viewport(text: str | None) -> tuple[int, int] | str | None:
    """``viewport=vw,vh`` (PS3.18 8.3.5.1.3), each 1 to ``MAX_VIEWPORT``; an error message otherwise."""
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 2 or not all(p.isdigit() and len(p) <= 5 and 0 < int(p) <= MAX_VIEWPORT for p in parts):
        return f"viewport must be two sizes in pixels, 1 to {MAX_VIEWPORT}: vw,vh"
    return int(parts[0]), int(parts[1])


async def _rendered(
    service: DicomWeb, tenant: str, policy: AccessPolicy, request: Request, ids: tuple[str, str, str], thumbnail: bool
) -> Response:
    media = _image_type(request)
    if media is None:
        return problem(406, "rendered images are image/jpeg or image/png")
    frame_text = request.query_params.get("frame", "1")
    if not frame_text.isdigit():
        return problem(400, "frame must be a number")
    viewport = _viewport(request.query_params.get("viewport"))
    if isinstance(viewport, str):
        return problem(400, viewport)
    record = (await service.instances(tenant, policy, *ids))[0]
    ds = await service.read_dataset(tenant, record)
    image = render(ds, media, frame=int(frame_text), thumbnail=thumbnail, viewport=viewport)
    return Response(image, 200, media_type=media)


async def _rendered_series(
    service: DicomWeb, tenant: str, policy: AccessPolicy, request: Request, study: str, series: str
) -> Response:
    """A series rendered (PS3.18 10.4.1.1.3): each image's first frame, one part each, in the order
    the series was stored; at most ``MAX_RENDERED_PARTS`` (ask for the instances beyond one by one)."""
    media = _image_type(request)
    if media is None:
        return problem(406, "rendered images are image/jpeg or image/png")
    records = await service.instances(tenant, policy, study, series)
    parts = []
    for record in [r for r in records if int(r.fields.get("Rows", ("0",))[0] or 0) > 0][:MAX_RENDERED_PARTS]:
        image = render(await service.read_dataset(tenant, record), media)
        parts.append(multipart.Part(media, image))
    if not parts:
        return problem(400, "the series has no image to render")
    body, boundary = multipart.build(parts)
    return Response(body, 200, headers={"Content-Type": f'multipart/related; type="{media}"; boundary={boundary}'})


@router.api_route("/studies/{study}/series/{series}/rendered", methods=READ_METHODS)
async def rendered_series(
    tenant: str, study: str, series: str, request: Request, service: DicomWebDep, policy: ReadDep
) -> Response:
    return await guarded(_rendered_series(service, tenant, policy, request, study, series))


@router.api_route("/studies/{study}/series/{series}/instances/{instance}/rendered", methods=READ_METHODS)
async def rendered(
    tenant: str, study: str, series: str, instance: str, request: Request, service: DicomWebDep, policy: ReadDep
) -> Response:
    return await guarded(_rendered(service, tenant, policy, request, (study, series, instance), thumbnail=False))


@router.api_route("/studies/{study}/series/{series}/instances/{instance}/thumbnail", methods=READ_METHODS)
async def thumbnail(
    tenant: str, study: str, series: str, instance: str, request: Request, service: DicomWebDep, policy: ReadDep
) -> Response:
    return await guarded(_rendered(service, tenant, policy, request, (study, series, instance), thumbnail=True))


# -- DELETE (dcm4chee, Google Cloud Healthcare API; dicom_node.web.deletion) -----------------------
async def _delete(service: DicomWeb, tenant: str, policy: AccessPolicy, request: Request,
                  uids: tuple[str, str | None, str | None]) -> Response:  # fmt: skip
    who = policy.access.subject if policy.access is not None else "(authentication disabled)"
    await service.delete(tenant, policy, who, request.client.host if request.client else "", uids)
    return Response(status_code=204)


@router.delete("/studies/{study}")
async def delete_study(tenant: str, study: str, request: Request, service: DicomWebDep, policy: CallerDep) -> Response:
    return await guarded(_delete(service, tenant, policy, request, (study, None, None)))


@router.delete("/studies/{study}/series/{series}")
async def delete_series(
    tenant: str, study: str, series: str, request: Request, service: DicomWebDep, policy: CallerDep
) -> Response:
    return await guarded(_delete(service, tenant, policy, request, (study, series, None)))


@router.delete("/studies/{study}/series/{series}/instances/{instance}")
async def delete_instance(
    tenant: str, study: str, series: str, instance: str, request: Request, service: DicomWebDep, policy: CallerDep
) -> Response:
    return await guarded(_delete(service, tenant, policy, request, (study, series, instance)))
