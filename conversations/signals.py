"""Keeping caches, schedules and the audit trail in step with what happens elsewhere."""
from django.contrib.auth.signals import user_logged_in
from django.db.models.signals import post_delete, post_migrate, post_save
from django.dispatch import receiver

from linebot_site.auditing import settings_changed
from models_registry.models import ModelBackend, SamplingPreset

from . import audit, selectors, services
from .models import AuditAction, Chat, LineChannel, PrivacyPolicy

RETENTION_FIELDS = {"retention_days", "legal_hold"}
ACTIONS = {
    ModelBackend: AuditAction.BACKEND_CHANGE,
    SamplingPreset: AuditAction.PRESET_CHANGE,
    LineChannel: AuditAction.CHANNEL_CHANGE,
    Chat: AuditAction.CHAT_CHANGE,
    PrivacyPolicy: AuditAction.PRIVACY_CHANGE,
}


@receiver([post_save, post_delete], sender=LineChannel)
def forget_cached_channels(**kwargs) -> None:
    selectors.forget_cached_channels()


@receiver([post_save, post_delete], sender=Chat)
def forget_cached_chats(**kwargs) -> None:
    services.forget_cached_chats()


@receiver([post_save, post_delete], sender=PrivacyPolicy)
def forget_cached_policy(**kwargs) -> None:
    selectors.forget_cached_policy()


@receiver(post_migrate)
def create_schedules(sender, **kwargs) -> None:
    if sender.name == "conversations":
        services.ensure_schedules()


@receiver(settings_changed)
def audit_settings_change(sender, instance, actor, created, changes, **kwargs) -> None:
    action = ACTIONS.get(sender)
    if action is None:
        return
    if RETENTION_FIELDS & changes.keys():
        action = AuditAction.RETENTION_CHANGE
    details = {"created": created, "changes": changes, "name": str(instance)}
    if sender is Chat:
        # A chat's str() falls back to its LINE id; the trail outlives an erasure, so it
        # keeps only the id's keyed hash.
        details.update(name=instance.display_name, line_id_hmac=audit.keyed_hash(instance.line_id))
    audit.record(action=action, actor=actor, target_type=sender._meta.model_name, target_id=instance.pk,
                 details=details)


@receiver(user_logged_in)
def audit_login(sender, request, user, **kwargs) -> None:
    audit.record(action=AuditAction.ADMIN_LOGIN, actor=user, target_type="user", target_id=user.pk,
                 details={"ip": request.META.get("REMOTE_ADDR", "") if request else ""})
