"""A turn's photos and voice messages made ready for the model, in the worker (never in the webhook).

Photos are fetched from LINE (an external link only where the channel allows it), cleaned
(core.images: EXIF and GPS gone) and stored before anything is sent anywhere. Voice messages
are fetched and transcribed by the channel's speech-to-text backend; the transcript becomes
the message's text (masked like typed text where the channel masks before storing), and the
audio is kept only where the channel says so.

Idempotent: a photo already stored, a voice message already transcribed is not fetched again,
so a turn taken up again after its worker died reuses what that worker finished. A file is
written only once its download is complete (`files.store_media`), so a worker killed
mid-download leaves nothing behind.
"""
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.conf import settings
from django.utils import translation
from django.utils.translation import gettext as _

from core.images import ImageRejected
from core.retry import retrying
from models_registry.backends import BackendError, ImagePart
from models_registry.models import ModelBackend, SamplingPreset
from models_registry.selectors import reads_images
from models_registry.services import TranscriptionRefused, allowed_backends, transcribe

from ..line.content import ContentError, fetch_channel_content, fetch_external_content
from ..line.events import MEDIA_WITH_CONTENT
from ..models import Chat, Message
from ..notices import chat_language
from .audio import AudioRejected, audio_content_type
from .files import forget_media, store_media
from .models import MediaKind, MessageMedia

logger = logging.getLogger(__name__)

# What a photo reads as in a prompt: the image itself goes beside it, to backends that read images.
PHOTO_PLACEHOLDER = "[photo]"


class MediaUnavailable(Exception):
    """A fetch or a transcription failed in a way worth trying again later (429, 5xx, network)."""


@dataclass(frozen=True)
class Readiness:
    """What came of getting a turn's media: `note`, when not empty, is the short text the turn
    is answered with instead of a model's answer (a photo that could not be had, a voice
    message the bot cannot listen to)."""

    note: str = ""
    has_images: bool = False


def prepare_media(*, message_ids: Iterable[int], chat: Chat, as_stored: Callable[[Chat, str], str]) -> Readiness:
    """Fetches, cleans, stores and transcribes the media of a turn's messages that need it.

    `as_stored(chat, text)` is how a text is kept (masked or not). Raises MediaUnavailable for
    a failure worth retrying; every other failure gives the turn a note."""
    messages = list(Message.objects.filter(pk__in=list(message_ids), message_type__in=MEDIA_WITH_CONTENT)
                    .select_related("media").order_by("id"))
    notes, has_images = [], False
    for message in messages:
        stored = getattr(message, "media", None) if _has_media(message) else None
        if message.message_type == "image":
            note = "" if stored else _store_photo(message=message, chat=chat)
            has_images = has_images or not note
        else:
            note = "" if message.text else _transcribe(message=message, chat=chat, stored=stored,
                                                       as_stored=as_stored)
        if note and note not in notes:
            notes.append(note)
    return Readiness(note="\n".join(notes), has_images=has_images)


def _has_media(message: Message) -> bool:
    try:
        return bool(message.media.file)
    except MessageMedia.DoesNotExist:
        return False


def _store_photo(*, message: Message, chat: Chat) -> str:
    """"" once the photo is stored, else the note to answer with (its reason in the error field)."""
    source = message.media_source or {}
    image_set = source.get("set") or ["", None, None]
    try:
        data = _download(message=message, chat=chat, max_bytes=settings.LINEBOT_MEDIA["MAX_IMAGE_BYTES"])
        store_media(message=message, kind=MediaKind.IMAGE, data=data, image_set_id=image_set[0] or "",
                    image_set_index=image_set[1], image_set_total=image_set[2])
    except (ContentError, ImageRejected) as exc:
        _failed(message, exc)
        return _in_chat_language(chat, lambda: _("I could not get your photo (LINE keeps photos only for a "
                                                 "while, and some cannot be read). Please send it again."))
    return ""


