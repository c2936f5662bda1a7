"""Writing the audit trail: one explicit API, called where things happen.

Views, the admin, the REST API, services and management commands all write through
`record`; settings changes through `save_with_audit` / `delete_with_audit`.
"""
import getpass
import hashlib
import hmac
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from .models import AuditAction, AuditEvent

SECRET_FIELDS = frozenset({"channel_secret", "access_token", "api_key"})


def record(
    *,
    action: str,
    actor: Any = None,
    target_type: str = "",
    target_id: str | int = "",
    details: dict | None = None,
) -> AuditEvent:
    """Stores one audit event; `actor` is a user, a name (a shell user), or None (the system)."""
    if actor is None or isinstance(actor, str):
        actor_id, username = None, actor or ""
    else:
        actor_id, username = actor.pk, actor.get_username()
    return AuditEvent.objects.create(
        created_at=timezone.now(),
        actor_id=actor_id,
        actor_username=username[:150],
        action=action,
        target_type=target_type,
        target_id=str(target_id)[:128],
        details=details or {},
    )


def record_conversation_view(*, actor: Any, target_type: str, target_id: str | int = "", **details) -> AuditEvent:
    """"Viewed a conversation": a chat, a message or a filtered list of messages.

    `details` says how (`via`: "admin" or "api") and what else identifies the view.
    """
    return record(action=AuditAction.VIEW_CONVERSATION, actor=actor, target_type=target_type,
                  target_id=target_id, details=details)


def keyed_hash(value: str) -> str:
    """HMAC-SHA256 under AUDIT_HMAC_KEY: proves a value later without storing it."""
    return hmac.new(settings.AUDIT_HMAC_KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


def shell_actor() -> str:
    """Who ran a management command, as far as the shell tells."""
    try:
        return f"shell:{getpass.getuser()}"
    except (KeyError, OSError):
        return "shell"


# --- Settings changes ---------------------------------------------------------------


def snapshot(instance: models.Model) -> dict:
    """Field values (foreign keys by id) to compare before and after a change."""
    return {field.attname: getattr(instance, field.attname) for field in instance._meta.concrete_fields}


def save_with_audit(*, instance: models.Model, actor: Any, before: dict | None, action: str,
                    field_actions: dict[str, str] | None = None) -> models.Model:
    """Saves `instance` and records what changed since `before` (None: it is new).

    The event's action is `action`, unless a changed field names another in
    `field_actions` (a chat's retention change is audited as a retention change).
    Secrets appear only as "(changed)".
    """
    with transaction.atomic():
        instance.save()
        changes = _changes(before=before, after=snapshot(instance))
        if changes or before is None:
            chosen = next((field_actions[name] for name in changes if name in (field_actions or {})), action)
            record(action=chosen, actor=actor, target_type=instance._meta.model_name, target_id=instance.pk,
                   details={"created": before is None, "changes": changes, **_identity(instance)})
    return instance


def delete_with_audit(*, instance: models.Model, actor: Any, action: str) -> None:
    with transaction.atomic():
        record(action=action, actor=actor, target_type=instance._meta.model_name, target_id=instance.pk,
               details={"created": False, "changes": {"deleted": True}, **_identity(instance)})
        instance.delete()


def _identity(instance: models.Model) -> dict:
    """How the trail names what changed: `str()`, unless the model says otherwise with an
    `audit_identity()` method (a name that could identify a person outlives no erasure)."""
    identity = getattr(instance, "audit_identity", None)
    return identity() if identity else {"name": str(instance)}


def _changes(*, before: dict | None, after: dict) -> dict:
    changes = {}
    for name, new in after.items():
        old = (before or {}).get(name)
        if name in ("created_at", "updated_at") or old == new:
            continue
        label = name.removesuffix("_id")
        changes[label] = "(changed)" if label in SECRET_FIELDS else [_plain(old), _plain(new)]
    return changes


def _plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
