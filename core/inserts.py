"""Inserting one row from SQL built once per model, for rows written on a hot path.

`Model.objects.create()` builds a model instance and compiles its INSERT on every call:
for a table of ~35 columns that is most of a millisecond, and the webhook writes two rows
per event. `insert_row` writes the same row (every concrete field, defaults and
`auto_now_add` included, each value prepared by its own field) from a statement compiled
once, and can skip a row that would break a unique column instead of raising.

What it does not do: send `pre_save`/`post_save` (use it only for models nothing listens
to), run `save()` overrides, or any `Field.pre_save` but `auto_now`'s and `auto_now_add`'s.
"""
from functools import lru_cache

from django.db import connections
from django.db.models import Field, Model
from django.utils import timezone


def insert_row(model: type[Model], *, values: dict[str, object], skip_if_taken: str = "",
               using: str = "default") -> int | None:
    """Inserts one row of `model` and returns its primary key.

    `values` are keyed by field name or attname (`chat` or `chat_id`); other fields get their
    default, `auto_now`/`auto_now_add` fields the time. With `skip_if_taken` (a uniquely
    constrained field), a row whose value there is already taken is not inserted and None
    is returned: `INSERT … ON CONFLICT DO NOTHING`, which SQLite (≥ 3.35) and PostgreSQL
    both run, without the savepoint a caught IntegrityError would need.
    """
    connection = connections[using]
    sql, plan = _plan(model, connection.alias, skip_if_taken, tuple(values))
    params = []
    for kind, field, value in plan:
        if kind is _PREPARED:
            params.append(value)
            continue
        if kind is _GIVEN:
            value = values[value]
            if isinstance(value, Model):
                value = value.pk
        elif kind is _NOW:
            value = timezone.now()
        else:
            value = field.get_default()
        params.append(field.get_db_prep_save(value, connection))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        found = cursor.fetchone()
    return None if found is None else found[0]


# How each column's value is found: given by the caller, the time, a default made per call,
# or a default prepared for the database once.
_GIVEN, _NOW, _DEFAULT, _PREPARED = "given", "now", "default", "prepared"


@lru_cache(maxsize=None)
def _plan(model: type[Model], alias: str, skip_if_taken: str,
          names: tuple[str, ...]) -> tuple[str, tuple[tuple[str, Field, object], ...]]:
    connection = connections[alias]
    quote = connection.ops.quote_name
    meta = model._meta
    by_name = {}
    for field in meta.concrete_fields:
        by_name[field.name] = by_name[field.attname] = field
    given = {}
    for name in names:
        if name not in by_name:
            raise ValueError(f"{meta.label} has no column {name!r}")
        given[by_name[name].attname] = name
    fields = [field for field in meta.concrete_fields if not (field.primary_key and field.db_returning)]
    plan = []
    for field in fields:
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            plan.append((_NOW, field, None))  # as Field.pre_save does on an insert, given or not
        elif field.attname in given:
            plan.append((_GIVEN, field, given[field.attname]))
        elif callable(field.default):
            plan.append((_DEFAULT, field, None))
        else:
            plan.append((_PREPARED, field, field.get_db_prep_save(field.get_default(), connection)))
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    conflict = ""
    if skip_if_taken:
        field = meta.get_field(skip_if_taken)
        if not field.unique:
            raise ValueError(f"{meta.label}.{skip_if_taken} is not unique: a taken value cannot be told apart")
        conflict = f" ON CONFLICT ({quote(field.column)}) DO NOTHING"
    sql = (f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({placeholders}){conflict} "
           f"RETURNING {quote(meta.pk.column)}")
    return sql, tuple(plan)
