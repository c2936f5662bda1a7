"""line-bot-sdk, pointed at the emulator in this process instead of LINE.

The SDK's REST client is the one thing replaced: the SDK still builds each request (path,
headers, `X-Line-Retry-Key`, the JSON body), raises its own exceptions on errors and parses
the answers, so the bot's code runs exactly as against LINE. Why not an HTTP URL of this
site: a worker would have to know the site's public address (behind proxies, HTTPS,
ALLOWED_HOSTS), and a busy web server could stall the worker that waits on it.
Imported only where a simulated channel calls LINE (line-bot-sdk is slow to import).
"""
import json
from functools import lru_cache
from http import HTTPStatus
from urllib.parse import urlsplit

import httpx
import urllib3
from linebot.v3.messaging import exceptions, rest

from ..line.client import LineClient
from . import emulator

# Never contacted: the transport answers every request itself.
EMULATOR_HOST = "https://line-emulator.invalid"


class EmulatorRESTClient(rest.RESTClientObject):
    """The SDK's REST client, answered by `emulator.handle` (no connection pool, no network)."""

    def __init__(self, *, channel_id: int) -> None:
        self.channel_id = channel_id

    def request(self, method, url, query_params=None, headers=None, body=None, post_params=None,
                _preload_content=True, _request_timeout=None):
        # The bytes urllib3 would have sent: the SDK's REST client dumps the body the same way.
        content = b"" if body is None else json.dumps(body).encode()
        answer = emulator.handle(channel_id=self.channel_id, method=method, path=urlsplit(url).path,
                                 headers=dict(headers or {}), body=content)
        response = rest.RESTResponse(urllib3.HTTPResponse(
            body=answer.content, status=answer.status, preload_content=True,
            headers={"Content-Type": "application/json", **answer.headers},
            reason=HTTPStatus(answer.status).phrase))
        if 200 <= response.status <= 299:
            return response
        # As rest.RESTClientObject.request raises them.
        raise {401: exceptions.UnauthorizedException, 403: exceptions.ForbiddenException,
               404: exceptions.NotFoundException}.get(
            response.status,
            exceptions.ServiceException if response.status >= 500 else exceptions.ApiException)(http_resp=response)


class EmulatorHTTPTransport(httpx.BaseTransport):
    """An httpx transport answered by `emulator.handle`: the worker's content downloads (LINE's
    data host, `line.content`) run through httpx as for LINE, streaming and size limit included."""

    def __init__(self, *, channel_id: int) -> None:
        self.channel_id = channel_id

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = emulator.handle(channel_id=self.channel_id, method=request.method, path=request.url.path,
                                 headers=dict(request.headers), body=request.read())
        content = answer.content
        # A stream, not `content=`: httpx reads given content at once, and the caller streams it.
        return httpx.Response(answer.status, stream=httpx.ByteStream(content),
                              headers={"Content-Type": "application/json", **answer.headers,
                                       "Content-Length": str(len(content))})


@lru_cache(maxsize=32)
def emulated_client(*, channel_id: int, access_token: str) -> LineClient:
    return LineClient(access_token, host=EMULATOR_HOST, transport=EmulatorRESTClient(channel_id=channel_id))
