"""Admin list filters for messages."""
from datetime import date, datetime, time, timedelta

from django.contrib import admin
from django.utils import timezone
from django.utils.dateparse import parse_date
from django.utils.translation import gettext_lazy as _


def _midnight(day: date) -> datetime:
    """The start of `day` in the operator's time zone."""
    return timezone.make_aware(datetime.combine(day, time.min))


class DateRangeFilter(admin.FieldListFilter):
    """From/to dates typed in, as `<field>__gte` / `<field>__lt` (the to-date included)."""

    template = "admin/conversations/date_range_filter.html"

    def __init__(self, field, request, params, model, model_admin, field_path):
        self.since_param, self.until_param = f"{field_path}__gte", f"{field_path}__lt"
        super().__init__(field, request, params, model, model_admin, field_path)
        self.title = _("date range")

    def expected_parameters(self):
        return [self.since_param, self.until_param]

    def has_output(self) -> bool:
        return True

    def choices(self, changelist):
        return []

    def _date(self, param: str) -> date | None:
        value = self.used_parameters.get(param)
        if isinstance(value, list):
            value = value[-1] if value else ""
        try:
            return parse_date(str(value or ""))
        except ValueError:
            return None

    def queryset(self, request, queryset):
        since, until = self._date(self.since_param), self._date(self.until_param)
        if since:
            queryset = queryset.filter(**{self.since_param: _midnight(since)})
        if until:
            queryset = queryset.filter(**{self.until_param: _midnight(until + timedelta(days=1))})
        return queryset

    def values(self) -> dict:
        since, until = self._date(self.since_param), self._date(self.until_param)
        return {"since_param": self.since_param, "until_param": self.until_param,
                "since": since.isoformat() if since else "", "until": until.isoformat() if until else ""}


class GroupMemoryFilter(admin.SimpleListFilter):
    """Groups and rooms by what they keep (1:1 chats keep everything said to the bot)."""

    title = _("group memory")
    parameter_name = "group_memory"

    def lookups(self, request, model_admin):
        from .models import GroupMemory

        return GroupMemory.choices

    def queryset(self, request, queryset):
        if self.value():
            return queryset.exclude(source_type="user").filter(group_memory=self.value())
        return queryset
