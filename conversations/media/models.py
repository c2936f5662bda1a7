"""The file a message holds: a photo or a voice message, kept in the private media storage."""
import posixpath
import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .storage import media_storage


class MediaKind(models.TextChoices):
    IMAGE = "image", _("image")
    AUDIO = "audio", _("audio")


def media_file_name(instance: "MessageMedia", filename: str) -> str:
    # A random name: nothing in the storage's listing says whose file it is.
    extension = posixpath.splitext(filename)[1].lower()
    return f"{timezone.now():%Y/%m}/{uuid.uuid4().hex}{extension}"


class MessageMedia(models.Model):
    """One file of one message. An imageSet (several photos sent at once) is several messages,
    each with one of these, sharing `image_set_id`."""

    message = models.OneToOneField("conversations.Message", on_delete=models.CASCADE, related_name="media",
                                   verbose_name=_("message"))
    kind = models.CharField(_("kind"), max_length=8, choices=MediaKind.choices)
    content_type = models.CharField(_("content type"), max_length=64)
    size = models.PositiveIntegerField(_("size (bytes)"))
    # Of the stored (for images: cleaned) file; exports list it, verify_export checks it.
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField(_("width"), null=True, blank=True)
    height = models.PositiveIntegerField(_("height"), null=True, blank=True)
    image_set_id = models.CharField(_("image set"), max_length=64, blank=True, default="")
    image_set_index = models.PositiveSmallIntegerField(null=True, blank=True)
    image_set_total = models.PositiveSmallIntegerField(null=True, blank=True)
    # Empty once redacted: the row says there was a file, the file is gone.
    file = models.FileField(_("file"), storage=media_storage, upload_to=media_file_name, max_length=255,
                            blank=True)
    redacted = models.BooleanField(_("redacted"), default=False)
    created_at = models.DateTimeField(_("stored at"), auto_now_add=True)

    class Meta:
        verbose_name = _("message media")
        verbose_name_plural = _("message media")
        indexes = [
            models.Index(fields=["image_set_id"], name="media_image_set", condition=~Q(image_set_id="")),
            # The orphan sweep asks "does a row name this file?" for each file in the storage.
            models.Index(fields=["file"], name="media_file"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of message #{self.message_id}"
