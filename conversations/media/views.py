"""The one way a media file reaches a browser: staff with permission to read messages, each
access audited, never cached, never sniffed into something else. There is no public URL."""
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404

from core import audit
from core.images import thumbnail

from .models import MediaKind, MessageMedia

VARIANTS = ("file", "thumbnail")


def media_view(request: HttpRequest, message_id: int, variant: str) -> HttpResponse:
    """A message's file, or a thumbnail of its image (mounted in the admin: staff only)."""
    if not request.user.has_perm("conversations.view_message"):
        raise PermissionDenied
    if variant not in VARIANTS:
        raise Http404
    media = get_object_or_404(MessageMedia.objects.select_related("message"), message_id=message_id)
    if not media.file or (variant == "thumbnail" and media.kind != MediaKind.IMAGE):
        raise Http404
    audit.record_conversation_view(actor=request.user, target_type="message_media", target_id=message_id,
                                   via="admin", chat_id=media.message.chat_id, variant=variant)
    if variant == "thumbnail":
        with media.file.open("rb") as handle:
            data, content_type = thumbnail(handle.read())
        response = HttpResponse(data, content_type=content_type)
    else:
        response = FileResponse(media.file.open("rb"), content_type=media.content_type)
    return private(response)


def private(response: HttpResponse) -> HttpResponse:
    """Headers for a user's file: no cache keeps it, no browser reads it as a page."""
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Disposition"] = "inline"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cross-Origin-Resource-Policy"] = "same-origin"
    return response
