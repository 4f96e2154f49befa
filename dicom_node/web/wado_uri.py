"""WADO-URI (PS3.18 chapter 9): ``GET /dicomweb/{tenant}/wado?requestType=WADO&studyUID=..&seriesUID=..
&objectUID=..``, the single-object retrieval that older viewers and PACS links still use.

``contentType`` (9.1.2.1.1... 9.1.2.3.1) chooses between the object itself (``application/dicom``, as
stored, or in ``transferSyntax`` when the node can produce it: ``representation``, else 406)
and a rendered image (``image/jpeg``, the default for an image; ``image/png``), of ``frameNumber``
(default 1). Access is that of WADO-RS: the same AccessPolicy decision, the same 404 for another
patient's object. Other optional parameters (rows, region, windowing, annotation) are not applied.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from dicom_node import transcoding
from dicom_node.web import representation
from dicom_node.web.rendering import FORMATS, render
from dicom_node.web.routes import READ_METHODS, DicomWebDep, ReadDep, caller, guarded, problem
from dicom_node.web.service import DicomWeb
from fhir_server.security.policy import AccessPolicy

DICOM = "application/dicom"
router = APIRouter(prefix="/dicomweb/{tenant}", include_in_schema=False, dependencies=[Depends(caller)])


def _content_type(requested: str | None, is_image: bool) -> str | None:
    """The first supported of the comma-separated ``contentType`` (9.1.2.1.1); None when none is."""
    if not requested:
        return "image/jpeg" if is_image else DICOM
    for media in (m.split(";")[0].strip().lower() for m in requested.split(",")):
        if media == DICOM or (media in FORMATS and is_image):
            return media
        if media in ("image/*", "*/*") and is_image:
            return "image/jpeg"
    return None


async def _wado(service: DicomWeb, tenant: str, policy: AccessPolicy, request: Request) -> Response:
    query = request.query_params
    if query.get("requestType") != "WADO":
        return problem(400, "WADO-URI needs requestType=WADO (PS3.18 9.1.2.1.1)")
    uids = [query.get(name, "") for name in ("studyUID", "seriesUID", "objectUID")]
    if not all(uids):
        return problem(400, "WADO-URI needs studyUID, seriesUID and objectUID")
    if query.get("anonymize") == "yes":
        return problem(400, "this server does not de-identify on retrieval (anonymize)")
    (record,) = await service.instances(tenant, policy, *uids)
    is_image = int(record.fields.get("Rows", ("0",))[0] or 0) > 0
    media = _content_type(query.get("contentType"), is_image)
    if media is None:
        return problem(406, "WADO-URI answers application/dicom, or image/jpeg or image/png for an image")
    frame = query.get("frameNumber", "1")
    if not frame.isdigit():
        return problem(400, "frameNumber must be a number")
    if media == DICOM:
        chosen = representation.Representation(DICOM, query.get("transferSyntax") or representation.AS_STORED)
        try:
            if not chosen.producible(stored := representation.stored_syntax(record)):
                raise transcoding.TranscodingError(f"cannot produce {chosen.syntax} from the stored {stored}")
            _, data = await representation.read_as(service, tenant, record, chosen)
        except transcoding.TranscodingError as exc:
            return problem(406, str(exc))
        return Response(data, 200, media_type=DICOM)
    image = render(await service.read_dataset(tenant, record), media, frame=int(frame))
    return Response(image, 200, media_type=media)


@router.api_route("/wado", methods=READ_METHODS)
async def wado_uri(tenant: str, request: Request, service: DicomWebDep, policy: ReadDep) -> Response:
    return await guarded(_wado(service, tenant, policy, request))
