"""Paging a million messages without counting them all."""
from functools import cached_property

from django.core.paginator import Paginator


class CappedCountPaginator(Paginator):
    """Counts at most CAP rows (one cheap LIMIT query), never the whole table.

    Past the cap the admin shows "more than N" and offers the first pages; filters narrow
    the rest.
    """

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        return len(self.object_list.values_list("pk", flat=True)[: self.CAP + 1])

    @property
    def capped(self) -> bool:
        return self.count > self.CAP
