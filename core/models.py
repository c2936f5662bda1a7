"""The audit trail: one row per operator action on logs or settings."""
from django.db import models
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext_lazy as _


class AuditAction(models.TextChoices):
    VIEW_CONVERSATION = "view_conversation", _("viewed a conversation")
    REDACT = "redact", _("redacted a message")
    EXPORT = "export", _("exported conversations")
    EXPORT_USER = "export_user", _("exported a user's data")
    VERIFY_EXPORT = "verify_export", _("verified an export")
    ERASE_USER = "erase_user", _("erased a user")
    ERASURE_REQUESTED = "erasure_requested", _("asked for an erasure that a legal hold stops")
    PURGE = "purge", _("purged expired messages")
    RETENTION_CHANGE = "retention_change", _("changed retention")
    PRESET_CHANGE = "preset_change", _("changed a preset")
    BACKEND_CHANGE = "backend_change", _("changed a backend")
    CHANNEL_CHANGE = "channel_change", _("changed a channel")
    CHAT_CHANGE = "chat_change", _("changed a chat")
    PRIVACY_CHANGE = "privacy_change", _("changed the privacy policy")
    RETRY = "retry", _("retried a message")
    MODEL_PULL = "model_pull", _("pulled a model onto a backend")
    ADMIN_LOGIN = "admin_login", _("logged in to the admin")
    SIGNIN_FAILED = "signin_failed", _("failed to sign in")
    SIGNIN_LOCKOUT = "signin_lockout", _("locked out after failed sign-ins")
    SIMULATE = "simulate", _("sent a simulated LINE event")


class AuditEvent(models.Model):
    """One operator action on logs or settings. Copies, not foreign keys, so it outlives both."""

    created_at = models.DateTimeField(_("time"), db_index=True)
    actor_id = models.IntegerField(_("user id"), null=True, blank=True)
    actor_username = models.CharField(_("user"), max_length=150, blank=True, default="")
    action = models.CharField(_("action"), max_length=32, choices=AuditAction.choices)
    target_type = models.CharField(_("target type"), max_length=64, blank=True, default="")
    target_id = models.CharField(_("target id"), max_length=128, blank=True, default="")
    details = models.JSONField(_("details"), default=dict, blank=True)

    class Meta:
        # The table predates this app (it was created by `conversations`); it keeps its name.
        db_table = "conversations_auditevent"
        ordering = ["-created_at", "-id"]
        verbose_name = _("audit event")
        verbose_name_plural = _("audit log")
        indexes = [models.Index(fields=["action", "-created_at"], name="audit_action_time")]

    def __str__(self) -> str:
        # In TIME_ZONE and the console's format, like every other time on the page.
        when = date_format(timezone.localtime(self.created_at), "DATETIME_FORMAT") if self.created_at else ""
        return f"{when} {self.actor_username or _('system')} {self.get_action_display()}"
