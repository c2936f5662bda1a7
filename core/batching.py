"""Working through many rows by id, one short transaction per batch."""
from collections.abc import Callable

from django.db import transaction
from django.db.models import QuerySet


def run_in_batches(*, rows: QuerySet, batch_size: int, apply: Callable[[list[int]], None],
                   on_batch: Callable[[int], None] | None = None) -> int:
    """Calls `apply(ids)` on the ids of `rows`, `batch_size` at a time, until none are left.

    Each batch is one transaction that loads nothing but ids and uses no OFFSET, so an
    interrupted run leaves whole batches done and the rest untouched. `apply` must take the
    rows out of `rows` (delete them, or change what `rows` filters on), or this never ends.
    `on_batch(n)` runs inside each batch's transaction. Returns how many rows were done.
    """
    done = 0
    while True:
        with transaction.atomic():
            ids = list(rows.values_list("id", flat=True)[:batch_size])
            if not ids:
                return done
            apply(ids)
            done += len(ids)
            if on_batch:
                on_batch(len(ids))
