"""The simulator's and the preset comparison's pages, thin over services and selectors.

Wired into the admin by `simulator.admin` (sign-in, CSRF, the console's look). Simulating
writes into chats, so it takes `change_chat`; it shows a conversation, so `view_message`
too, and reading it is audited as everywhere.
"""
from datetime import timedelta

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import filesizeformat
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from core import audit
from core.models import AuditAction, AuditEvent
from models_registry.models import SamplingPreset

from .. import chats as chat_services
from ..models import Chat, GroupMemory, LineChannel, Message, ReplyMode, SourceType
from . import compare, events, selectors, services
from .models import PresetComparison, SimulatedChat, SimulatedMember, Trouble

SIMULATE_PERMISSIONS = ("conversations.change_chat", "conversations.view_message")
PROMPT_PERMISSIONS = ("conversations.view_message", "models_registry.view_samplingpreset")
# Calls backends with their keys, as the playground does; reads a conversation.
COMPARE_PERMISSIONS = ("conversations.view_message", "models_registry.change_samplingpreset")
# What the page's file pickers offer for an upload (the server checks the bytes themselves).
UPLOAD_ACCEPT = {"image": "image/jpeg,image/png,image/webp,image/gif", "audio": ".m4a,audio/mp4,audio/x-m4a,audio/m4a"}
# The page polls; a view of the conversation is recorded once in this while per user.
VIEW_AUDIT_WINDOW = timedelta(minutes=10)


def may_simulate(user) -> bool:
    return user.has_perms(SIMULATE_PERMISSIONS)


def may_compare(user) -> bool:
    return user.has_perms(COMPARE_PERMISSIONS)


def _require(request: HttpRequest, permissions) -> None:
    if not request.user.has_perms(permissions):
        raise PermissionDenied


class NewChatForm(forms.Form):
    channel = forms.ModelChoiceField(queryset=LineChannel.objects.filter(is_simulated=True), label=gettext_lazy("Channel"),
                                     empty_label=None)
    source_type = forms.ChoiceField(choices=SourceType.choices, label=gettext_lazy("Setting"),
                                    initial=SourceType.USER)
    title = forms.CharField(label=gettext_lazy("Group name"), required=False, max_length=100)
    members = forms.CharField(label=gettext_lazy("Members"), required=False, max_length=300,
                              help_text=gettext_lazy("Names, separated by commas."))
    first_message = forms.CharField(label=gettext_lazy("First message"), required=False, max_length=5000)


