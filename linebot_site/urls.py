from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path
from django.utils.translation import gettext_lazy as _

from linebot_site.signins import SignInForm

admin.site.site_header = _("LINE LLM bot")
admin.site.site_title = _("LINE LLM bot")
admin.site.index_title = _("Dashboard")
# The console's own navigation bar replaces the admin's sidebar, leaving room for the lists.
admin.site.enable_nav_sidebar = False
# Says when sign-ins are locked (linebot_site.signins) instead of "wrong password".
admin.site.login_form = SignInForm


def healthz(request):
    """Liveness for process managers; the detailed health check is part of the API."""
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [
    path("", include("conversations.urls")),
    path("healthz", healthz),
    path("api/v1/", include("linebot_site.api")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("admin/", admin.site.urls),
]
