"""drf-spectacular hooks."""

_ERROR_COMPONENTS = {
    "Error": {
        "type": "object",
        "properties": {"detail": {"type": "string"}},
        "required": ["detail"],
    },
    "ValidationError": {
        "type": "object",
        "description": "Messages per field (`non_field_errors` for the object as a whole), or `detail`.",
        "additionalProperties": {},
    },
}
_ERRORS = {
    "400": ("ValidationError", "Invalid input: messages per field."),
    "401": ("Error", "No or invalid credentials."),
    "403": ("Error", "The user lacks the model permission."),
    "404": ("Error", "Not found."),
    "413": ("Error", "The request body is too large."),
    "429": ("Error", "Too many requests (see Retry-After)."),
}


def add_error_responses(result, generator, request, public):
    """drf-spectacular hook: documents the error answers every operation may give."""
    result.setdefault("components", {}).setdefault("schemas", {}).update(_ERROR_COMPONENTS)
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            anonymous = {} in operation.get("security", [{}])
            has_input = "requestBody" in operation or any(
                parameter["in"] == "query" for parameter in operation.get("parameters", []))
            for code, (component, description) in _ERRORS.items():
                if ((anonymous and code in ("401", "403")) or (code == "400" and not has_input)
                        or (code == "413" and "requestBody" not in operation)):
                    continue
                operation["responses"].setdefault(code, {
                    "description": description,
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{component}"}}},
                })
    return result