class ChatSettingsForm(forms.Form):
    preset = forms.ModelChoiceField(queryset=SamplingPreset.objects.order_by("name"), required=False,
                                    label=gettext_lazy("Preset"), empty_label=gettext_lazy("(channel or global default)"))
    reply_mode = forms.ChoiceField(choices=ReplyMode.choices, required=False, label=gettext_lazy("Reply mode"))
    # Not required: a form from before it was there keeps the chat's.
    group_memory = forms.ChoiceField(choices=GroupMemory.choices, required=False, label=gettext_lazy("Group memory"))
    trouble = forms.ChoiceField(choices=Trouble.choices, required=False, label=gettext_lazy("LINE trouble"))

    def __init__(self, *args, source_type: str = SourceType.GROUP, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if source_type == SourceType.USER:
            # A 1:1 chat is always answered and keeps its messages: neither setting applies.
            del self.fields["reply_mode"], self.fields["group_memory"]


def simulator_page(request: HttpRequest, *, model_admin) -> HttpResponse:
    """The chat in a LINE-like pane; `?chat=` picks one, `?like=<chat id>` fills the new-chat form from a chat."""
    _require(request, SIMULATE_PERMISSIONS)
    chosen = request.GET.get("chat")
    simulated = (get_object_or_404(SimulatedChat.objects.select_related("channel"), pk=chosen) if chosen
                 and chosen.isdigit() else None)
    all_chats = selectors.simulated_chats()
    if simulated is None and not chosen and "new" not in request.GET and all_chats:
        simulated = all_chats[0]
    like = Chat.objects.filter(pk=request.GET.get("like")).first() if (request.GET.get("like") or "").isdigit() else None
    chat = simulated.chat() if simulated else None
    if chat is not None:
        audit.record_conversation_view(actor=request.user, target_type="chat", target_id=chat.pk, via="admin",
                                       what="simulator")
    initial = {"source_type": like.source_type if like else SourceType.USER}
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": _("Simulator"),
        "simulated": simulated,
        "chat": chat,
        "simulated_chats": all_chats,
        "members": list(simulated.members.filter(left_at__isnull=True)) if simulated else [],
        "new_form": NewChatForm(initial=initial),
        "settings_form": ChatSettingsForm(initial={
            "preset": chat.preset_id, "reply_mode": chat.reply_mode, "group_memory": chat.group_memory,
            "trouble": simulated.trouble}, source_type=chat.source_type) if chat else None,
        "like": like,
        # A photo or voice message is an upload; the other kinds are sent with canned content.
        "upload_types": [(kind, selectors.MEDIA_LABELS[kind], accept) for kind, accept in UPLOAD_ACCEPT.items()],
        "upload_help": _("A photo (JPEG, PNG, WebP or GIF, up to %(image)s) or a voice message (M4A, as LINE "
                         "sends them, up to %(audio)s).") % {
            "image": filesizeformat(services.upload_limit(message_type="image")),
            "audio": filesizeformat(services.upload_limit(message_type="audio"))},
        "media_types": [(kind, selectors.MEDIA_LABELS[kind]) for kind in events.MESSAGE_TYPES
                        if kind != "text" and kind not in UPLOAD_ACCEPT],
        "may_read_prompts": request.user.has_perms(PROMPT_PERMISSIONS),
        "may_compare": may_compare(request.user),
        "may_delete": request.user.has_perm("conversations.delete_chat"),
        "has_channel": LineChannel.objects.filter(is_simulated=True).exists(),
        "config": _page_config(request, simulated) if simulated else None,
    }
    return render(request, "admin/simulator/simulator.html", context)


def _page_config(request: HttpRequest, simulated: SimulatedChat) -> dict:
    """What simulator.js needs: where to send and poll, and its words in the page's language."""
    return {
        "send": reverse("admin:conversations_simulatedchat_send", args=[simulated.pk]),
        "timeline": reverse("admin:conversations_simulatedchat_timeline", args=[simulated.pk]),
        "prompt": reverse("admin:conversations_simulatedchat_prompt", args=[0]).replace("/0/", "/{id}/"),
        "prompts": request.user.has_perms(PROMPT_PERMISSIONS),
        "bot": simulated.channel.name,
        "labels": {
            "reply": _("reply"), "push": _("push"), "prompt": _("What the model was sent"),
            "line_error": _("LINE answered %(status)s to a %(endpoint)s: %(error)s"),
            "skipped": _("not answered: %(reason)s"), "mention": _("mentions the bot"),
            "unstored": _("not stored: %(reason)s"),
            "unstored_text": _("(its text is kept nowhere: shown only on the page it was sent from)"),
            "local": _("local"), "cloud": _("cloud"), "tokens": _("tokens"), "empty": _("No messages yet: say hello."),
            "system": _("system prompt"), "user": _("user"), "assistant": _("assistant"),
            "params": _("sampling"), "backend": _("backend"), "masked": _("masked for a cloud backend"),
            "quote": _("quoting"), "loading": _("typing…"), "apology": _("No model answered"),
            "pending": _("waiting for the worker…"), "not_delivered": _("stored, not delivered yet"),
            "retry_key": _("retry key"),
            "notice": _("privacy notice, sent"), "notice_not_sent": _("privacy notice, not sent"),
            "non_text_reply": _("automatic answer"),
            "photo": _("photo"), "audio_file": _("voice message (audio file)"),
        },
    }


