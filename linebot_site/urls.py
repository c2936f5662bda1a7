from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path


def healthz(request):
    """Liveness for process managers; the detailed health check is part of the API."""
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [
    path("", include("conversations.urls")),
    path("healthz", healthz),
    path("admin/", admin.site.urls),
]
