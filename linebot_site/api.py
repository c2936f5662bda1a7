"""The REST API's shared pieces (permissions, pagination, throttles, errors, audited
writes) and its URLs under /api/v1/."""
import copy
from functools import lru_cache

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import ProtectedError
from django.http import JsonResponse
from django.urls import Resolver404, include, path, re_path, resolve
from django.views.decorators.csrf import csrf_exempt
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import exceptions, permissions, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.routers import DefaultRouter
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle
from rest_framework.views import exception_handler as drf_exception_handler

from .auditing import delete_with_audit, save_with_audit, snapshot

# --- Who may do what ----------------------------------------------------------------


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


# --- Throttles and pagination -------------------------------------------------------


class _RateFromSettings:
    # DRF reads the rates once at import; reading them per request lets tests and
    # settings overrides change them.
    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class UserThrottle(_RateFromSettings, UserRateThrottle):
    pass


class AnonThrottle(_RateFromSettings, AnonRateThrottle):
    pass


class PagePagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class ApiViewMixin:
    """Defaults of every API view, set here rather than in REST_FRAMEWORK (see settings)."""

    permission_classes = [ModelPermissions]
    throttle_classes = [UserThrottle, AnonThrottle]
    pagination_class = PagePagination
    filter_backends = [DjangoFilterBackend]


# --- Writes ---------------------------------------------------------------------------


class ModelCleanMixin:
    """Serializer validation as the admin's ModelForm does it: the model's `full_clean()`
    (field validators, uniqueness, constraints), reported per field.

    `write_only_secrets` are never returned; left out or blank on an update, the stored
    value stays. `required_secrets` must be given when creating.
    """

    write_only_secrets: tuple[str, ...] = ()
    required_secrets: tuple[str, ...] = ()

    def validate(self, attrs):
        attrs = super().validate(attrs)
        for name in self.write_only_secrets:
            if not attrs.get(name):
                attrs.pop(name, None)
        model = self.Meta.model
        if self.instance is None:
            message = f"Required for a new {model._meta.verbose_name}."
            missing = {name: [message] for name in self.required_secrets if name not in attrs}
            if missing:
                raise serializers.ValidationError(missing)
        candidate = copy.copy(self.instance) if self.instance is not None else model()
        for name, value in attrs.items():
            setattr(candidate, name, value)
        candidate.full_clean()
        return attrs


class AuditedWritesMixin:
    """Creates, updates and deletes through `save_with_audit` / `delete_with_audit`, as
    the admin does, so the API's writes land in the audit log the same way."""

    def perform_create(self, serializer):
        instance = serializer.Meta.model(**serializer.validated_data)
        serializer.instance = save_with_audit(instance=instance, actor=self.request.user, before=None)

    def perform_update(self, serializer):
        instance = serializer.instance
        before = snapshot(instance)
        for name, value in serializer.validated_data.items():
            setattr(instance, name, value)
        serializer.instance = save_with_audit(instance=instance, actor=self.request.user, before=before)

    def perform_destroy(self, instance):
        delete_with_audit(instance=instance, actor=self.request.user)


# --- Errors ---------------------------------------------------------------------------


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The object is still in use."
    default_code = "conflict"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "too_large"


def exception_handler(exc, context):
    """DRF's handler, also answering in JSON what the model layer and Django's request
    parsing refuse (Django alone would answer 500 or an HTML page)."""
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(serializers.as_serializer_error(exc))
    elif isinstance(exc, ProtectedError):
        used_by = sorted({str(obj) for obj in exc.protected_objects})[:10]
        exc = Conflict(f"Still used by: {', '.join(used_by)}. Change or delete those first.")
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    elif isinstance(exc, (TooManyFieldsSent, TooManyFilesSent)):
        exc = exceptions.ParseError("The request has too many fields.")
    return drf_exception_handler(exc, context)


_ERROR_COMPONENTS = {
    "Error": {
        "type": "object",
        "properties": {"detail": {"type": "string"}},
        "required": ["detail"],
    },
    "ValidationError": {
        "type": "object",
        "description": "Messages per field (`non_field_errors` for the object as a whole), or `detail`.",
        "additionalProperties": {},
    },
}
_ERRORS = {
    "400": ("ValidationError", "Invalid input: messages per field."),
    "401": ("Error", "No or invalid credentials."),
    "403": ("Error", "The user lacks the model permission."),
    "404": ("Error", "Not found."),
    "413": ("Error", "The request body is too large."),
    "429": ("Error", "Too many requests (see Retry-After)."),
}


def add_error_responses(result, generator, request, public):
    """drf-spectacular hook: documents the error answers every operation may give."""
    result.setdefault("components", {}).setdefault("schemas", {}).update(_ERROR_COMPONENTS)
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            anonymous = {} in operation.get("security", [{}])
            has_input = "requestBody" in operation or any(
                parameter["in"] == "query" for parameter in operation.get("parameters", []))
            for code, (component, description) in _ERRORS.items():
                if ((anonymous and code in ("401", "403")) or (code == "400" and not has_input)
                        or (code == "413" and "requestBody" not in operation)):
                    continue
                operation["responses"].setdefault(code, {
                    "description": description,
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{component}"}}},
                })
    return result


# --- URLs -----------------------------------------------------------------------------


@csrf_exempt  # nothing to protect, and a refusal here would be HTML
def not_found(request, *args, **kwargs):
    """Any other path under /api/v1/: a JSON 404, not Django's HTML page."""
    detail = "Not found."
    if not request.path.endswith("/"):
        try:
            if resolve(request.path + "/").func is not not_found:
                detail = f"Not found. Did you mean {request.path}/ ?"
        except Resolver404:
            pass
    return JsonResponse({"detail": detail}, status=404)


@lru_cache(maxsize=1)
def _urlpatterns() -> list:
    from conversations import api as conversations_api
    from models_registry import api as registry_api

    router = DefaultRouter()
    router.register("channels", conversations_api.ChannelViewSet, basename="channel")
    router.register("backends", registry_api.BackendViewSet, basename="backend")
    router.register("presets", registry_api.PresetViewSet, basename="preset")
    router.register("chats", conversations_api.ChatViewSet, basename="chat")
    router.register("messages", conversations_api.MessageViewSet, basename="message")
    router.register("audit-events", conversations_api.AuditEventViewSet, basename="auditevent")
    return [
        path("", include(router.urls)),
        path("stats/", conversations_api.StatsView.as_view(), name="api-stats"),
        path("health", conversations_api.HealthView.as_view(), name="api-health"),
        path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
        # Swagger UI only: drf-spectacular's Redoc page loads fonts from Google.
        path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
        re_path(r"", not_found),
    ]


def __getattr__(name: str):
    # The URLconf names this module; the apps' API modules import it for the pieces
    # above, so the routes are built on first use rather than at import.
    if name == "urlpatterns":
        return _urlpatterns()
    raise AttributeError(name)
