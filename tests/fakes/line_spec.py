"""Validation against LINE's published OpenAPI descriptions (line/line-openapi).

The spec files live outside the repository (``../shared/specs/line-openapi``,
or ``$LINE_OPENAPI_DIR``); when they are missing, callers skip the check.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import ValidationError, validators
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SPEC_DIR_ENV = "LINE_OPENAPI_DIR"
MESSAGING_SPEC = "messaging-api.yml"
WEBHOOK_SPEC = "webhook.yml"
_SCHEMAS = "#/components/schemas/"
_DISPATCH_SUFFIX = "__dispatch"
_DISPATCH_KEYWORD = "x-line-dispatch"


def spec_dir() -> Path | None:
    """The directory holding LINE's spec files, or None if it does not exist."""
    configured = os.environ.get(SPEC_DIR_ENV)
    path = Path(configured) if configured else Path(__file__).resolve().parents[2].parent / "shared/specs/line-openapi"
    return path if path.is_dir() else None


class SpecValidator:
    """Validates instances against named ``components/schemas`` of one spec."""

    def __init__(self, spec: dict[str, Any], uri: str):
        self.uri = uri
        schemas = spec["components"]["schemas"]
        self._polymorphic = _add_discriminator_dispatch(schemas)
        _inline_refs(schemas)
        self._registry = Registry().with_resource(uri, Resource(contents=spec, specification=DRAFT4))
        self._validators: dict[str, Any] = {}
        self._lock = threading.Lock()

    def errors(self, schema_name: str, instance: Any) -> list[dict[str, str]]:
        """LINE-style ``{"message", "property"}`` details; empty when valid."""
        found = self._validator(schema_name).iter_errors(instance)
        return [
            {"message": error.message, "property": property_path(error.absolute_path)}
            for error in sorted(found, key=lambda e: list(map(str, e.absolute_path)))
        ]

    def _validator(self, schema_name: str) -> Any:
        with self._lock:
            validator = self._validators.get(schema_name)
            if validator is None:
                target = schema_name + _DISPATCH_SUFFIX if schema_name in self._polymorphic else schema_name
                validator = _LineValidator(
                    {"$ref": f"{self.uri}{_SCHEMAS}{target}"},
                    registry=self._registry,
                    format_checker=oas30_format_checker,
                )
                self._validators[schema_name] = validator
            return validator


def load_validator(filename: str, directory: str | Path | None = None) -> SpecValidator | None:
    """A cached validator for one spec file, or None when the spec is absent."""
    base = Path(directory) if directory else spec_dir()
    if base is None or not (base / filename).is_file():
        return None
    return _load(str(base.resolve() / filename))


@lru_cache(maxsize=None)
def _load(path: str) -> SpecValidator:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as handle:
        spec = yaml.load(handle, Loader=loader)
    return SpecValidator(spec, f"urn:line-openapi:{Path(path).name}")


def property_path(parts: Iterable[Any]) -> str:
    """``["messages", 0, "text"]`` -> ``"messages[0].text"`` as LINE reports it."""
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _add_discriminator_dispatch(schemas: dict[str, Any]) -> set[str]:
    """Make discriminators on base schemas actually select the subtype.

    LINE's specs put ``discriminator`` on a base schema (``Message``) whose
    subtypes extend it through ``allOf``.  OAS30Validator only honours a
    discriminator next to ``oneOf``, so a ``{"type": "text"}`` message without
    ``text`` would pass.  Each such base gets a ``<Base>__dispatch`` schema
    (see ``_dispatch``) and every reference to the base, except the subtypes'
    own ``allOf`` back-references, is pointed at it.
    """
    bases = {
        name
        for name, schema in schemas.items()
        if "discriminator" in schema and not {"allOf", "oneOf", "anyOf"} & schema.keys()
    }
    _rewrite_refs(schemas, {_SCHEMAS + name for name in bases})
    for name in bases:
        discriminator = schemas[name]["discriminator"]
        mapping = discriminator.get("mapping", {})
        schemas[name + _DISPATCH_SUFFIX] = {
            _DISPATCH_KEYWORD: {
                "propertyName": discriminator["propertyName"],
                "mapping": {value: {"$ref": ref} for value, ref in mapping.items()},
            }
        }
    return bases


def _dispatch(validator: Any, dispatch: dict[str, Any], instance: Any, schema: Any) -> Iterator[ValidationError]:
    """Validate ``instance`` against the subtype its discriminator names."""
    if not validator.is_type(instance, "object"):
        yield ValidationError(f"{instance!r} is not of type 'object'")
        return
    name = dispatch["propertyName"]
    if name not in instance:
        yield ValidationError(f"{name!r} is a required property")
        return
    target = dispatch["mapping"].get(instance[name])
    if target is None:
        yield ValidationError(f"{instance[name]!r} is not one of {sorted(dispatch['mapping'])}", path=[name])
        return
    yield from validator.descend(instance, target)


_LineValidator = validators.extend(OAS30Validator, {_DISPATCH_KEYWORD: _dispatch})


def _rewrite_refs(node: Any, base_refs: set[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _rewrite_refs(item, base_refs)
        return
    if not isinstance(node, dict):
        return
    if node.get("$ref") in base_refs:
        node["$ref"] += _DISPATCH_SUFFIX
    for key, value in node.items():
        if key == "allOf":
            for part in value:
                if part.keys() != {"$ref"}:
                    _rewrite_refs(part, base_refs)
        elif key != "discriminator":
            _rewrite_refs(value, base_refs)


def _inline_refs(schemas: dict[str, Any]) -> None:
    """Replace ``$ref`` nodes by the schema they name, except on cycles.

    Resolving a ``$ref`` through ``referencing`` costs more than the rest of
    the validation, and the fake LINE API validates every request.  Inlined
    schemas are shared objects, not copies, so this is cheap and exact.
    """
    done: dict[str, Any] = {}
    active: set[str] = set()

    def resolve(name: str) -> Any:
        if name in done:
            return done[name]
        if name in active or name not in schemas:
            return None
        active.add(name)
        done[name] = inline(schemas[name])
        active.discard(name)
        return done[name]

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_SCHEMAS):
            target = resolve(ref[len(_SCHEMAS):])
            return node if target is None else target
        return {key: value if key == "discriminator" else inline(value) for key, value in node.items()}

    for name in list(schemas):
        schemas[name] = resolve(name)
