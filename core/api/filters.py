"""Query filters shared by the apps' APIs."""
from datetime import timezone as dt_timezone

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django_filters.fields import IsoDateTimeField
from drf_spectacular.utils import extend_schema_field

MAX_ID = 2**63 - 1  # BigAutoField; larger numbers overflow the database driver


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": MAX_ID})
class IdFilter(django_filters.NumberFilter):
    field_class = forms.IntegerField

    def __init__(self, **kwargs):
        super().__init__(min_value=1, max_value=MAX_ID, **kwargs)


class UtcDateTimeField(IsoDateTimeField):
    """ISO 8601, passed on in UTC: PostgreSQL refuses offsets past ±15:59."""

    def to_python(self, value):
        moment = super().to_python(value)
        try:
            return moment.astimezone(dt_timezone.utc) if moment else moment
        except OverflowError:
            raise ValidationError("Enter a date/time between the years 1 and 9999.", code="invalid") from None


class DateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcDateTimeField
