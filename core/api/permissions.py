"""Who may do what through the API: the admin's model permissions, reads included."""
from rest_framework import permissions


class ModelPermissions(permissions.DjangoModelPermissions):
    """The admin's rule: a model permission for every request, reads included.

    DRF lets any signed-in user read; here GET needs `view_<model>`. A view may name the
    permissions of its extra actions in `action_permissions` ({action: [perm, ...]}).
    """

    perms_map = {
        **permissions.DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": ["%(app_label)s.view_%(model_name)s"],
    }

    def has_permission(self, request, view):
        required = getattr(view, "action_permissions", {}).get(getattr(view, "action", None))
        if required is not None:
            return bool(request.user and request.user.is_authenticated and request.user.has_perms(required))
        return super().has_permission(request, view)


class HasPermissions(permissions.BasePermission):
    """For views without a model: the user needs every permission in `view.required_permissions`."""

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated
                    and request.user.has_perms(getattr(view, "required_permissions", ())))
