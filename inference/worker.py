"""The inference worker (DESIGN data flow 2): every ``imaging.instance-stored`` event becomes AI
findings in FHIR, or a recorded reason why not.

- Identity first: an image of a study whose patient identity review is not completed is held
  (``inference.identity_hold``), not analysed under a Consent that may not be its patient's.
- Consent next: the patient's Consent must permit AI analysis (the consent decision service);
  otherwise no analysis, an AuditEvent, and a human review Task when the tenant's flow has one.
- Admission next (``inference.admission``): an image a model's card does not accept, or one failing
  the quality checks, is not scored by it; the case gets an "unsuitable image" Task instead.
- Events claimed together are decoded together and go through the model in one batch.
- Findings first: the risk results, the predicted diagnosis, their Provenance and the case's
  conclusion are committed right after the forward pass (step 1, one transaction, for every image of
  the batch); the explanations (saliency map, ABCD rule) follow in a second transaction per image
  (step 2) that adds them to the case without touching its conclusion; step 2 also stores the
  results as DICOM SR and SEG in the study (``inference.dicom_output``). The event is acknowledged
  after both steps.
- Idempotent: each step has deterministic identifiers and a done-key (the first risk result; the
  saliency Media), so a redelivered event (a crash before the acknowledgement, even between the two
  steps) finds what was written and does only what is missing.
- A transient failure leaves the event unacknowledged: it comes back after a back-off that doubles
  with each attempt (the lease, then twice it...), at most ``max_attempts`` times. A poison image
  (undecodable pixels) or a last attempt ends in a failed Task with an OperationOutcome on the
  case, never a stuck queue. When only step 2 failed, that Task says the explanations are
  unavailable and the committed findings stand (``inference.explanation_failure``), not "analysis failed".
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicom_node.attributes import INSTANCE, recorded_patient
from dicom_node.blobs import BlobStore
from dicom_node.instance_files import InstanceFiles, ObjectErased
from dicom_node.lesion_identity import resolve_lesion
from dicom_node.lesions import ImagingConventions
from dicom_node.sop_classes import AI_RESULT_CLASSES, ENCAPSULATED_PDF
from fhir_server.audit.trail import AuditTrail
from fhir_server.consent.decision import AI_ANALYSIS, decide
from fhir_server.outbox import OutboxLoop, claimed
from fhir_server.repository import Repository, Stored
from fhir_server.storage.port import Engine, OutboxEvent, TenantStore, TenantTransaction
from fhir_server.workflow.library import FlowLibrary
from fhir_server.workflow.routing import Image, ai_models
from inference.abcd import DermoscopyAbcd, SegmentationError, analyse, pixel_spacing_mm
from inference.admission import admit, check_attributes, record_unsuitable
from inference.conclusion import refresh_conclusion
from inference.dicom_output import write_dicom_results
from inference.events import analysis_event
from inference.explanation_failure import (
    EXPLANATIONS_UNAVAILABLE,
    FINDINGS_STAND,
    record_explanations_unavailable,
)
from inference.explanations import explained_key, write_abcd, write_saliency
from inference.findings import lesion_site
from inference.flow_events import append_findings, append_not_analysed, findings_committed
from inference.identity_hold import hold_reason, record_hold, release_held, unresolved_review
from inference.metrics import STEP_SECONDS
from inference.pipeline import Prediction, Runner, saliency_png
from inference.pixels import UndecodableImage, rgb_pixels
from inference.quality import QualityReport, inspect
from inference.results import Committed, ImageContext, done_key, write_results
from inference.segmentation import Segmentation
from inference.tasks import record_failure, request_human_review

log = logging.getLogger(__name__)
CONSUMER = "inference"
TOPIC = "imaging.instance-stored"
UPDATED = "resource.updated"  # a completed identity review or a merge releases held images
MAX_BACKOFF = 600.0  # seconds: retries wait lease, 2 x lease, 4 x lease ... up to this
SCAN = 256  # events claimed at a time; the image events among them are analysed in batches
NOT_ANALYSED = frozenset({ENCAPSULATED_PDF, *AI_RESULT_CLASSES})


@dataclass(slots=True)
class Job:
    event: OutboxEvent
    context: ImageContext
    rgb: np.ndarray
    spacing: tuple[float, float] | None
    ds: Dataset
    refused: frozenset[str] = field(default_factory=frozenset)  # the cards (keys) that did not admit the image
    segmentation: Segmentation | None = None  # the lesion the quality gate found: the one the ABCD rule measures
    routed: tuple[str, ...] = ()  # the models the case's workflow runs on the image
    born: str | None = None  # the matched Patient's birthDate: the cards' minimum age is checked against it


class InferenceWorker(OutboxLoop):
    name = "inference-worker"

    def __init__(
        self,
        engine: Engine,
        blobs: BlobStore,
        runners: list[Runner],
        *,
        audit: AuditTrail | None = None,
        server_version: str = "",
        batch: int = 8,
        lease_seconds: float = 30.0,
        max_attempts: int = 5,
        human_review: bool = True,
        abcd: bool = True,
        poll_seconds: float = 1.0,
        conventions: ImagingConventions | None = None,
        flows: FlowLibrary | None = None,
    ) -> None:
        super().__init__(engine, poll_seconds)
        self.engine = engine
        self.files = InstanceFiles(blobs)
        self.devices: Committed = {}  # the models' and the server's Devices, once found committed
        self.runners = runners
        self.audit = audit
        self.server_version = server_version
        self.batch = batch
        self.lease = lease_seconds
        self.max_attempts = max_attempts
        self.human_review = human_review
        self.abcd = abcd
        self.conventions = conventions or ImagingConventions()
        self.flows = flows  # the workflow definitions: which models a case's flow runs (None: every model)

    # -- one round --------------------------------------------------------------------------------
    async def drain(self) -> int:
        """Analyse what is due now in every tenant; returns how many events were settled."""
        settled = 0
        async for store, events in claimed(self.engine, CONSUMER, SCAN, self.lease):
            released = await self._release_holds(store, [e for e in events if e.topic == UPDATED])
            images = [e for e in events if e.topic == TOPIC]
            for start in range(0, len(images), self.batch):
                settled += await self._round(store, images[start : start + self.batch])
            # the other topics' events after the images': their acknowledgement waits for no image
            await store.ack_events(CONSUMER, [e.seq for e in events if e.topic not in (TOPIC, UPDATED)] + released)
        return settled

    async def _release_holds(self, store: TenantStore, events: list[OutboxEvent]) -> list[int]:
        """Held images back in the queue when their identity review was completed or a merge settled
        it (read from this consumer's own claim: no other consumer's writes on every commit); returns
        the events settled. One that fails comes back after its lease."""
        settled = []
        for event in events:
            try:
                await release_held(store, event)
            except Exception:
                log.exception("releasing the images held by event %s failed; retried after the lease", event.seq)
                continue
            settled.append(event.seq)
        return settled

    async def _round(self, store: TenantStore, events: list[OutboxEvent]) -> int:
        """One batch of image events: prepared one by one; then the pixel checks (one thread) beside
        the forward passes (the other core); then results one by one, for the admitted images only."""
        repo = Repository.system(store, reason="inference worker")
        jobs: list[Job] = []
        done: list[int] = []
        for event in events:
            try:
                job = await self._prepare(repo, event)
            except Exception as exc:
                await self._failed_attempt(repo, event, exc)
                continue
            if job is None:
                done.append(event.seq)
            else:
                jobs.append(job)
        if not jobs:
            await store.ack_events(CONSUMER, done)
            return len(done)
        failed: set[int] = set()
        gate = asyncio.ensure_future(asyncio.to_thread(self._inspect, jobs))
        predicted: list[tuple[Runner, list[tuple[Job, Prediction]]]] = []
        try:
            for runner in self.runners:
                scored = [job for job in jobs if runner.model.card.key not in job.refused]
                try:
                    with STEP_SECONDS.labels(runner.model.card.key, "forward").time():
                        predictions = await asyncio.to_thread(runner.predict, [job.rgb for job in scored])
                except Exception as exc:
                    for job in jobs:
                        await self._failed_attempt(repo, job.event, exc)
                        failed.add(job.event.seq)
                    break
                predicted.append((runner, list(zip(scored, predictions, strict=True))))
        finally:
            reports = await gate
        for job, report in zip(jobs, reports, strict=True):
            if job.event.seq in failed:
                continue
            try:
                job.refused = await self._admission(repo, job, report)
            except Exception as exc:
                await self._failed_attempt(repo, job.event, exc)
                failed.add(job.event.seq)
        for step in (self._findings, self._explain):  # every image's findings, by every model, before any explanation
            for runner, scores in predicted:
                for job, prediction in scores:
                    if job.event.seq in failed or runner.model.card.key in job.refused:
                        continue
                    try:
                        await step(repo, runner, job, prediction)
                    except Exception as exc:
                        explaining = step == self._explain  # the image's findings are all committed
                        await self._failed_attempt(repo, job.event, exc, findings_committed=explaining)
                        failed.add(job.event.seq)
        done += [job.event.seq for job in jobs if job.event.seq not in failed]
        await store.ack_events(CONSUMER, done)
        return len(done)

    def _inspect(self, jobs: list[Job]) -> list[QualityReport | Exception | None]:
        """The pixel checks of each image that a model with a quality check would score (None: no
        model asks for them); an image whose check raises fails its attempt alone."""
        reports: list[QualityReport | Exception | None] = []
        for job in jobs:
            cards = [r.model.card for r in self.runners if r.model.card.key not in job.refused]
            try:
                reports.append(inspect(job.rgb) if any(card.accepts.quality_check for card in cards) else None)
            except Exception as exc:
                reports.append(exc)
        return reports

    async def _prepare(self, repo: Repository, event: OutboxEvent) -> Job | None:
        """The decoded image of an event, or None when the event is settled without a model run.

        What decides whether the image is analysed is read at once (each read on its own reader) and
        weighed in order: done already, gone, held for an identity review, not routed to a model, no
        Consent; the stored object is read and decoded only for an image that passes all of them."""
        payload = event.payload
        context = ImageContext(
            instance_uid=str(payload["instance"]),
            patient_id=str(payload["patient"]),
            media_id=str(payload["media"]),
            imaging_study_id=str(payload["imagingStudy"]),
            report_id=str(payload["report"]),
            lesion_id=str(payload.get("lesion") or ""),
        )
        done, record, review, (media, routed), decision, patient = await asyncio.gather(
            self._done_keys(repo, context),
            repo.store.get_record(INSTANCE, context.instance_uid),
            unresolved_review(repo, context.patient_id, str(payload.get("study", ""))),
            self._media_and_models(repo, context, str(payload.get("sopClass") or "")),  # from ingest's event
            decide(repo, context.patient_id, AI_ANALYSIS),
            repo.current("Patient", context.patient_id),
        )
        if self._already_done(done):
            return None
        if record is None:
            log.info("instance of event %s is gone (replaced or erased); nothing to analyse", event.seq)
            return None
        filed = recorded_patient(record)
        if filed is not None and filed != context.patient_id:  # the index, never the event, says whose it is
            await self._misdirected(repo, replace(context, patient_id=filed), event)
            return None
        if (record.fields.get("SOPClassUID") or ("",))[0] in NOT_ANALYSED or not record.fields.get("Rows"):
            return None  # documents, the AI's own SR/SEG and objects without pixels are not for the image models
        if review is not None:  # not under this Patient's Consent while the image may be someone else's
            await self._held(repo, context, review)
            return None
        if not routed:
            return None  # the case's flow runs no AI on this image
        if not decision.permit:
            await self._refused(repo, context, decision.reason)
            return None
        try:
            ds = await self.files.read_dataset(repo.store, repo.tenant, record)
        except (FileNotFoundError, ObjectErased):
            log.info("instance of event %s is gone (replaced or erased); nothing to analyse", event.seq)
            return None
        except InvalidDicomError as exc:
            await self._poison(repo, context, f"the stored object is not readable DICOM: {exc}")
            return None
        if "PixelData" not in ds:
            return None
        consent_id = str(decision.consent.resource["id"]) if decision.consent is not None else None
        decoding = asyncio.ensure_future(asyncio.to_thread(_decoded, ds))  # beside the lesion's reads
        lesion_id = context.lesion_id or await self._lesion(repo, ds, context.patient_id)
        site = lesion_site(await repo.current("BodyStructure", lesion_id), media.get("bodySite"))  # with laterality
        context = replace(context, body_site=site, acquired=media.get("createdDateTime"),
                          consent_id=consent_id, lesion_id=lesion_id)  # fmt: skip
        rgb = await decoding
        if isinstance(rgb, UndecodableImage):
            await self._poison(repo, context, str(rgb))
            return None
        born = (patient or {}).get("birthDate")
        refused = frozenset(r.model.card.key for r in self.runners if r.model.card.key not in routed
                            or check_attributes(ds, r.model.card.accepts, born))  # fmt: skip
        return Job(event, context, rgb, pixel_spacing_mm(ds), ds, refused=refused, routed=routed, born=born)

    async def _media_and_models(
        self, repo: Repository, context: ImageContext, sop_class: str
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The image's Media and the models its case's flow runs on it (by its site, modality and SOP class; an
        event written before ingest named the SOP class has it read from the instance's record)."""
        if not sop_class:
            record = await repo.store.get_record(INSTANCE, context.instance_uid)
            sop_class = str((record.fields.get("SOPClassUID") or ("",))[0]) if record is not None else ""
        media = await repo.current("Media", context.media_id) or {}
        return media, await self._routed(repo, context, media, sop_class)

    async def _routed(
        self, repo: Repository, context: ImageContext, media: dict[str, Any], sop_class: str
    ) -> tuple[str, ...]:
        keys = [runner.model.card.key for runner in self.runners]
        if self.flows is None:
            return tuple(keys)
        image = Image.of(media, sop_class)
        return tuple(await ai_models(self.flows, repo, context.report_id, keys, image))

    async def _admission(self, repo: Repository, job: Job, report: QualityReport | Exception | None) -> frozenset[str]:
        """The models not routed to or whose cards do not admit this image (its attributes, or the pixel
        checks' ``report``); each of the latter leaves an "unsuitable image" outcome and an
        ``ai.not-analysed`` event."""
        if isinstance(report, Exception):
            raise report
        job.segmentation = report.segmentation if report is not None else None
        refused = {runner.model.card.key for runner in self.runners if runner.model.card.key not in job.routed}
        context = job.context
        for runner in self.runners:
            card = runner.model.card
            if card.key not in job.routed:
                continue
            problems = admit(job.ds, job.rgb, card.accepts, job.born, report)
            if not problems:
                continue
            refused.add(card.key)
            reasons = ", ".join(p.code for p in problems)
            async with repo.store.transaction() as tx:  # one Task per refused image: the review, or the record
                bound = repo.within(tx)
                await record_unsuitable(bound, context, card.key, problems, review=self.human_review)
                await refresh_conclusion(bound, context, card)  # its count of images without a result
                await append_not_analysed(tx, context, "unsuitable", f"image unsuitable for {card.key} ({reasons})",
                                          card.key)  # fmt: skip
                await self._audit_in(repo, tx, context, "4", f"no AI analysis by {card.key}: image unsuitable "
                                     f"({reasons})")  # fmt: skip
        return frozenset(refused)

    async def _lesion(self, repo: Repository, ds: Dataset, patient_id: str) -> str:
        """The lesion of an event that does not name it (queued before lesions existed, or re-queued)."""
        lesion = await resolve_lesion(repo, ds, patient_id, self.conventions.lesion_key(repo.tenant))
        return str(lesion.resource["id"])

    async def _done_keys(self, repo: Repository, context: ImageContext) -> list[bool]:
        """Per model: both steps done (its findings and its explanations are committed)."""
        done = []
        for runner in self.runners:
            card = runner.model.card
            found = bool(await repo.find("Observation", [("identifier", done_key(context, card))], 1))
            done.append(found and bool(await repo.find("Media", [("identifier", explained_key(context, card))], 1)))
        return done

    @staticmethod
    def _already_done(done: list[bool]) -> bool:
        return bool(done) and all(done)

    async def _findings(self, repo: Repository, runner: Runner, job: Job, prediction: Prediction) -> None:
        """Step 1: the risk results, the predicted diagnosis, their Provenance and the case's conclusion,
        in one commit (nothing when a previous delivery committed them)."""
        started = time.perf_counter()
        async with repo.store.transaction() as tx:
            written = await write_results(repo.within(tx), job.context, runner.model.card, prediction,
                                          self.server_version, self.devices, runner.model.weights_sha256)  # fmt: skip
            if written:  # the workflow hears of the findings in their own commit
                await append_findings(tx, findings_committed(job.context, runner.model.card, prediction, job.routed))
        STEP_SECONDS.labels(runner.model.card.key, "findings").observe(time.perf_counter() - started)
        if written:
            await self._audit(repo, job.context, "0", f"findings of {runner.model.card.key} committed in "
                              f"{(time.perf_counter() - started) * 1000:.0f} ms after the forward pass")  # fmt: skip

    async def _explain(self, repo: Repository, runner: Runner, job: Job, prediction: Prediction) -> None:
        """Step 2: the saliency map and the ABCD rule, in a second commit that lists the ABCD result on
        the case (its conclusion, the AI's or a clinician's, is not changed by them)."""
        card = runner.model.card
        if await repo.find("Media", [("identifier", explained_key(job.context, card))], 1):
            return  # a previous delivery wrote them
        started = time.perf_counter()
        heat, features = await asyncio.gather(  # two cores: the saliency map and the ABCD analysis together
            asyncio.to_thread(runner.saliency, job.rgb, prediction.top), asyncio.to_thread(_abcd, job, self.abcd)
        )
        png = await asyncio.to_thread(saliency_png, job.rgb, heat)
        # the SR and SEG (stored, or a recorded failure) before the step's done-key: a redelivery makes them
        await write_dicom_results(repo, self.files.blobs, job.ds, job.context, card, prediction, job.segmentation,
                                  server_version=self.server_version, weights_sha256=runner.model.weights_sha256,
                                  audit=self.audit)  # fmt: skip
        top = next(c for c in card.classes if c.index == prediction.top)
        async with repo.store.transaction() as tx:
            bound = repo.within(tx)
            now = datetime.now(UTC).isoformat(timespec="milliseconds")
            if features is not None:
                await write_abcd(bound, job.context, card, features, now, self.devices)
            await write_saliency(bound, job.context, card, top, png, now)  # the step's done-key
        STEP_SECONDS.labels(card.key, "explanations").observe(time.perf_counter() - started)
        await self._audit(repo, job.context, "0", f"explanations of {card.key}'s findings written in "
                          f"{(time.perf_counter() - started) * 1000:.0f} ms")  # fmt: skip

    # -- outcomes other than results ----------------------------------------------------------------
    async def _failed_attempt(
        self, repo: Repository, event: OutboxEvent, exc: Exception, *, findings_committed: bool = False
    ) -> None:
        """A transient failure: retried after a back-off, recorded on the last attempt. When only the
        explanations failed (``findings_committed``), the record says so: the findings stand."""
        if event.attempts >= self.max_attempts:
            log.error("event %s failed %d times; recording the failure", event.seq, event.attempts)
            payload = event.payload
            context = ImageContext(str(payload.get("instance")), str(payload.get("patient")),
                                   str(payload.get("media")), str(payload.get("imagingStudy")),
                                   str(payload.get("report")))  # fmt: skip
            if findings_committed:
                await self._unexplained(repo, context, f"failed {event.attempts} times: {type(exc).__name__}")
            else:
                await self._poison(repo, context, f"analysis failed {event.attempts} times: {type(exc).__name__}")
            await repo.store.ack_event(CONSUMER, event.seq)
        else:
            delay = min(MAX_BACKOFF, self.lease * 2 ** (event.attempts - 1))
            await repo.store.defer_event(CONSUMER, event.seq, delay)
            log.warning("analysis of event %s failed (attempt %d), retried in %.0f s: %s",
                        event.seq, event.attempts, delay, type(exc).__name__, exc_info=exc)  # fmt: skip

    async def _poison(self, repo: Repository, context: ImageContext, reason: str) -> None:
        async with repo.store.transaction() as tx:  # the failed Task and its AuditEvent in one commit
            await record_failure(repo.within(tx), context, reason)
            await append_not_analysed(tx, context, "failed", reason)
            await self._audit_in(repo, tx, context, "8", f"analysis failed: {reason}")

    async def _unexplained(self, repo: Repository, context: ImageContext, reason: str) -> None:
        async with repo.store.transaction() as tx:  # the Task and its AuditEvent in one commit
            await record_explanations_unavailable(repo.within(tx), context, reason)
            await self._audit_in(repo, tx, context, "4", f"{EXPLANATIONS_UNAVAILABLE} ({reason}); {FINDINGS_STAND}")

    async def _misdirected(self, repo: Repository, context: ImageContext, event: OutboxEvent) -> None:
        """An event naming another patient than the one the image is filed under: settled, not analysed."""
        log.warning("event %s names another patient than instance %s is filed under: not analysed",
                    event.seq, context.instance_uid)  # fmt: skip
        async with repo.store.transaction() as tx:
            await self._audit_in(repo, tx, context, "8", "no AI analysis: the event names another patient than the "
                                                         "one the image is filed under")  # fmt: skip

    async def _held(self, repo: Repository, context: ImageContext, review: Stored) -> None:
        async with repo.store.transaction() as tx:  # the hold Task and its AuditEvent in one commit
            await record_hold(repo.within(tx), context, review)
            await self._audit_in(repo, tx, context, "4", f"no AI analysis: {hold_reason(review)}")

    async def _refused(self, repo: Repository, context: ImageContext, reason: str) -> None:
        async with repo.store.transaction() as tx:  # the review Task and the AuditEvent in one commit
            if self.human_review:
                await request_human_review(repo.within(tx), context, f"no AI analysis: {reason}")
            await self._audit_in(repo, tx, context, "4", f"no AI analysis: {reason}")

    async def _audit_in(
        self, repo: Repository, tx: TenantTransaction, context: ImageContext, outcome: str, description: str
    ) -> None:
        if self.audit is not None:
            event = analysis_event(context.patient_id, context.media_id, outcome, description)
            await self.audit.record_in(repo.store, tx, event)

    async def _audit(self, repo: Repository, context: ImageContext, outcome: str, description: str) -> None:
        if self.audit is not None:
            event = analysis_event(context.patient_id, context.media_id, outcome, description)
            await self.audit.record(repo.store, event)


def _decoded(ds: Dataset) -> np.ndarray | UndecodableImage:
    """The image's RGB pixels, or why they cannot be decoded (returned: the decoding runs as a task)."""
    try:
        return rgb_pixels(ds)
    except UndecodableImage as exc:
        return exc


def _abcd(job: Job, wanted: bool) -> DermoscopyAbcd | None:
    if not wanted:
        return None
    try:
        return analyse(job.rgb, job.spacing, job.segmentation)
    except SegmentationError:
        return None
