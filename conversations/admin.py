from django import forms
from django.contrib import admin

from linebot_site.forms import SecretField, SecretFieldsMixin

from .models import Chat, LineChannel, Message


class LineChannelForm(SecretFieldsMixin, forms.ModelForm):
    secret_fields = ("channel_secret", "access_token")
    channel_secret = SecretField(label="Channel secret")
    access_token = SecretField(label="Channel access token")

    class Meta:
        model = LineChannel
        fields = ["name", "slug", "channel_secret", "access_token", "default_preset", "is_default", "bot_user_id"]

    def clean(self):
        cleaned = super().clean()
        for name in self.secret_fields:
            if not self.instance.pk and not cleaned.get(name):
                self.add_error(name, "Required for a new channel.")
        return cleaned


@admin.register(LineChannel)
class LineChannelAdmin(admin.ModelAdmin):
    form = LineChannelForm
    list_display = ["name", "slug", "default_preset", "is_default"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Chat)
class ChatAdmin(admin.ModelAdmin):
    list_display = ["__str__", "source_type", "channel", "preset", "reply_mode", "local_only", "is_active", "created_at"]
    list_filter = ["source_type", "reply_mode", "local_only", "is_active", "channel"]
    list_select_related = ["channel", "preset"]
    search_fields = ["display_name", "line_id"]
    readonly_fields = ["channel", "source_type", "line_id", "profile_fetched_at"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "chat", "direction", "status", "short_text", "event_at", "latency_ms", "backend"]
    list_filter = ["direction", "status"]
    list_select_related = ["chat", "backend"]
    show_full_result_count = False
    raw_id_fields = ["chat", "reply_to"]
    exclude = ["reply_token"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="text")
    def short_text(self, obj: Message) -> str:
        return obj.text[:80]
