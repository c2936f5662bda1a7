from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from linebot_site.auditing import AuditedModelAdmin
from linebot_site.forms import SecretField, SecretFieldsMixin

from . import audit, redaction, retention, selectors
from .models import AuditAction, AuditEvent, Chat, LineChannel, Message, PrivacyPolicy


class LineChannelForm(SecretFieldsMixin, forms.ModelForm):
    secret_fields = ("channel_secret", "access_token")
    channel_secret = SecretField(label=_("Channel secret"))
    access_token = SecretField(label=_("Channel access token"))

    class Meta:
        model = LineChannel
        fields = ["name", "slug", "channel_secret", "access_token", "default_preset", "is_default", "bot_user_id",
                  "mask_before_storing", "mask_before_cloud"]

    def clean(self):
        cleaned = super().clean()
        for name in self.secret_fields:
            if not self.instance.pk and not cleaned.get(name):
                self.add_error(name, _("Required for a new channel."))
        return cleaned


@admin.register(LineChannel)
class LineChannelAdmin(AuditedModelAdmin):
    form = LineChannelForm
    list_display = ["name", "slug", "default_preset", "is_default", "mask_before_storing", "mask_before_cloud"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Chat)
class ChatAdmin(AuditedModelAdmin):
    list_display = ["__str__", "source_type", "channel", "preset", "reply_mode", "local_only", "is_active",
                    "retention_policy", "legal_hold", "oldest_message_kept"]
    list_filter = ["source_type", "reply_mode", "local_only", "is_active", "legal_hold", "channel"]
    list_select_related = ["channel", "preset"]
    search_fields = ["display_name", "line_id"]
    readonly_fields = ["channel", "source_type", "line_id", "profile_fetched_at", "retention_policy",
                       "oldest_message_kept"]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if request.method == "GET" and object_id:
            audit.record(action=AuditAction.VIEW_CONVERSATION, actor=request.user, target_type="chat",
                         target_id=object_id)
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description=_("retention"))
    def retention_policy(self, chat: Chat) -> str:
        if chat.legal_hold:
            return _("legal hold: kept")
        days = retention.effective_retention_days(chat=chat, default_days=selectors.privacy_policy().retention_days)
        if days is None:
            return _("kept")
        source = _("chat") if chat.retention_days is not None else _("global")
        return _("%(days)s days (%(source)s)") % {"days": days, "source": source}

    @admin.display(description=_("oldest message kept"))
    def oldest_message_kept(self, chat: Chat):
        return retention.oldest_kept(chat=chat) or "—"


class RedactActionForm(ActionForm):
    reason = forms.CharField(label=_("Reason (for redaction)"), required=False, max_length=500)


class RedactForm(forms.Form):
    reason = forms.CharField(label=_("Reason"), max_length=500, widget=forms.Textarea(attrs={"rows": 3}))


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "chat", "direction", "status", "short_text", "event_at", "latency_ms", "backend"]
    list_filter = ["direction", "status", "redacted"]
    list_select_related = ["chat", "backend"]
    show_full_result_count = False
    raw_id_fields = ["chat", "reply_to"]
    exclude = ["reply_token", "original_hmac"]
    action_form = RedactActionForm
    actions = ["redact_selected"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_redact_permission(self, request):
        return request.user.has_perm("conversations.change_message")

    @admin.display(description=_("text"))
    def short_text(self, obj: Message) -> str:
        return obj.text[:80]

    def get_urls(self):
        return [
            path("<int:message_id>/redact/", self.admin_site.admin_view(self.redact_view),
                 name="conversations_message_redact"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        message = self.get_object(request, object_id)
        if message is not None:
            audit.record(action=AuditAction.VIEW_CONVERSATION, actor=request.user, target_type="message",
                         target_id=message.pk, details={"chat_id": message.chat_id})
        extra_context = {**(extra_context or {}), "can_redact": self.has_redact_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(description=_("Redact selected messages"), permissions=["redact"])
    def redact_selected(self, request, queryset):
        reason = request.POST.get("reason", "").strip()
        if not reason:
            self.message_user(request, _("Give a reason in the box beside the action to redact."), messages.ERROR)
            return None
        count = redaction.redact_messages(message_ids=list(queryset.values_list("id", flat=True)),
                                          actor=request.user, reason=reason)
        self.message_user(request, _("Redacted %(count)d messages.") % {"count": count}, messages.SUCCESS)
        return None

    def redact_view(self, request, message_id: int):
        if not self.has_redact_permission(request):
            raise PermissionDenied
        message = get_object_or_404(Message, pk=message_id)
        form = RedactForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            redaction.redact_messages(message_ids=[message.pk], actor=request.user, reason=form.cleaned_data["reason"])
            self.message_user(request, _("The message was redacted."), messages.SUCCESS)
            return redirect(reverse("admin:conversations_message_change", args=[message.pk]))
        context = {**self.admin_site.each_context(request), "opts": self.opts, "message_obj": message,
                   "form": form, "title": _("Redact message %(id)s") % {"id": message.pk}}
        return render(request, "admin/conversations/message/redact.html", context)


@admin.register(PrivacyPolicy)
class PrivacyPolicyAdmin(AuditedModelAdmin):
    fieldsets = [
        (_("Retention"), {"fields": ["retention_days"]}),
        (_("PII masking: what counts as personal data"),
         {"fields": ["mask_email", "mask_phone", "mask_national_id", "mask_credit_card", "mask_ip_address"],
          "description": _("Each channel chooses whether to mask before storing and before cloud backends.")}),
    ]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        policy = selectors.privacy_policy()
        return redirect(reverse("admin:conversations_privacypolicy_change", args=[policy.pk]))


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only for everyone, superusers included: the trail cannot be edited here."""

    list_display = ["created_at", "actor_username", "action", "target_type", "target_id"]
    list_filter = ["action", "target_type"]
    search_fields = ["actor_username", "target_id"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
