"""Sign-ins to the admin go into the audit trail."""
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver

from . import audit
from .models import AuditAction
from .signins import client_address


@receiver(user_logged_in)
def audit_login(sender, request, user, **kwargs) -> None:
    audit.record(action=AuditAction.ADMIN_LOGIN, actor=user, target_type="user", target_id=user.pk,
                 details={"ip": client_address(request=request)})
