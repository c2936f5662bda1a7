"""Downloading what users send: a message's content from LINE's data host, or, for an image
LINE only links to (`contentProvider.type = external`), from that link.

Bodies are streamed and cut off at a byte limit, so a huge file costs at most the limit in
memory. line-bot-sdk's MessagingApiBlob.get_message_content reads the whole body before it
returns (also with `_preload_content=False`), so this speaks the same endpoint through httpx
with the same bearer token.
"""
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from django.conf import settings

CHUNK = 64 * 1024


class ContentError(Exception):
    """The content could not be had. `transient` (429, 5xx, network): worth trying again."""

    transient = False

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class ContentUnavailable(ContentError):
    """LINE (or the server) may answer later: 429, 5xx, a network failure, a timeout."""

    transient = True


class ContentNotFound(ContentError):
    """LINE's 404: no such message, or its content has expired (LINE keeps it for a while only)."""


class ContentTooLarge(ContentError):
    """Bigger than the limit: refused from its Content-Length, or cut off while streaming."""


class ContentRefused(ContentError):
    """An external URL we will not fetch: not HTTPS, a private address, a redirect."""


@dataclass(frozen=True)
class Content:
    data: bytes
    content_type: str  # as the server said; the media checks decide what it really is


def fetch_channel_content(*, channel, message_id: str, max_bytes: int) -> Content:
    """A message's content from LINE's data host, or for a simulated channel from the emulator
    in this process (as `client.client_for` routes its calls): LINE is never asked about a
    simulated message, and the download runs the same code, limits and status checks."""
    if channel.is_simulated:
        from ..simulator.transport import EMULATOR_HOST, EmulatorHTTPTransport

        return fetch_line_content(access_token=channel.access_token, message_id=message_id, max_bytes=max_bytes,
                                  host=EMULATOR_HOST, transport=EmulatorHTTPTransport(channel_id=channel.pk))
    return fetch_line_content(access_token=channel.access_token, message_id=message_id, max_bytes=max_bytes)


def fetch_line_content(*, access_token: str, message_id: str, max_bytes: int, host: str | None = None,
                       transport=None) -> Content:
    """A message's photo, voice message (or other file) from LINE's data host (or `host`,
    reached through an httpx `transport`)."""
    import httpx

    if not message_id.isdigit():
        raise ContentError("a LINE message ID is a number")
    url = f"{(host or settings.LINE_DATA_API_HOST).rstrip('/')}/v2/bot/message/{quote(message_id)}/content"
    headers = {"Authorization": f"Bearer {access_token}", "Accept-Encoding": "identity"}
    with _client(transport=transport) as client:
        return _stream(client, httpx.Request("GET", url, headers=headers), max_bytes=max_bytes)


@dataclass(frozen=True)
class ExternalPolicy:
    """Which external URLs may be fetched: HTTPS to public addresses only, by default."""

    schemes: tuple[str, ...] = ("https",)
    allow_address: Callable[[ipaddress.IPv4Address | ipaddress.IPv6Address], bool] = (
        lambda address: address.is_global)

    def check_url(self, url: str) -> tuple[str, int, str]:
        """(host, port, path with query) of a URL this policy allows, else ContentRefused."""
        if len(url) > 2000:
            raise ContentRefused("the image URL is too long")
        parts = urlsplit(url)
        if parts.scheme not in self.schemes:
            raise ContentRefused(f"only {', '.join(self.schemes)} URLs are fetched")
        if not parts.hostname or parts.username or parts.password:
            raise ContentRefused("the image URL has no host, or carries a user name")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ContentRefused("the image URL has an invalid port") from None
        return parts.hostname, port, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def resolve(self, host: str, port: int) -> str:
        """The one address to connect to: every address the name has must be allowed, so a name
        that also points inside cannot slip through on a second lookup (the connection then
        goes to this address, not to a fresh lookup)."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            raise ContentUnavailable("the image's host name does not resolve") from None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
        refused = [address for address in addresses if not self.allow_address(address)]
        if not addresses or refused:
            raise ContentRefused("the image's host is a private or local address")
        return str(addresses[0])


DEFAULT_POLICY = ExternalPolicy()


def fetch_external_content(*, url: str, max_bytes: int, policy: ExternalPolicy = DEFAULT_POLICY) -> Content:
    """An image from another server's URL, by the policy's rules, never following a redirect."""
    import httpx

    host, port, path = policy.check_url(url)
    address = policy.resolve(host, port)
    scheme = urlsplit(url).scheme
    netloc = f"[{address}]" if ":" in address else address
    # Connect to the checked address; TLS still checks the certificate against the host name.
    request = httpx.Request("GET", f"{scheme}://{netloc}:{port}{path}",
                            headers={"Host": host if port in (80, 443) else f"{host}:{port}",
                                     "Accept-Encoding": "identity"},
                            extensions={"sni_hostname": host})
    with _client(trust_env=False) as client:
        return _stream(client, request, max_bytes=max_bytes)


def _client(*, trust_env: bool = True, transport=None):
    import httpx

    from models_registry.backends.base import http_timeout, refuse_redirects

    return httpx.Client(timeout=http_timeout(settings.LINE_API_TIMEOUT), follow_redirects=False,
                        trust_env=trust_env, event_hooks={"response": [refuse_redirects]}, transport=transport)


def _stream(client, request, *, max_bytes: int) -> Content:
    """The body, read in chunks as it comes (undecoded: `Accept-Encoding: identity` was asked
    for, and a compressed body still counts as sent), cut off past `max_bytes`."""
    import httpx

    from models_registry.backends.base import BackendRejected

    try:
        try:
            response = client.send(request, stream=True)
        except BackendRejected as exc:
            raise ContentRefused(str(exc)) from None
        try:
            _check_status(response)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise ContentTooLarge(f"the file is {int(declared)} bytes, more than the limit of {max_bytes}")
            received = bytearray()
            for chunk in response.iter_raw(CHUNK):
                received += chunk
                if len(received) > max_bytes:
                    raise ContentTooLarge(f"the file is more than the limit of {max_bytes} bytes")
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            return Content(bytes(received), content_type[:64])
        finally:
            response.close()
    except httpx.TimeoutException:
        raise ContentUnavailable("timed out") from None
    except httpx.HTTPError as exc:
        raise ContentUnavailable(type(exc).__name__) from None


def _check_status(response) -> None:
    status = response.status_code
    if 200 <= status < 300 and status != 202:
        return
    if status == 202:
        # LINE answers 202 while it is still preparing a video or audio file.
        raise ContentUnavailable("LINE is still preparing the content", status=status)
    if status == 404:
        raise ContentNotFound("no such content: the message ID is unknown or its content has expired",
                              status=status)
    if status == 429 or status >= 500:
        raise ContentUnavailable(f"HTTP {status}", status=status)
    raise ContentError(f"HTTP {status}", status=status)
