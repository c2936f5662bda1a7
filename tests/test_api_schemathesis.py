"""Property-based run of the whole API schema with schemathesis, against a live server.

Each operation gets a bounded, derandomized set of generated requests, valid and invalid,
sent with a superuser's token to the live test server; none may answer 5xx, and every
answer must match the schema the server publishes: status code, content type and body.

(Operations are driven one by one through `APIOperation.as_strategy()`: schemathesis's
fixture-based loader relies on pytest internals that pytest 9.2 changed.)
"""
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import schemathesis
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core.models import AuditEvent
from conversations.models import Chat, LineChannel, Message
from models_registry import services as registry_services
from models_registry.backends import ConnectionReport
from models_registry.models import BackendKind, ModelBackend, SamplingPreset
from tests.test_api import api_test_settings, superuser  # noqa: F401 (fixtures: no throttling, clean cache)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 25
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

# Which operations exist is known without a server; their schema is read from the live one.
OPERATIONS = [(method.upper(), path)
              for path, operations in SchemaGenerator().get_schema(request=None, public=True)["paths"].items()
              for method in operations]


class _Offline:
    """What a generated backend on some made-up host answers: nothing leaves the machine."""

    def check(self) -> ConnectionReport:
        return ConnectionReport(ok=False, latency_ms=0, detail="Not contacted in tests.")


@pytest.fixture
def offline_backends(monkeypatch):
    """Connection checks reach only loopback servers (the fakes); other hosts are not dialled."""
    real = registry_services.adapter_for

    def adapter_for(*, backend):
        if urlsplit(backend.base_url).hostname not in LOOPBACK:
            return _Offline()
        return real(backend=backend)

    monkeypatch.setattr(registry_services, "adapter_for", adapter_for)


@pytest.fixture
def seeded(ollama_server) -> dict[str, int]:
    """Something for the id-taking operations to find besides 404s: an id per collection."""
    backend = ModelBackend.objects.create(name="Local Ollama", kind=BackendKind.OLLAMA, base_url=ollama_server.url,
                                          model="gemma3:4b", timeout=2)
    preset = SamplingPreset.objects.create(name="Default", backend=backend, is_default=True)
    channel = LineChannel.objects.create(name="Test", slug="test", channel_secret="s", access_token="t",
                                         default_preset=preset, is_default=True)
    for number in range(1, 4):
        chat = Chat.objects.create(channel=channel, source_type="group", line_id=f"C{number}")
        now = timezone.now() - timedelta(hours=number)
        question = Message.objects.create(chat=chat, direction="in", text="hello", line_user_id="U1", event_at=now,
                                          status="replied", status_changed_at=now)
        Message.objects.create(chat=chat, direction="out", text="hi", event_at=now, status="replied",
                               status_changed_at=now, reply_to=question, backend=backend, latency_ms=100 * number)
    # A backend no preset uses, so that generated deletes can succeed too.
    spare = ModelBackend.objects.create(name="Spare", base_url="http://127.0.0.1:9", model="m", timeout=1)
    return {"backends": spare.pk, "presets": preset.pk, "channels": channel.pk, "chats": chat.pk,
            "messages": question.pk, "audit-events": AuditEvent.objects.create(created_at=now, action="export").pk}


@pytest.fixture
def live_schema(live_server, superuser, offline_backends):
    token = Token.objects.create(user=superuser)
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/v1/schema/?format=json", timeout=30)
    schema.config.update(base_url=live_server.url, headers={"Authorization": f"Token {token.key}"},
                         request_timeout=20)
    return schema


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("method, path", OPERATIONS, ids=[f"{method} {path}" for method, path in OPERATIONS])
def test_operation_conforms_to_the_schema(live_schema, seeded, method, path):
    operation = live_schema[path][method]
    strategies = [operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
                  operation.as_strategy(schemathesis.GenerationMode.NEGATIVE)]
    if "{id}" in path:
        # Random ids find nothing; also aim the generated queries and bodies at an existing object.
        existing = {"id": seeded[path.split("/")[3]]}
        strategies += [operation.as_strategy(mode, path_parameters=existing) for mode in schemathesis.GenerationMode]
    cases = st.one_of(strategies)

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=timedelta(seconds=10), database=None,
              phases=[Phase.explicit, Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def run(case):
        case.call_and_validate(checks=CHECKS)

    run()
