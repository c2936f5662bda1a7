"""The LINE channel page's part in setting up: webhook health, and checking the channel with LINE."""
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.translation import gettext as _

from core.redirects import safe_next

from . import channel_status, line_check
from .models import LineChannel


class ChannelSetupAdminMixin:
    """For LineChannelAdmin: the health panel on the change page and a POST-only check view."""

    def get_urls(self):
        return [
            path("<int:channel_id>/check/", self.admin_site.admin_view(self.check_view),
                 name="conversations_linechannel_check"),
            *super().get_urls(),
        ]

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        channel = self.get_object(request, object_id) if object_id else None
        if channel is not None:
            status = channel_status.channel_status(channel=channel, request=request)
            extra_context = {**(extra_context or {}), "status": status, "webhook_url": status.webhook_url,
                             "can_check": self.has_change_permission(request, channel)}
        return super().changeform_view(request, object_id, form_url, extra_context)

    def check_view(self, request: HttpRequest, channel_id: int) -> HttpResponse:
        """Calls LINE with the channel's access token: a POST, by someone who may change the channel."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        channel = get_object_or_404(LineChannel, pk=channel_id)
        if not self.has_change_permission(request, channel):
            raise PermissionDenied
        report = line_check.check_with_line(channel=channel)
        if report.ok:
            self.message_user(request, _("LINE accepts the access token of %(channel)s: it is the bot "
                                         "“%(bot)s” (%(basic_id)s).") % {
                "channel": channel, "bot": report.bot_name, "basic_id": report.basic_id}, messages.SUCCESS)
        elif report.status == 401:
            self.message_user(request, _("LINE refused the access token of %(channel)s (401). Issue a new one "
                                         "in the LINE Developers console (Messaging API tab, “Channel access "
                                         "token”) and save it here.") % {"channel": channel}, messages.ERROR)
        elif report.status is None:
            self.message_user(request, _("LINE could not be reached (%(error)s); try again later.") % {
                "error": report.error}, messages.ERROR)
        else:
            self.message_user(request, _("LINE answered %(status)s: %(error)s") % {
                "status": report.status, "error": report.error}, messages.ERROR)
        return HttpResponseRedirect(safe_next(
            request=request, target=request.POST.get("next"),
            default=reverse("admin:conversations_linechannel_change", args=[channel.pk])))
