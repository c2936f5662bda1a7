from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path, re_path
from django.utils.translation import gettext_lazy as _
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from conversations import api as conversations_api
from core.api import audit as audit_api
from core.api.errors import not_found
from models_registry import api as registry_api

from core.signins import SignInForm

admin.site.site_header = _("LINE LLM bot")
admin.site.site_title = _("LINE LLM bot")
admin.site.index_title = _("Dashboard")
# The console's own navigation bar replaces the admin's sidebar, leaving room for the lists.
admin.site.enable_nav_sidebar = False
# Says when sign-ins are locked (core.signins) instead of "wrong password".
admin.site.login_form = SignInForm
# There is no public site: "/" leads to the console, so the admin's "View site" would too.
admin.site.site_url = None


def healthz(request):
    """Liveness for process managers; the detailed health check is part of the API."""
    return HttpResponse("ok", content_type="text/plain")


router = DefaultRouter()
router.register("channels", conversations_api.ChannelViewSet, basename="channel")
router.register("backends", registry_api.BackendViewSet, basename="backend")
router.register("presets", registry_api.PresetViewSet, basename="preset")
router.register("chats", conversations_api.ChatViewSet, basename="chat")
router.register("messages", conversations_api.MessageViewSet, basename="message")
router.register("audit-events", audit_api.AuditEventViewSet, basename="auditevent")

api_urlpatterns = [
    path("", include(router.urls)),
    path("stats/", conversations_api.StatsView.as_view(), name="api-stats"),
    path("health", conversations_api.HealthView.as_view(), name="api-health"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # Swagger UI only: drf-spectacular's Redoc page loads fonts from Google.
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    re_path(r"", not_found),
]

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index"), name="home"),
    path("", include("conversations.urls")),
    path("healthz", healthz),
    path("api/v1/", include(api_urlpatterns)),
    path("i18n/", include("django.conf.urls.i18n")),
    path("admin/", admin.site.urls),
]
