"""Operator-written texts with `{placeholder}`s: checked when saved, filled when sent.

Filling never uses `str.format` on the operator's text: a field like `{operator.__class__}`
would reach into Python objects. Only bare names are replaced, and only known ones.
"""
from string import Formatter

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _


def placeholder_problems(template: str, *, allowed: frozenset[str]) -> list[str]:
    """What is wrong with the template's placeholders, one sentence each (empty: nothing)."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in Formatter().parse(template)
                  if name is not None]
    except ValueError:
        return [_("A brace is not closed or not paired: write {{ and }} for a brace itself.")]
    known = ", ".join("{%s}" % name for name in sorted(allowed))
    problems = []
    for name, spec, conversion in fields:
        if name not in allowed:
            problems.append(_("Unknown placeholder {%(name)s}. Known placeholders: %(known)s.")
                            % {"name": name, "known": known})
        elif spec or conversion:
            problems.append(_("Placeholder {%(name)s} takes no format (no “:” or “!”).") % {"name": name})
    return list(dict.fromkeys(problems))


def check_placeholders(template: str, *, allowed: frozenset[str]) -> None:
    """Raises ValidationError naming every placeholder that cannot be filled."""
    problems = placeholder_problems(template, allowed=allowed)
    if problems:
        raise ValidationError(problems, code="placeholder")


def fill(template: str, values: dict[str, str]) -> str:
    """The template with each known `{name}` replaced; anything else is kept as written."""
    try:
        parts = list(Formatter().parse(template))
    except ValueError:
        return template  # not saved through a form; sent as written rather than not at all
    out = []
    for literal, name, spec, conversion in parts:
        out.append(literal)
        if name is None:
            continue
        if name in values and not spec and not conversion:
            out.append(values[name])
        else:
            out.append("{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}")
    return "".join(out)