def create_chat(request: HttpRequest, *, model_admin) -> HttpResponse:
    _require(request, SIMULATE_PERMISSIONS)
    if request.method != "POST":
        return redirect(_page_url())
    form = NewChatForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(str(e) for errors in form.errors.values() for e in errors))
        return redirect(_page_url(new=True))
    data = form.cleaned_data
    try:
        simulated = services.create_simulated_chat(
            channel=data["channel"], source_type=data["source_type"], title=data["title"],
            member_names=data["members"].split(","), actor=request.user)
        if data["first_message"].strip():
            services.send_message(simulated_chat=simulated, member=simulated.members.first(),
                                  text=data["first_message"], actor=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(_page_url(new=True))
    return redirect(_page_url(simulated))


def send(request: HttpRequest, simulated_id: int, *, model_admin) -> JsonResponse:
    """One message from one member, delivered to the webhook; answers {webhook status, stored}."""
    _require(request, SIMULATE_PERMISSIONS)
    if request.method != "POST":
        return JsonResponse({"error": "POST only"}, status=405)
    simulated = get_object_or_404(SimulatedChat.objects.select_related("channel"), pk=simulated_id)
    member = SimulatedMember.objects.filter(simulated_chat=simulated, pk=_int(request.POST.get("member"))).first()
    if member is None:
        return JsonResponse({"error": _("Choose who speaks.")}, status=400)
    message_type = request.POST.get("type", "text")
    try:
        upload = _upload(request.FILES.get("content"), message_type=message_type)
        delivery = services.send_message(
            simulated_chat=simulated, member=member, message_type=message_type,
            text=request.POST.get("text", ""), mention_bot=request.POST.get("mention") in ("on", "true", "1"),
            upload=upload, actor=request.user)
    except ValidationError as exc:
        return JsonResponse({"error": " ".join(exc.messages)}, status=400)
    return JsonResponse({"webhook": {"status": delivery.status, **delivery.body}, "event": delivery.event_id})


def _upload(upload: UploadedFile | None, *, message_type: str) -> services.Upload | None:
    """The photo or voice message sent with a member's message, checked before anything is
    stored; read only up to one byte past the limit, enough to refuse a larger file."""
    if upload is None:
        return None
    limit = services.upload_limit(message_type=message_type)
    return services.checked_upload(message_type=message_type, data=upload.read(limit + 1))


def timeline(request: HttpRequest, simulated_id: int, *, model_admin) -> JsonResponse:
    _require(request, SIMULATE_PERMISSIONS)
    simulated = get_object_or_404(SimulatedChat.objects.select_related("channel"), pk=simulated_id)
    chat = simulated.chat()
    if chat is not None:
        _audit_once(request, target_type="chat", target_id=chat.pk, what="simulator")
    return JsonResponse(selectors.timeline(simulated_chat=simulated))


def members(request: HttpRequest, simulated_id: int, *, model_admin) -> HttpResponse:
    """Add, rename or remove a member (LINE sends memberJoined and memberLeft)."""
    _require(request, SIMULATE_PERMISSIONS)
    simulated = get_object_or_404(SimulatedChat.objects.select_related("channel"), pk=simulated_id)
    if request.method == "POST":
        action = request.POST.get("action")
        member = SimulatedMember.objects.filter(simulated_chat=simulated, pk=_int(request.POST.get("member")),
                                                left_at__isnull=True).first()
        try:
            if action == "add":
                services.add_member(simulated_chat=simulated, name=request.POST.get("name", ""), actor=request.user)
            elif action in ("rename", "remove") and member is None:
                raise ValidationError(_("That member is not in this chat."))
            elif action == "rename":
                services.rename_member(member=member, name=request.POST.get("name", ""), actor=request.user)
            elif action == "remove":
                services.remove_member(member=member, actor=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
    return redirect(_page_url(simulated))


def chat_settings(request: HttpRequest, simulated_id: int, *, model_admin) -> HttpResponse:
    """The chat's preset, reply mode and group memory (audited as any chat change) and the emulator's trouble."""
    _require(request, SIMULATE_PERMISSIONS)
    simulated = get_object_or_404(SimulatedChat.objects.select_related("channel"), pk=simulated_id)
    chat = simulated.chat()
    form = ChatSettingsForm(request.POST or None, source_type=simulated.source_type)
    if request.method == "POST" and form.is_valid() and chat is not None:
        data = form.cleaned_data
        values = {"preset": data["preset"], "reply_mode": data.get("reply_mode") or chat.reply_mode,
                  "group_memory": data.get("group_memory") or chat.group_memory}
        try:
            if any(getattr(chat, name) != value for name, value in values.items()):
                chat_services.update_chats(chats=[chat], actor=request.user, **values)
            if data["trouble"] != simulated.trouble:
                services.set_trouble(simulated_chat=simulated, trouble=data["trouble"], actor=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(request, _("Saved."))
    return redirect(_page_url(simulated))


def delete_chat(request: HttpRequest, simulated_id: int, *, model_admin) -> HttpResponse:
    _require(request, (*SIMULATE_PERMISSIONS, "conversations.delete_chat"))
    simulated = get_object_or_404(SimulatedChat.objects.select_related("channel"), pk=simulated_id)
    if request.method == "POST":
        try:
            services.delete_simulated_chat(simulated_chat=simulated, actor=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect(_page_url(simulated))
        messages.success(request, _("The simulated chat and its messages were deleted."))
        return redirect(_page_url(new=True))
    return redirect(_page_url(simulated))


def prompt(request: HttpRequest, answer_id: int, *, model_admin) -> JsonResponse:
    """What the model was sent for one answer, rebuilt (see `selectors.prompt_sent`); audited."""
    _require(request, PROMPT_PERMISSIONS)
    answer = get_object_or_404(Message.objects.select_related("chat__channel", "reply_to", "preset", "backend"),
                               pk=answer_id, direction="out")
    audit.record_conversation_view(actor=request.user, target_type="message", target_id=answer.pk, via="admin",
                                   chat_id=answer.chat_id, what="prompt sent to the model")
    return JsonResponse(selectors.prompt_sent(answer=answer).as_dict())


# --- Preset comparison ------------------------------------------------------------------


class CompareForm(forms.Form):
    presets = forms.ModelMultipleChoiceField(
        queryset=SamplingPreset.objects.select_related("backend", "fallback_backend").order_by("name"),
        widget=forms.CheckboxSelectMultiple, label=gettext_lazy("Presets"),
        help_text=gettext_lazy("Two or more."))
    exchanges = forms.IntegerField(min_value=1, max_value=compare.MAX_EXCHANGES, initial=3,
                                   label=gettext_lazy("Last exchanges"),
                                   help_text=gettext_lazy("How many of the chat's last user turns to replay."))


def compare_start(request: HttpRequest, *, model_admin) -> HttpResponse:
    _require(request, COMPARE_PERMISSIONS)
    chat = get_object_or_404(Chat.objects.select_related("channel"), pk=_int(request.GET.get("chat")))
    form = CompareForm(request.POST or None, initial={"presets": [p for p in [chat.preset_id] if p]})
    if request.method == "POST" and form.is_valid():
        try:
            comparison = compare.start_comparison(chat=chat, presets=list(form.cleaned_data["presets"]),
                                                  exchanges=form.cleaned_data["exchanges"], actor=request.user)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return redirect(reverse("admin:conversations_presetcomparison_page", args=[comparison.pk]))
    context = {
        **model_admin.admin_site.each_context(request), "opts": model_admin.opts,
        "title": _("Compare presets on “%(chat)s”") % {"chat": chat}, "chat": chat, "form": form,
        "simulated": SimulatedChat.objects.filter(channel=chat.channel, line_id=chat.line_id).first(),
    }
    return render(request, "admin/simulator/compare_start.html", context)


def compare_page(request: HttpRequest, comparison_id: int, *, model_admin) -> HttpResponse:
    _require(request, COMPARE_PERMISSIONS)
    comparison = get_object_or_404(PresetComparison.objects.select_related("chat__channel"), pk=comparison_id)
    audit.record_conversation_view(actor=request.user, target_type="chat", target_id=comparison.chat_id, via="admin",
                                   what="preset comparison", comparison=comparison.pk)
    context = {
        **model_admin.admin_site.each_context(request), "opts": model_admin.opts,
        "title": _("Preset comparison"), "comparison": comparison, "chat": comparison.chat,
        "report": compare.comparison_report(comparison=comparison),
    }
    return render(request, "admin/simulator/compare.html", context)


def compare_progress(request: HttpRequest, comparison_id: int, *, model_admin) -> JsonResponse:
    """Polled by the comparison page while it runs (its view was audited when it opened)."""
    _require(request, COMPARE_PERMISSIONS)
    comparison = get_object_or_404(PresetComparison.objects.select_related("chat"), pk=comparison_id)
    _audit_once(request, target_type="chat", target_id=comparison.chat_id, what="preset comparison")
    report = compare.comparison_report(comparison=comparison)
    table = render_to_string("admin/simulator/compare_table.html", {"report": report}, request=request)
    return JsonResponse({**report, "table": table})


def compare_cancel(request: HttpRequest, comparison_id: int, *, model_admin) -> HttpResponse:
    _require(request, COMPARE_PERMISSIONS)
    comparison = get_object_or_404(PresetComparison, pk=comparison_id)
    if request.method == "POST":
        if compare.cancel_comparison(comparison=comparison):
            messages.success(request, _("The comparison was cancelled."))
        else:
            messages.warning(request, _("The comparison had already ended."))
    return redirect(reverse("admin:conversations_presetcomparison_page", args=[comparison.pk]))


# --- Helpers --------------------------------------------------------------------------------


def _audit_once(request: HttpRequest, *, target_type: str, target_id: int, what: str) -> None:
    """A view of the conversation, recorded once per VIEW_AUDIT_WINDOW per user, not per poll."""
    recent = AuditEvent.objects.filter(
        action=AuditAction.VIEW_CONVERSATION, created_at__gte=timezone.now() - VIEW_AUDIT_WINDOW,
        actor_id=request.user.pk, target_type=target_type, target_id=str(target_id), details__what=what)
    if not recent.exists():
        audit.record_conversation_view(actor=request.user, target_type=target_type, target_id=target_id,
                                       via="admin", what=what)


def _page_url(simulated: SimulatedChat | None = None, *, new: bool = False) -> str:
    url = reverse("admin:conversations_simulatedchat_changelist")
    if simulated is not None:
        return f"{url}?chat={simulated.pk}"
    return f"{url}?new=1" if new else url


def _int(value) -> int | None:
    return int(value) if isinstance(value, str) and value.isdigit() else None


def simulator_links(*, user, chat: Chat) -> dict:
    """Links from a chat's pages: its simulator (or a rehearsal like it) and a preset comparison."""
    links = {"simulated": chat.channel.is_simulated}
    if may_simulate(user):
        simulated = (SimulatedChat.objects.filter(channel_id=chat.channel_id, line_id=chat.line_id).first()
                     if chat.channel.is_simulated else None)
        base = reverse("admin:conversations_simulatedchat_changelist")
        links["simulator_url"] = f"{base}?chat={simulated.pk}" if simulated else f"{base}?new=1&like={chat.pk}"
    if may_compare(user):
        links["compare_url"] = f"{reverse('admin:conversations_presetcomparison_start')}?chat={chat.pk}"
    return links
