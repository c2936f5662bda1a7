"""Writing the audit trail: one function, called by views, admin, commands and services."""
import getpass
import hashlib
import hmac
from typing import Any

from django.conf import settings
from django.utils import timezone

from .models import AuditEvent


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


def keyed_hash(value: str) -> str:
    """HMAC-SHA256 under AUDIT_HMAC_KEY: proves a value later without storing it."""
    return hmac.new(settings.AUDIT_HMAC_KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


def shell_actor() -> str:
    """Who ran a management command, as far as the shell tells."""
    try:
        return f"shell:{getpass.getuser()}"
    except (KeyError, OSError):
        return "shell"
