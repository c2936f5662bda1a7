"""Sign-ins to the admin go into the audit trail."""
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver

from . import audit
from .models import AuditAction


@receiver(user_logged_in)
def audit_login(sender, request, user, **kwargs) -> None:
    audit.record(action=AuditAction.ADMIN_LOGIN, actor=user, target_type="user", target_id=user.pk,
                 details={"ip": request.META.get("REMOTE_ADDR", "") if request else ""})
