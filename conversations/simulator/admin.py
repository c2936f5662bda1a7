"""The simulator and preset comparisons in the console: URLs and permissions, nothing else."""
from functools import partial

from django.contrib import admin
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from . import views
from .models import PresetComparison, SimulatedChat


class _PagesOnlyAdmin(admin.ModelAdmin):
    """A model admin that serves its own pages instead of Django's add/change forms."""

    required_permissions: tuple[str, ...] = ()

    def has_module_permission(self, request):
        return request.user.has_perms(self.required_permissions)

    def has_view_permission(self, request, obj=None):
        return request.user.has_perms(self.required_permissions)

    def has_change_permission(self, request, obj=None):
        return request.user.has_perms(self.required_permissions)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def _page(self, view, **kwargs):
        return self.admin_site.admin_view(partial(view, model_admin=self, **kwargs))


@admin.register(SimulatedChat)
class SimulatorAdmin(_PagesOnlyAdmin):
    required_permissions = views.SIMULATE_PERMISSIONS

    def get_urls(self):
        return [
            path("", self._page(views.simulator_page), name="conversations_simulatedchat_changelist"),
            path("new/", self._page(views.create_chat), name="conversations_simulatedchat_new"),
            path("<int:simulated_id>/send/", self._page(views.send), name="conversations_simulatedchat_send"),
            path("<int:simulated_id>/timeline/", self._page(views.timeline),
                 name="conversations_simulatedchat_timeline"),
            path("<int:simulated_id>/members/", self._page(views.members), name="conversations_simulatedchat_members"),
            path("<int:simulated_id>/settings/", self._page(views.chat_settings),
                 name="conversations_simulatedchat_settings"),
            path("<int:simulated_id>/delete/", self._page(views.delete_chat), name="conversations_simulatedchat_delete"),
            path("answers/<int:answer_id>/prompt/", self._page(views.prompt), name="conversations_simulatedchat_prompt"),
        ]


@admin.register(PresetComparison)
class PresetComparisonAdmin(_PagesOnlyAdmin):
    required_permissions = views.COMPARE_PERMISSIONS
    list_display = ["comparison", "state", "done", "total", "requested_by", "created_at"]
    list_display_links = None
    list_filter = ["state"]

    @admin.display(description=_("comparison"))
    def comparison(self, obj: PresetComparison) -> str:
        return format_html('<a href="{}">{}</a>', reverse("admin:conversations_presetcomparison_page", args=[obj.pk]),
                           obj)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("chat")

    def get_urls(self):
        return [
            path("start/", self._page(views.compare_start), name="conversations_presetcomparison_start"),
            path("<int:comparison_id>/", self._page(views.compare_page), name="conversations_presetcomparison_page"),
            path("<int:comparison_id>/progress/", self._page(views.compare_progress),
                 name="conversations_presetcomparison_progress"),
            path("<int:comparison_id>/cancel/", self._page(views.compare_cancel),
                 name="conversations_presetcomparison_cancel"),
            *super().get_urls(),
        ]