def _transcribe(*, message: Message, chat: Chat, stored: MessageMedia | None,
                as_stored: Callable[[Chat, str], str]) -> str:
    """Transcribes a voice message into its text; "" when done, else the note to answer with."""
    channel = chat.channel
    transcriber = channel.transcriber
    if transcriber is None or not transcriber.enabled or (chat.local_only and not transcriber.is_local):
        return _cannot_listen(chat)
    try:
        if stored is not None:
            with stored.file.open("rb") as handle:
                data = handle.read()
        else:
            data = _download(message=message, chat=chat, max_bytes=settings.LINEBOT_MEDIA["MAX_AUDIO_BYTES"])
            if channel.keep_audio:
                # Stored before transcribing, so a rerun after a dead worker transcribes the file.
                store_media(message=message, kind=MediaKind.AUDIO, data=data)
        content_type = audio_content_type(data)
        transcript = transcribe(backend=transcriber, audio=data, content_type=content_type,
                                local_only=chat.local_only).text.strip()
    except BackendError as exc:
        if exc.transient and message.attempts < settings.LINEBOT["MAX_ATTEMPTS"]:
            raise MediaUnavailable(f"the speech-to-text backend: {exc}") from None
        _failed(message, exc)
        return _voice_unavailable(chat)
    except (ContentError, AudioRejected, TranscriptionRefused, ValueError) as exc:
        _failed(message, exc)
        return _voice_unavailable(chat)
    if not transcript:
        _failed(message, ValueError("the speech-to-text backend heard nothing"))
        return _voice_unavailable(chat)
    Message.objects.filter(pk=message.pk).update(text=as_stored(chat, transcript))
    if not channel.keep_audio:
        # A file kept before the channel stopped keeping them goes now the text is safe.
        forget_media(message_ids=[message.pk])
    return ""


def _download(*, message: Message, chat: Chat, max_bytes: int) -> bytes:
    """The content, retried a few times at once like every LINE call; a failure that lasts is
    MediaUnavailable (the sweeper takes the turn up later) until the message's last attempt."""
    source = message.media_source or {}
    if source.get("url"):
        if not chat.channel.fetch_external_images:
            raise ContentError("the photo is a link to another server, and this channel does not fetch those")
        fetch = lambda: fetch_external_content(url=source["url"], max_bytes=max_bytes)  # noqa: E731
    else:
        # A simulated channel's content comes from its emulator, never from LINE.
        fetch = lambda: fetch_channel_content(channel=chat.channel,  # noqa: E731
                                              message_id=message.line_message_id, max_bytes=max_bytes)
    try:
        return retrying(fetch, delays=settings.LINEBOT["LINE_RETRY_DELAYS"],
                        transient=lambda exc: isinstance(exc, ContentError) and exc.transient).data
    except ContentError as exc:
        if exc.transient and message.attempts < settings.LINEBOT["MAX_ATTEMPTS"]:
            raise MediaUnavailable(f"fetching message {message.pk}'s content: {exc}") from None
        raise


def _failed(message: Message, exc: Exception) -> None:
    reason = getattr(exc, "reason", None) or str(exc)
    logger.info("Media of message %s not used: %s", message.pk, reason)
    Message.objects.filter(pk=message.pk).update(error=reason[:500])


def _in_chat_language(chat: Chat, text: Callable[[], str]) -> str:
    with translation.override(chat_language(chat=chat)):
        return text()


def _cannot_listen(chat: Chat) -> str:
    return _in_chat_language(chat, lambda: _("I can't listen to voice messages here. Please type your message."))


def _voice_unavailable(chat: Chat) -> str:
    return _in_chat_language(chat, lambda: _("I could not make out your voice message. Please send it again, "
                                             "or type it."))


def cannot_read_images(chat: Chat) -> str:
    return _in_chat_language(chat, lambda: _("I can't read images here. Please tell me in words what you "
                                             "would like to know."))


def may_see_images(*, backend: ModelBackend, chat: Chat) -> bool:
    """Whether `backend` is sent the images of `chat`: it must read images, and be local unless
    the channel sends images to the cloud and the chat is not local-only (images cannot be masked)."""
    if not reads_images(backend=backend):
        return False
    return backend.is_local or (chat.channel.images_to_cloud and not chat.local_only)


def any_backend_sees_images(*, preset: SamplingPreset, chat: Chat) -> bool:
    return any(may_see_images(backend=backend, chat=chat)
               for backend in allowed_backends(preset=preset, local_only=chat.local_only))


def stored_images(*, message_ids: Iterable[int], keep: int) -> dict[int, tuple[ImagePart, ...]]:
    """The stored photos of the newest `keep` of these messages that have one, by message id
    (only as many as a prompt may carry are read from the storage)."""
    if keep <= 0:
        return {}
    rows = (MessageMedia.objects.filter(message_id__in=list(message_ids), kind=MediaKind.IMAGE, redacted=False)
            .exclude(file="").order_by("-message_id")[:keep])
    images = {}
    for media in rows:
        try:
            with media.file.open("rb") as handle:
                images[media.message_id] = (ImagePart(media.content_type, handle.read()),)
        except OSError:
            logger.warning("The photo of message %s is missing from the media storage", media.message_id)
    return images
