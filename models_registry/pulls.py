"""Downloading a model onto an Ollama backend's server from the console ("pull").

A pull runs in a django-q2 task, not in the web request: a download of gigabytes outlasts
any web worker's timeout. The task writes its progress on a ModelPull row, which the
console's page polls. Each task pulls for at most PULL_SLICE seconds, within the queue's
task timeout and before the broker would hand the task out again; then it queues the
next one, and Ollama, which keeps partial downloads, goes on where it stopped.
"""
import re
import time
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django_q.tasks import async_task

from core import audit
from core.models import AuditAction

from . import selectors
from .backends import BackendError
from .models import BackendKind, ModelBackend, ModelPull, PullStatus
from .services import adapter_for

PULL_TASK = "models_registry.tasks.pull_model"
# Seconds one task pulls before handing over to the next: inside both the task timeout
# and the broker's redelivery ("retry"), with a margin.
PULL_SLICE = max(30, min(settings.Q_CLUSTER.get("timeout") or 600, settings.Q_CLUSTER.get("retry") or 660) - 90)
# Seconds between two progress writes: often enough for a smooth bar, few writes.
PROGRESS_EVERY = 0.5
# An unfinished pull not heard of for this long lost its worker: a new one may start.
STALE_AFTER = timedelta(seconds=PULL_SLICE + 300)
# Ollama's names: [host/][namespace/]model[:tag], letters, digits and . _ - only.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]*(/[A-Za-z0-9][A-Za-z0-9._\-]*)*(:[A-Za-z0-9][A-Za-z0-9._\-]*)?")


def start_pull(*, backend: ModelBackend, model: str, actor) -> ModelPull:
    """Queues the download of `model` onto the backend's Ollama server, audited.

    A download of the same model already under way is returned instead of a second one.
    """
    model = model.strip()
    if backend.kind != BackendKind.OLLAMA:
        raise ValidationError(_("Only Ollama servers can download models from the console."))
    if len(model) > 200 or not MODEL_NAME.fullmatch(model):
        raise ValidationError(_("“%(model)s” is not an Ollama model name, such as gemma3:4b.") % {"model": model})
    running = ongoing_pull(backend=backend, model=model)
    if running is not None:
        return running
    with transaction.atomic():
        pull = ModelPull.objects.create(backend=backend, model=model, updated_at=timezone.now(),
                                        requested_by=actor if isinstance(actor, str) else actor.get_username())
        audit.record(action=AuditAction.MODEL_PULL, actor=actor, target_type="modelbackend", target_id=backend.pk,
                     details={"name": backend.name, "model": model, "pull_id": pull.pk})
        transaction.on_commit(lambda: async_task(PULL_TASK, pull.pk), robust=True)
    return pull


def ongoing_pull(*, backend: ModelBackend, model: str | None = None) -> ModelPull | None:
    """The backend's unfinished download (of `model`) that is still being worked on."""
    pulls = ModelPull.objects.filter(backend=backend, status__in=[PullStatus.QUEUED, PullStatus.PULLING],
                                     updated_at__gte=timezone.now() - STALE_AFTER)
    if model is not None:
        pulls = pulls.filter(model=model)
    return pulls.order_by("-id").first()


def latest_pull(*, backend: ModelBackend, within: timedelta = timedelta(hours=1)) -> ModelPull | None:
    """What the backend's page shows: its newest download, unfinished or of the last hour."""
    pull = ModelPull.objects.filter(backend=backend).order_by("-id").first()
    if pull is None or (pull.finished and pull.updated_at < timezone.now() - within):
        return None
    return pull


def run_pull(*, pull_id: int, slice_seconds: float | None = None) -> str:
    """The task: pulls for one slice, recording progress; then done, failed or handed on."""
    pull = ModelPull.objects.select_related("backend").filter(pk=pull_id).first()
    if pull is None or pull.finished:
        return "nothing to do"
    deadline = time.monotonic() + (PULL_SLICE if slice_seconds is None else slice_seconds)
    layers: dict[str, tuple[int, int]] = {}
    written_at = 0.0
    advanced = False
    _record(pull, status=PullStatus.PULLING)
    try:
        for progress in adapter_for(backend=pull.backend).pull(pull.model):
            if progress.digest and progress.total:
                done = progress.completed or 0
                # A layer's first line in this task says where it resumed; more than that is progress.
                advanced = advanced or (progress.digest in layers and done > layers[progress.digest][0])
                layers[progress.digest] = (done, progress.total)
            completed = sum(done for done, _total in layers.values())
            total = sum(size for _done, size in layers.values())
            if progress.status == "success":
                _record(pull, status=PullStatus.DONE, step=progress.status, completed=total, total=total)
                selectors.forget_backend_health()
                return "done"
            now = time.monotonic()
            if now - written_at >= PROGRESS_EVERY:
                _record(pull, step=progress.status, completed=completed, total=total)
                written_at = now
            # Handing over only once bytes came in, so every slice moves the download on.
            if now > deadline and advanced:
                _record(pull, step=progress.status, completed=completed, total=total)
                transaction.on_commit(lambda: async_task(PULL_TASK, pull.pk), robust=True)
                return "continues in the next task"
    except BackendError as exc:
        _record(pull, status=PullStatus.FAILED, error=str(exc))
        return "failed"
    _record(pull, status=PullStatus.FAILED, error=_("The server ended the download without saying it succeeded."))
    return "failed"


def _record(pull: ModelPull, **fields) -> None:
    fields["updated_at"] = timezone.now()
    ModelPull.objects.filter(pk=pull.pk).update(**fields)
    for name, value in fields.items():
        setattr(pull, name, value)
