"""Reading dates and times given on the command line."""
from datetime import datetime, time

from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime


def parse_moment(value: str, option: str) -> datetime:
    """YYYY-MM-DD (midnight, in TIME_ZONE) or an ISO 8601 date and time."""
    moment = None
    try:
        moment = parse_datetime(value)
        if moment is None:
            day = parse_date(value)
            moment = datetime.combine(day, time.min) if day else None
    except ValueError:
        moment = None
    if moment is None:
        raise CommandError(f"{option}: {value!r} is not a date (YYYY-MM-DD) or an ISO 8601 time.")
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment
