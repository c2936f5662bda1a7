from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import escape, format_html, format_html_join
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from core import audit
from core.admin import AuditedModelAdmin, ReadOnlyAdminMixin, SecretFieldsAdminMixin
from core.forms import SecretField, SecretFieldsMixin
from core.models import AuditAction
from core.redirects import safe_next
from models_registry.models import SamplingPreset

from . import chats, labels, notices, redaction, retention, selectors
from .channel_admin import ChannelSetupAdminMixin
from .filters import DateRangeFilter, GroupMemoryFilter
from .media import views as media_views
from .models import Chat, Direction, LineChannel, Message, OptOut, PrivacyPolicy, ReplyMode, SourceType, pseudonym
from .paginators import CappedCountPaginator
from .simulator import admin as simulator_admin  # noqa: F401  (registers the simulator's pages)
from .simulator.views import simulator_links


class LineChannelForm(SecretFieldsMixin, forms.ModelForm):
    secret_fields = ("channel_secret", "access_token")
    channel_secret = SecretField(label=_("Channel secret"))
    access_token = SecretField(label=_("Channel access token"))

    class Meta:
        model = LineChannel
        fields = ["name", "slug", "channel_secret", "access_token", "default_preset", "is_default", "bot_user_id",
                  "mask_before_storing", "mask_before_cloud", "fetch_external_images", "images_to_cloud",
                  "transcriber", "keep_audio", "operator_name",
                  "operator_contact", "language",
                  "notice_enabled", "notice_template", "non_text_reply_enabled", "non_text_reply",
                  # Commands and the per-user limit (conversations.commands, ingest)
                  "command_help", "command_privacy", "command_reset", "command_optout", "command_forgetme",
                  "user_limit_messages", "user_limit_minutes", "is_simulated"]
        widgets = {"notice_template": forms.Textarea(attrs={"rows": 7, "cols": 70}),
                   "non_text_reply": forms.Textarea(attrs={"rows": 2, "cols": 70})}
        # The admin shows help text as HTML, where "<slug>" would vanish.
        help_texts = {"slug": escape(LineChannel._meta.get_field("slug").help_text)}

    # Left out of a post (a script, a form from before the setting): the channel keeps its own.
    KEPT_WHEN_LEFT_OUT = ("language", "user_limit_messages", "user_limit_minutes")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in self.KEPT_WHEN_LEFT_OUT:
            if name in self.fields:  # not for a viewer: read-only fields are not in the form
                self.fields[name].required = False

    def clean_language(self):
        return self.cleaned_data.get("language") or self.instance.language

    def clean_user_limit_messages(self):
        value = self.cleaned_data.get("user_limit_messages")
        return self.instance.user_limit_messages if value is None else value

    def clean_user_limit_minutes(self):
        value = self.cleaned_data.get("user_limit_minutes")
        return self.instance.user_limit_minutes if value is None else value

    def clean(self):
        cleaned = super().clean()
        for name in self.secret_fields:
            if not self.instance.pk and not cleaned.get(name):
                self.add_error(name, _("Required for a new channel."))
        if cleaned.get("is_default") and (cleaned.get("is_simulated") or self.instance.is_simulated):
            self.add_error("is_default", _("LINE never calls a simulated channel, so it cannot be the default."))
        return cleaned


@admin.register(LineChannel)
class LineChannelAdmin(ChannelSetupAdminMixin, SecretFieldsAdminMixin, AuditedModelAdmin):
    audit_action = AuditAction.CHANNEL_CHANGE
    form = LineChannelForm
    list_display = ["name", "slug", "webhook_path", "default_preset", "is_default", "mask_before_storing",
                    "mask_before_cloud", "is_simulated"]
    prepopulated_fields = {"slug": ["name"]}
    fieldsets = [
        # is_simulated is chosen when a channel is added, then shown read-only (get_readonly_fields).
        (None, {"fields": ["name", "slug", "channel_secret", "access_token", "default_preset", "is_default",
                           "bot_user_id", "is_simulated"]}),
        (_("Personal data"), {"fields": ["mask_before_storing", "mask_before_cloud"]}),
        (_("Photos and voice messages"), {"fields": ["images_to_cloud", "fetch_external_images", "transcriber",
                                                     "keep_audio"]}),
        (_("What the people in the chats are told"),
         {"fields": ["operator_name", "operator_contact", "language", "notice_enabled", "notice_template",
                     "non_text_reply_enabled", "non_text_reply"]}),
        (_("Commands"), {"fields": ["command_help", "command_privacy", "command_reset", "command_optout",
                                    "command_forgetme"],
                         "description": _("The bot answers these itself, in 1:1 chats and, in groups and rooms, "
                                          "when addressed to it. A command turned off is text for the model.")}),
        (_("Per-user limit"), {"fields": ["user_limit_messages", "user_limit_minutes"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        # A real channel turned simulated would answer its LINE users into the emulator.
        return [*super().get_readonly_fields(request, obj), *(["is_simulated"] if obj else [])]

    @admin.display(description=_("webhook path"))
    def webhook_path(self, channel: LineChannel) -> str:
        return format_html("<code>{}</code>", reverse("conversations:webhook", args=[channel.slug]))

    def delete_model(self, request, obj):
        chats.delete_channels(channels=[obj], actor=request.user)

    def delete_queryset(self, request, queryset):
        chats.delete_channels(channels=queryset, actor=request.user)

    def get_deleted_objects(self, objs, request):
        """Each channel with counts of its chats and messages, which Django's page would list
        one by one; a chat under legal hold stops the deletion ("protected")."""
        channels = list(objs)
        of_channels = Chat.objects.filter(channel__in=channels).order_by()
        chat_counts = dict(of_channels.values_list("channel").annotate(n=Count("id")))
        message_counts = dict(Message.objects.filter(chat__channel__in=channels).order_by()
                              .values_list("chat__channel").annotate(n=Count("id")))
        summary = []
        for channel in channels:
            summary += [deleted_object(channel), [
                chat_count(chat_counts.get(channel.pk, 0)), message_count(message_counts.get(channel.pk, 0))]]
        counts = {Chat: sum(chat_counts.values()), Message: sum(message_counts.values())}
        problem = chats.legal_hold_problem(chats=of_channels.filter(legal_hold=True))
        return (summary, {LineChannel._meta.verbose_name_plural: len(channels), **model_counts(counts)},
                perms_needed(request, counts), [problem] if problem else [])

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if object_id:
            channel = self.get_object(request, object_id)
            if channel is not None:
                extra_context = {**(extra_context or {}), "webhook_url": request.build_absolute_uri(
                    reverse("conversations:webhook", args=[channel.slug])),
                    "notice_preview": notices.preview_notices(channel=channel),
                    "notice_preview_url": reverse("admin:conversations_linechannel_notice_preview",
                                                  args=[channel.pk])}
        return super().changeform_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        return [
            path("<int:channel_id>/notice-preview/", self.admin_site.admin_view(self.notice_preview_view),
                 name="conversations_linechannel_notice_preview"),
            *super().get_urls(),
        ]

    def notice_preview_view(self, request, channel_id: int):
        """The notice as a 1:1 chat and a group would get it, from the template and settings
        posted (not saved): the change page's Preview button."""
        channel = get_object_or_404(LineChannel, pk=channel_id)
        if not self.has_view_or_change_permission(request, channel):
            raise PermissionDenied
        preview = notices.preview_notices(channel=channel, changes=request.POST if request.method == "POST" else {})
        context = {**self.admin_site.each_context(request), "opts": self.opts, "original": channel,
                   "notice_preview": preview, "title": _("Privacy notice preview")}
        fragment = request.headers.get("X-Preview") == "fragment"
        template = "admin/conversations/linechannel/notice_preview" + ("_fragment" if fragment else "") + ".html"
        return render(request, template, context)


def deleted_object(obj) -> str:
    """An object on a delete confirmation page, as Django's own page shows it."""
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('{}: <a href="{}">{}</a>', capfirst(obj._meta.verbose_name), url, obj)


def chat_count(count: int) -> str:
    return ngettext("%(count)d chat", "%(count)d chats", count) % {"count": count}


def message_count(count: int) -> str:
    return ngettext("%(count)d message", "%(count)d messages", count) % {"count": count}


def model_counts(counts: dict) -> dict:
    return {model._meta.verbose_name_plural: count for model, count in counts.items() if count}


def perms_needed(request, counts: dict) -> set[str]:
    """What else a deletion takes that this user may not delete, as Django's page asks."""
    return {str(model._meta.verbose_name) for model, count in counts.items()
            if count and not request.user.has_perm(f"{model._meta.app_label}.delete_{model._meta.model_name}")}


class ChatForm(forms.ModelForm):
    class Meta:
        model = Chat
        fields = "__all__"

    def clean(self):
        cleaned = super().clean()
        preset = cleaned.get("preset", self.instance.preset if self.instance.pk else None)
        local_only = cleaned.get("local_only", self.instance.local_only)
        problem = chats.local_only_problem(preset=preset, local_only=local_only)
        if problem:
            self.add_error("preset" if "preset" in self.fields else None, problem)
        return cleaned


class NotApplicable(forms.HiddenInput):
    """Keeps a field's value in a list row where it does not apply, and shows a dash."""

    def render(self, name, value, attrs=None, renderer=None):
        return format_html('{}<span class="quiet" title="{}">—</span>', super().render(name, value, attrs, renderer),
                           _("1:1 chats are always answered."))


class ChatListForm(ChatForm):
    """The inline editor of the chat list: a plain select, without the add/edit icons."""

    preset = forms.ModelChoiceField(queryset=SamplingPreset.objects.all(), required=False, label=_("Preset"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # 1:1 chats are always answered: no reply mode to choose.
        if self.instance.source_type == SourceType.USER and "reply_mode" in self.fields:
            self.fields["reply_mode"].widget = NotApplicable()
            self.fields["reply_mode"].disabled = True


class ChatActionForm(ActionForm):
    preset = forms.ModelChoiceField(queryset=SamplingPreset.objects.all(), required=False, label=_("Preset"))
    reply_mode = forms.ChoiceField(choices=[("", "---------"), *ReplyMode.choices], required=False,
                                   label=_("Reply mode"))


@admin.register(Chat)
class ChatAdmin(AuditedModelAdmin):
    audit_action = AuditAction.CHAT_CHANGE
    audit_field_actions = retention.RETENTION_FIELD_ACTIONS
    form = ChatForm
    action_form = ChatActionForm
    actions = ["assign_preset", "set_reply_mode", "make_local_only", "allow_cloud"]
    list_display = ["__str__", "source_type", "preset", "reply_mode", "memory", "local_only", "message_count",
                    "last_activity", "retention_policy", "thread_link", "simulated"]
    list_editable = ["preset", "reply_mode", "local_only"]
    list_filter = ["source_type", "reply_mode", GroupMemoryFilter, "local_only", "is_active", "legal_hold", "channel",
                   ("channel__is_simulated", admin.BooleanFieldListFilter)]
    list_select_related = ["channel", "preset"]
    search_fields = ["display_name", "line_id"]
    readonly_fields = ["channel", "source_type", "line_id", "profile_fetched_at", "retention_policy",
                       "oldest_message_kept", "unstored_messages", "context_reset_at", "members"]
    fieldsets = [
        (None, {"fields": ["display_name", "channel", "source_type", "line_id", "is_active"]}),
        (_("Answering"), {"fields": ["preset", "reply_mode", "reply_prefix", "local_only"]}),
        (_("Memory"), {"fields": ["group_memory", "unstored_messages", "context_reset_at", "members"]}),
        (_("Retention"), {"fields": ["retention_days", "legal_hold", "retention_policy", "oldest_message_kept"]}),
    ]

    def get_queryset(self, request):
        return selectors.with_activity(super().get_queryset(request))

    list_per_page = 50

    def has_add_permission(self, request):
        # Chats come from LINE, when the bot is added or first written to.
        return False

    def get_fieldsets(self, request, obj=None):
        """1:1 chats are always answered: their form has no reply mode nor keyword."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or obj.source_type != SourceType.USER:
            return fieldsets
        return [(name, {**options, "fields": [f for f in options["fields"] if f not in ("reply_mode", "reply_prefix")]})
                for name, options in fieldsets]

    def get_changelist_form(self, request, **kwargs):
        return super().get_changelist_form(request, form=ChatListForm, **kwargs)

    def get_changelist_formset(self, request, **kwargs):
        """Every row's preset menu shares one list of presets: one query, not one per row."""
        formset = super().get_changelist_formset(request, **kwargs)
        choices = [("", "---------"), *SamplingPreset.objects.order_by("name").values_list("pk", "name")]

        class SharedChoicesForm(formset.form):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.fields["preset"].choices = choices

        formset.form = SharedChoicesForm
        return formset

    # The per-member table's rows: the busiest members of a group or room.
    SENDERS_SHOWN = 50

    def change_view(self, request, object_id, form_url="", extra_context=None):
        chat = self.get_object(request, object_id)
        extra_context = {**(extra_context or {}), "thread_url": reverse(
            "admin:conversations_chat_thread", args=[object_id]),
            **(simulator_links(user=request.user, chat=chat) if chat else {})}
        if chat is not None and request.method == "GET":
            # Names and counts of who said what: viewing them is viewing the chat (audited below).
            extra_context["figures"] = selectors.chat_figures(chat=chat, top_senders=self.SENDERS_SHOWN)
        response = super().change_view(request, object_id, form_url, extra_context)
        # Audited once the admin has let the user see the page, not before.
        if request.method == "GET" and response.status_code == 200:
            audit.record_conversation_view(actor=request.user, target_type="chat", target_id=object_id, via="admin")
        return response

    def get_urls(self):
        return [
            path("<int:chat_id>/thread/", self.admin_site.admin_view(self.thread_view),
                 name="conversations_chat_thread"),
            *super().get_urls(),
        ]

    MEMBERS_SHOWN = 50

    @admin.display(description=_("members who spoke to the bot"))
    def members(self, chat: Chat) -> str:
        """Their names as prompts show them (a pseudonym until LINE gives one)."""
        members = list(chat.members.order_by("id")[: self.MEMBERS_SHOWN + 1]) if chat.pk else []
        if not members:
            return "—"
        names = ", ".join(str(member) for member in members[: self.MEMBERS_SHOWN])
        return f"{names}, …" if len(members) > self.MEMBERS_SHOWN else names

    @admin.display(description=_("group memory"), ordering="group_memory")
    def memory(self, chat: Chat) -> str:
        return "—" if chat.source_type == "user" else chat.get_group_memory_display()

    @admin.display(description=_("messages"), ordering="messages_total")
    def message_count(self, chat: Chat) -> int:
        return chat.messages_total or 0

    @admin.display(description=_("last activity"), ordering="last_activity_at")
    def last_activity(self, chat: Chat):
        return chat.last_activity_at or "—"

    @admin.display(description=_("conversation"))
    def thread_link(self, chat: Chat) -> str:
        return format_html('<a href="{}">{}</a>', reverse("admin:conversations_chat_thread", args=[chat.pk]),
                           _("Read"))

    @admin.display(description=_("simulated"), boolean=True, ordering="channel__is_simulated")
    def simulated(self, chat: Chat) -> bool:
        return chat.channel.is_simulated

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
        # A read-only callable is shown as str(): format it like every other time.
        oldest = retention.oldest_kept(chat=chat)
        return date_format(timezone.localtime(oldest), "DATETIME_FORMAT") if oldest else "—"

    def _bulk(self, request, queryset, **values) -> None:
        try:
            count = chats.update_chats(chats=queryset, actor=request.user, **values)
        except ValidationError as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
            return
        self.message_user(request, _("Updated %(count)d chats.") % {"count": count}, messages.SUCCESS)

    @admin.action(description=_("Assign the chosen preset"), permissions=["change"])
    def assign_preset(self, request, queryset):
        preset = SamplingPreset.objects.filter(pk=request.POST.get("preset") or None).first()
        self._bulk(request, queryset, preset=preset)

    @admin.action(description=_("Set the chosen reply mode"), permissions=["change"])
    def set_reply_mode(self, request, queryset):
        mode = request.POST.get("reply_mode")
        if mode not in ReplyMode.values:
            self.message_user(request, _("Choose a reply mode beside the action."), messages.ERROR)
            return
        self._bulk(request, queryset, reply_mode=mode)

    @admin.action(description=_("Mark local-only"), permissions=["change"])
    def make_local_only(self, request, queryset):
        self._bulk(request, queryset, local_only=True)

    @admin.action(description=_("Allow cloud backends"), permissions=["change"])
    def allow_cloud(self, request, queryset):
        self._bulk(request, queryset, local_only=False)

    def delete_model(self, request, obj):
        chats.delete_chats(chats=[obj], actor=request.user)

    def delete_queryset(self, request, queryset):
        chats.delete_chats(chats=queryset, actor=request.user)

    def get_deleted_objects(self, objs, request):
        """Each chat with a count of its messages, which Django's page would load and list one
        by one; a chat under legal hold stops the deletion ("protected")."""
        selected = list(objs)  # from get_queryset, so with `messages_total`
        summary = []
        for chat in selected:
            summary += [deleted_object(chat), [message_count(chat.messages_total or 0)]]
        counts = {Message: sum(chat.messages_total or 0 for chat in selected)}
        problem = chats.legal_hold_problem(chats=selected)
        return (summary, {Chat._meta.verbose_name_plural: len(selected), **model_counts(counts)},
                perms_needed(request, counts), [problem] if problem else [])

    def thread_view(self, request, chat_id: int):
        """The chat as a thread of bubbles, newest page first, paged by id (no OFFSET)."""
        chat = get_object_or_404(Chat.objects.select_related("channel", "preset"), pk=chat_id)
        if not request.user.has_perm("conversations.view_message"):
            raise PermissionDenied
        before = request.GET.get("before")
        page = selectors.thread_page(chat=chat, before_id=int(before) if before and before.isdigit() else None)
        audit.record_conversation_view(actor=request.user, target_type="chat", target_id=chat.pk, via="admin",
                                       **({"before": before} if before else {}))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": str(chat),
            "chat": chat,
            "page": page,
            # Retry and redact both change messages.
            "can_retry": request.user.has_perm("conversations.change_message"),
            **simulator_links(user=request.user, chat=chat),
            "here": request.get_full_path(),
        }
        return render(request, "admin/conversations/chat/thread.html", context)


class MessageActionForm(ActionForm):
    reason = forms.CharField(label=_("Reason (for redaction)"), required=False, max_length=500)


class RedactForm(forms.Form):
    reason = forms.CharField(label=_("Reason"), max_length=500, widget=forms.Textarea(attrs={"rows": 3}))
    also_answer = forms.BooleanField(label=_("Also redact the bot's answer to it"), required=False)

    def __init__(self, *args, answer: Message | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if answer is None:
            del self.fields["also_answer"]


@admin.register(Message)
class MessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Messages come from LINE and go only by retention, erasure or with their chat, all
    audited; redaction blanks them. So no adding, changing or deleting here."""

    list_display = ["id", "event_at", "chat", "sender", "direction", "status_badge", "short_text", "latency_ms",
                    "backend"]
    list_filter = ["direction", "status", ("event_at", DateRangeFilter), "command", "redacted"]
    list_select_related = ["chat", "backend"]
    search_fields = ["=line_user_id", "text"]
    search_help_text = _("A LINE user id (exact), a sender's name, or words in the text.")
    show_full_result_count = False
    paginator = CappedCountPaginator
    list_per_page = 50
    raw_id_fields = ["chat", "reply_to"]
    exclude = ["reply_token", "quote_token", "original_hmac"]
    readonly_fields = ["shown_text", "why_not_answered", "kind", "answer"]
    fieldsets = [
        (None, {"fields": ["chat", "direction", "line_user_id", "kind", "shown_text", "event_at", "status",
                           "why_not_answered", "error"]}),
        (_("Answer"), {"fields": ["answer", "reply_to", "preset", "backend", "latency_ms", "prompt_tokens",
                                  "completion_tokens"]}),
        (_("Redaction"), {"fields": ["redacted", "redacted_at", "redacted_by", "redaction_reason"]}),
        (_("Delivery"), {"fields": ["line_message_id", "webhook_event_id", "status_changed_at", "attempts",
                                    "delivered_calls", "push_calls", "push_reason", "edited", "unsent", "erased", "created_at"],
                         "classes": ["collapse"]}),
    ]
    action_form = MessageActionForm
    actions = ["redact_selected", "retry_selected"]

    def has_redact_permission(self, request):
        return request.user.has_perm("conversations.change_message")

    has_retry_permission = has_redact_permission

    def lookup_allowed(self, lookup, value, request=None):
        return lookup in ("chat__id__exact", "line_user_id", "reply_to__id__exact") or super().lookup_allowed(
            lookup, value, request)

    def get_queryset(self, request):
        return selectors.with_sender_names(super().get_queryset(request))

    def get_search_results(self, request, queryset, search_term):
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        if search_term.strip():
            results = results | queryset.filter(selectors.sent_by_name(search_term.strip()))
        return results, may_have_duplicates

    @admin.display(description=_("sender"), ordering="sender_name")
    def sender(self, obj: Message) -> str:
        if obj.direction == Direction.OUT:
            return _("the bot")
        if not obj.line_user_id:
            return "—"
        return obj.sender_name or pseudonym(obj.line_user_id)

    @admin.display(description=_("text"))
    def short_text(self, obj: Message) -> str:
        return labels.shown_text(obj)[:80]

    @admin.display(description=_("text"))
    def shown_text(self, obj: Message) -> str:
        return labels.shown_text(obj)

    def get_fieldsets(self, request, obj=None):
        """A question shows a link to its answer; an answer, what it answers and how it was made."""
        inbound = obj is not None and obj.direction == "in"
        drop = {"reply_to", "preset", "backend", "latency_ms", "prompt_tokens", "completion_tokens"} if inbound \
            else {"answer"}
        return [(name, {**options, "fields": [f for f in options["fields"] if f not in drop]})
                for name, options in super().get_fieldsets(request, obj)]

    @admin.display(description=_("the bot's answer"))
    def answer(self, obj: Message) -> str:
        answers = obj.replies.filter(direction="out").order_by("id")
        return format_html_join(", ", '<a href="{}">#{}</a>', (
            (reverse("admin:conversations_message_change", args=[a.pk]), a.pk) for a in answers)) or "—"

    @admin.display(description=_("type"))
    def kind(self, obj: Message) -> str:
        return labels.message_type_label(obj.message_type)

    @admin.display(description=_("why not answered"))
    def why_not_answered(self, obj: Message) -> str:
        return labels.skip_reason_label(obj.skip_reason) or "—"

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: Message) -> str:
        return format_html('<span class="status status-{}" title="{}">{}</span>', obj.status,
                           obj.error or labels.skip_reason_label(obj.skip_reason), obj.get_status_display())

    def get_urls(self):
        return [
            path("<int:message_id>/redact/", self.admin_site.admin_view(self.redact_view),
                 name="conversations_message_redact"),
            path("<int:message_id>/media/<str:variant>/", self.admin_site.admin_view(media_views.media_view),
                 name="conversations_message_media"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "can_redact": self.has_redact_permission(request)}
        response = super().change_view(request, object_id, form_url, extra_context)
        if response.status_code == 200:
            message = response.context_data["original"]
            audit.record_conversation_view(actor=request.user, target_type="message", target_id=message.pk,
                                           via="admin", chat_id=message.chat_id)
        return response

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

    @admin.action(description=_("Retry selected failed messages"), permissions=["retry"])
    def retry_selected(self, request, queryset):
        count = chats.retry_messages(message_ids=list(queryset.values_list("id", flat=True)), actor=request.user)
        self.message_user(request, _("Queued %(count)d failed messages again.") % {"count": count},
                          messages.SUCCESS if count else messages.WARNING)
        # The thread's Retry button sends `next`, so the operator stays on the thread.
        if request.POST.get("next"):
            return HttpResponseRedirect(safe_next(request=request, target=request.POST["next"],
                                                  default=reverse("admin:conversations_message_changelist")))
        return None

    def redact_view(self, request, message_id: int):
        if not self.has_redact_permission(request):
            raise PermissionDenied
        message = get_object_or_404(Message, pk=message_id)
        # An answer that repeats the question would keep what is redacted from it: offered, and
        # ticked when it repeats text of the question.
        answer = redaction.answer_to_redact(message=message)
        repeats = answer is not None and redaction.answer_repeats(question=message.text, answer=answer.text)
        form = RedactForm(request.POST or None, answer=answer, initial={"also_answer": repeats})
        # A URL, not a view name: redirect() would try to reverse whatever `next` holds.
        back = safe_next(request=request, target=request.POST.get("next") or request.GET.get("next"),
                         default=reverse("admin:conversations_message_change", args=[message.pk]))
        if request.method == "POST" and form.is_valid():
            ids = [message.pk] + ([answer.pk] if answer is not None and form.cleaned_data.get("also_answer") else [])
            count = redaction.redact_messages(message_ids=ids, actor=request.user, reason=form.cleaned_data["reason"])
            self.message_user(request, _("The message was redacted.") if count < 2 else
                              _("The message and the bot's answer were redacted."), messages.SUCCESS)
            return HttpResponseRedirect(back)
        context = {**self.admin_site.each_context(request), "opts": self.opts, "message_obj": message,
                   "answer": answer, "answer_repeats": repeats, "form": form, "next": back,
                   "title": _("Redact message %(id)s") % {"id": message.pk}}
        return render(request, "admin/conversations/message/redact.html", context)


@admin.register(OptOut)
class OptOutAdmin(admin.ModelAdmin):
    """Who asked the bot (/optout) to neither store nor answer them: keyed hashes, read-only.
    Only the user can undo it (/optin)."""

    list_display = ["user", "channel", "created_at"]
    list_filter = ["channel"]
    search_fields = ["=user_hmac"]
    search_help_text = _("A LINE user id (exact): it is hashed before the search.")
    readonly_fields = ["channel", "user_hmac", "created_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("user (keyed hash)"), ordering="user_hmac")
    def user(self, opt_out: OptOut) -> str:
        return format_html("<code>{}</code>", opt_out.user_hmac[:12])

    def get_search_results(self, request, queryset, search_term):
        return super().get_search_results(request, queryset, audit.keyed_hash(search_term.strip())
                                          if search_term.strip() else "")


@admin.register(PrivacyPolicy)
class PrivacyPolicyAdmin(AuditedModelAdmin):
    audit_action = AuditAction.PRIVACY_CHANGE
    audit_field_actions = retention.RETENTION_FIELD_ACTIONS
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
