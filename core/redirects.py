"""Redirect targets taken from the request (`next`), kept on this site."""
from django.http import HttpRequest
from django.utils.http import url_has_allowed_host_and_scheme


def safe_next(*, request: HttpRequest, target: str | None, default: str) -> str:
    """`target` if it points into this site, else `default`.

    A `next` is user input: followed blindly it sends a signed-in operator, with the
    site's authority, to any page an attacker chose (an open redirect).
    """
    if target and url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return default
