"""Errors answered in JSON: DRF's own, and what Django or the model layer refuse."""
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import ProtectedError
from django.http import JsonResponse
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, serializers, status
from rest_framework.views import exception_handler as drf_exception_handler


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
