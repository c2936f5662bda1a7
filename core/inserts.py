"""Inserting one row from SQL built once per model, for rows written on a hot path.

`Model.objects.create()` builds a model instance and compiles its INSERT on every call:
for a table of ~35 columns that is most of a millisecond, and the webhook writes two rows
per event. `insert_row` writes the same row (every concrete field, defaults and
`auto_now_add` included, each value prepared by its own field) from a statement compiled
once, and can skip a row that would break a unique column instead of raising.

What it does not do: send `pre_save`/`post_save` (use it only for models nothing listens
to) or run `save()` overrides.
"""
from functools import lru_cache

from django.db import connections
from django.db.models import Field, Model


def insert_row(model: type[Model], *, values: dict[str, object], skip_if_taken: str = "",
               using: str = "default") -> int | None:
    """Inserts one row of `model` and returns its primary key.

    `values` are keyed by field name or attname (`chat` or `chat_id`); other fields get their
    default. With `skip_if_taken` (a uniquely constrained field), a row whose value there is
    already taken is not inserted and None is returned: `INSERT … ON CONFLICT DO NOTHING`,
    which SQLite (≥ 3.35) and PostgreSQL both run, without the savepoint a caught
    IntegrityError would need.
    """
    connection = connections[using]
    sql, fields = _insert_sql(model, connection.alias, connection.vendor, skip_if_taken)
    # A bare instance lets each field's pre_save run as in Model.save (auto_now_add sets the
    # time on it), without Model.__init__ visiting every field first.
    instance = model.__new__(model)
    row = instance.__dict__
    for name, value in values.items():
        field = _by_name(model)[name]
        row[field.attname] = value.pk if isinstance(value, Model) else value
    params = []
    for field in fields:
        if field.attname not in row:
            row[field.attname] = field.get_default()
        params.append(field.get_db_prep_save(field.pre_save(instance, True), connection))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        found = cursor.fetchone()
    return None if found is None else found[0]


@lru_cache(maxsize=None)
def _by_name(model: type[Model]) -> dict[str, Field]:
    fields = {}
    for field in model._meta.concrete_fields:
        fields[field.name] = fields[field.attname] = field
    return fields


@lru_cache(maxsize=None)
def _insert_sql(model: type[Model], alias: str, vendor: str, skip_if_taken: str) -> tuple[str, tuple[Field, ...]]:
    quote = connections[alias].ops.quote_name
    meta = model._meta
    fields = tuple(field for field in meta.concrete_fields if not (field.primary_key and field.db_returning))
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
    return sql, fields
