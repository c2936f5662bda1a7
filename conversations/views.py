"""The LINE webhook: verify, store, queue, acknowledge — nothing slow in the request."""
import json
import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import channel_health
from . import ingest, selectors
from .line import events as line_events
from .line.signature import signature_is_valid

logger = logging.getLogger(__name__)


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@csrf_exempt
@require_POST
def webhook(request: HttpRequest, slug: str | None = None) -> HttpResponse:
    channel = selectors.channel_for_webhook(slug=slug)
    # A simulated channel has no public webhook: only the console's simulator, which signs
    # in as an operator, hands it events (in this process; see simulator.services).
    if channel is None or (channel.is_simulated and not getattr(request, "from_simulator", False)):
        return _error(404, "No LINE channel is configured for this webhook URL.")
    signature = request.headers.get("X-Line-Signature")
    if not signature:
        return _error(400, "Missing X-Line-Signature header.")
    try:
        length = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        return _error(400, "Invalid Content-Length header.")
    if length > settings.LINE_WEBHOOK_MAX_BODY_BYTES:
        return _error(413, "Request body too large for a LINE webhook.")
    body = request.body
    if not signature_is_valid(body=body, signature=signature, channel_secret=channel.channel_secret):
        logger.warning("Rejected a webhook for channel %s: signature does not match", channel.slug)
        # On the console too (rare, so one UPDATE is cheap): a wrong channel secret shows there.
        channel_health.count_rejected_signature(channel_id=channel.pk)
        return _error(403, "Invalid X-Line-Signature.")
    try:
        payload = json.loads(body)
    except ValueError:
        return _error(400, "Body is not valid JSON.")
    except RecursionError:
        return _error(400, "Body is JSON nested too deeply for a LINE webhook.")
    events = payload.get("events") if isinstance(payload, dict) else None
    if not isinstance(events, list):
        return _error(400, "Body has no 'events' list.")
    result = ingest.ingest_events(channel=channel, events=events, destination=line_events.destination(payload))
    return JsonResponse({"stored": result.stored, "duplicates": result.duplicates, "ignored": result.ignored})
