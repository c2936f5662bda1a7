"""Each backend adapter against its loopback fake, through the real client library."""
import logging
import traceback

import pytest

from conversations.models import Message
from models_registry.backends import (
    BackendConfig,
    BackendFailed,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    SamplingParams,
    Turn,
    backend_for,
)
from models_registry.backends.base import without_secrets
from models_registry.models import BackendKind, ModelBackend
from models_registry.services import check_backend
from tests.fakes import webhooks as ev
from tests.fakes.ollama import FakeOllama
from tests.fakes.openai_compat import FakeOpenAICompat
from tests.fakes.replicate import FakeReplicate

PARAMS = SamplingParams(temperature=0.2, top_p=0.7, top_k=30, max_new_tokens=64, repetition_penalty=1.15)
TURNS = [Turn("system", "Be brief."), Turn("user", "hi"), Turn("assistant", "hello"), Turn("user", "天氣如何?")]
GEMMA = "google/gemma-3-4b-it"


@pytest.fixture
def replicate_server():
    with FakeReplicate(api_token="r8_test", models={GEMMA: None}, polls_until_done=2) as fake:
        yield fake


@pytest.fixture
def vllm():
    with FakeOpenAICompat(models=("llama-3.1-8b",), api_key="sk-local") as fake:
        yield fake


def replicate_config(fake, model=GEMMA, token="r8_test", timeout=5.0) -> BackendConfig:
    return BackendConfig(kind="replicate", base_url=fake.url, model=model, api_key=token, timeout=timeout)


def openai_config(fake, key="sk-local", model="llama-3.1-8b") -> BackendConfig:
    return BackendConfig(kind="openai_compatible", base_url=fake.url + "/v1", model=model, api_key=key, timeout=5)


def test_threads_asking_at_once_for_a_backend_share_one_adapter():
    import threading
    import uuid

    config = BackendConfig(kind="openai_compatible", base_url=f"http://127.0.0.1:9/{uuid.uuid4().hex}/v1",
                           model="m", timeout=5)
    start, adapters = threading.Barrier(8), []

    def ask() -> None:
        start.wait(5)
        adapters.append(backend_for(config))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(adapters) == 8 and len({id(adapter) for adapter in adapters}) == 1


# One fake per protocol, none asking for a key: any refusal comes from the mode a test sets.
FAKES = {
    "ollama": lambda: FakeOllama(models=("gemma3:4b",)),
    "replicate": lambda: FakeReplicate(api_token=SECRET, models={GEMMA: None}),
    "openai_compatible": lambda: FakeOpenAICompat(models=("llama-3.1-8b",)),
}
SECRET = "sk-live-0123456789abcdef"


def config_for(kind: str, fake, key: str = SECRET) -> BackendConfig:
    base_url = fake.url + "/v1" if kind == "openai_compatible" else fake.url
    model = {"ollama": "gemma3:4b", "replicate": GEMMA, "openai_compatible": "llama-3.1-8b"}[kind]
    return BackendConfig(kind=kind, base_url=base_url, model=model, api_key=key, timeout=5)


# --- Ollama -------------------------------------------------------------------------


def test_ollama_generate_and_check(ollama_server):
    adapter = backend_for(BackendConfig(kind="ollama", base_url=ollama_server.url, model="gemma3:4b", timeout=5))
    completion = adapter.generate(TURNS, PARAMS)
    assert completion.text == "echo: 天氣如何?"
    assert completion.prompt_tokens > 0 and completion.completion_tokens > 0
    assert ollama_server.last("chat").json["options"] == {
        "temperature": 0.2, "top_p": 0.7, "top_k": 30, "num_predict": 64, "repeat_penalty": 1.15,
    }
    report = adapter.check()
    assert report.ok and set(report.models) == {"gemma3:4b", "llama3.2:3b"}


def test_ollama_check_names_a_missing_model(ollama_server):
    report = backend_for(BackendConfig(kind="ollama", base_url=ollama_server.url, model="qwen3:8b")).check()
    assert not report.ok
    assert "qwen3:8b" in report.detail and "ollama pull qwen3:8b" in report.detail
    assert "gemma3:4b" in report.models


def test_ollama_timeout_is_a_transient_error(ollama_server):
    ollama_server.set_delay("chat", 2)
    adapter = backend_for(BackendConfig(kind="ollama", base_url=ollama_server.url, model="gemma3:4b", timeout=1))
    with pytest.raises(BackendTimeout, match="did not answer within 1 s") as caught:
        adapter.generate(TURNS, PARAMS)
    assert caught.value.transient


def test_refused_connection_is_reported_not_raised():
    report = backend_for(BackendConfig(kind="ollama", base_url="http://127.0.0.1:9", model="x")).check()
    assert not report.ok and "connection refused" in report.detail
    with pytest.raises(BackendUnavailable):
        backend_for(BackendConfig(kind="ollama", base_url="http://127.0.0.1:9", model="x")).generate(TURNS, PARAMS)


# --- Replicate ------------------------------------------------------------------------


def test_replicate_official_model_generate(replicate_server):
    completion = backend_for(replicate_config(replicate_server)).generate(TURNS, PARAMS)
    sent = replicate_server.inputs[-1]
    assert sent["prompt"] == "User: hi\nAssistant: hello\nUser: 天氣如何?\nAssistant:"
    assert sent["system_prompt"] == "Be brief."
    assert {k: sent[k] for k in ("temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty")} == {
        "temperature": 0.2, "top_p": 0.7, "top_k": 30, "max_new_tokens": 64, "repetition_penalty": 1.15,
    }
    assert completion.text == "echo: " + sent["prompt"]
    assert replicate_server.last("create").path == f"/v1/models/{GEMMA}/predictions"
    assert replicate_server.count("get") == 2


def test_replicate_pinned_version_generate_and_check(replicate_server):
    version = replicate_server.models[GEMMA]
    adapter = backend_for(replicate_config(replicate_server, model=f"{GEMMA}:{version}"))
    adapter.generate([Turn("user", "single question")], PARAMS)
    created = replicate_server.last("create")
    assert created.path == "/v1/predictions" and created.json["version"] == version
    assert replicate_server.inputs[-1]["prompt"] == "single question"
    assert adapter.check().ok


def test_replicate_failed_prediction_is_transient(replicate_server):
    replicate_server.fail_predictions_with("CUDA out of memory")
    with pytest.raises(BackendFailed, match="CUDA out of memory") as caught:
        backend_for(replicate_config(replicate_server)).generate(TURNS, PARAMS)
    assert caught.value.transient


def test_replicate_deadline_cancels_the_prediction(replicate_server):
    replicate_server.polls_until_done = 10_000
    with pytest.raises(BackendTimeout):
        backend_for(replicate_config(replicate_server, timeout=1.0)).generate(TURNS, PARAMS)
    assert replicate_server.count("cancel") == 1


def test_replicate_bad_token_is_rejected_with_a_clear_message(replicate_server):
    adapter = backend_for(replicate_config(replicate_server, token="r8_wrong"))
    with pytest.raises(BackendRejected, match="401") as caught:
        adapter.generate(TURNS, PARAMS)
    assert not caught.value.transient
    report = adapter.check()
    assert not report.ok and "401" in report.detail
    assert "r8_wrong" not in report.detail


def test_replicate_unknown_model_fails_the_check(replicate_server):
    report = backend_for(replicate_config(replicate_server, model="nobody/nothing")).check()
    assert not report.ok and "404" in report.detail


# --- OpenAI-compatible ----------------------------------------------------------------


def test_openai_compatible_generate_sends_extra_sampling_fields(vllm):
    completion = backend_for(openai_config(vllm)).generate(TURNS, PARAMS)
    body = vllm.last("chat").json
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert {k: body[k] for k in ("temperature", "top_p", "max_tokens", "top_k", "repetition_penalty")} == {
        "temperature": 0.2, "top_p": 0.7, "max_tokens": 64, "top_k": 30, "repetition_penalty": 1.15,
    }
    assert vllm.last("chat").headers.get("Authorization") == "Bearer sk-local"
    assert completion.text == "echo: 天氣如何?" and completion.completion_tokens


def test_openai_compatible_check_lists_models(vllm):
    report = backend_for(openai_config(vllm)).check()
    assert report.ok and report.models == ["llama-3.1-8b"]


def test_openai_compatible_bad_key_and_unknown_model(vllm):
    with pytest.raises(BackendRejected, match="Invalid API key"):
        backend_for(openai_config(vllm, key="sk-wrong")).generate(TURNS, PARAMS)
    with pytest.raises(BackendRejected, match="404"):
        backend_for(openai_config(vllm, model="gpt-nope")).generate(TURNS, PARAMS)


def test_openai_compatible_server_error_is_transient(vllm):
    vllm.fail_next("chat", 503)
    with pytest.raises(BackendUnavailable):
        backend_for(openai_config(vllm)).generate(TURNS, PARAMS)


# --- A key quoted back in an error -----------------------------------------------------


@pytest.mark.parametrize("kind", FAKES)
def test_a_key_quoted_in_an_error_is_hidden_from_the_exception_and_the_log(kind, caplog):
    with FAKES[kind]() as fake:
        fake.quote_authorization()
        with pytest.raises(BackendRejected) as caught:
            backend_for(config_for(kind, fake)).generate(TURNS, PARAMS)
    assert fake.last().headers["authorization"] == f"Bearer {SECRET}"
    error = caught.value
    assert "401" in str(error) and "Bearer [hidden]" in str(error) and not error.transient
    with caplog.at_level(logging.WARNING):
        logging.getLogger(__name__).warning("Generation failed", exc_info=error)
    assert "Bearer [hidden]" in caplog.text
    assert SECRET not in caplog.text and SECRET not in "".join(traceback.format_exception(error))


@pytest.mark.parametrize("kind", FAKES)
def test_a_key_quoted_in_an_error_is_hidden_from_the_connection_report(kind):
    with FAKES[kind]() as fake:
        fake.quote_authorization()
        report = backend_for(config_for(kind, fake)).check()
    assert not report.ok and "401" in report.detail and "Bearer [hidden]" in report.detail
    assert SECRET not in report.detail


def test_a_long_error_is_cut_only_after_the_key_is_hidden():
    with FAKES["openai_compatible"]() as vllm:
        # "HTTP 401: " and 486 characters put the key across the 500-character cut.
        vllm.fail_next("chat", 401, {"error": {"message": "x" * 485 + " " + SECRET}})
        with pytest.raises(BackendRejected) as caught:
            backend_for(config_for("openai_compatible", vllm)).generate(TURNS, PARAMS)
    text = str(caught.value)
    assert text.endswith("…") and len(text) == 501
    assert SECRET[:4] not in text


def test_hiding_covers_the_keys_obvious_variants_and_any_bearer_token():
    text = 'sent sk-a/b+c"d, sk-a%2Fb%2Bc%22d and {"key": "sk-a/b+c\\"d"}; Authorization: bearer env-token'
    assert without_secrets(text, secret=' sk-a/b+c"d\n') == (
        'sent [hidden], [hidden] and {"key": "[hidden]"}; Authorization: bearer [hidden]'
    )
    assert without_secrets("HTTP 404: no model", secret="") == "HTTP 404: no model"


@pytest.mark.django_db
def test_a_quoted_key_stays_out_of_the_message_error_and_the_worker_log(webhook, preset, caplog):
    with FakeOpenAICompat(models=("llama-3.1-8b",)) as vllm:
        vllm.quote_authorization()
        preset.backend = ModelBackend.objects.create(
            name="vLLM", kind=BackendKind.OPENAI_COMPATIBLE, base_url=vllm.url + "/v1", model="llama-3.1-8b",
            api_key=SECRET,
        )
        preset.save()
        with caplog.at_level(logging.INFO):
            webhook.post(ev.text_message_event("hello vllm"))
    error = Message.objects.get(direction="in").error
    assert "invalid key Bearer [hidden]" in error and SECRET not in error
    assert "No answer for message" in caplog.text and SECRET not in caplog.text


@pytest.mark.django_db
def test_the_test_connection_page_hides_a_quoted_key(admin_client):
    with FAKES["replicate"]() as fake:
        fake.quote_authorization()
        cloud = ModelBackend.objects.create(name="Replicate", kind=BackendKind.REPLICATE, base_url=fake.url,
                                            model=GEMMA, api_key=SECRET, is_local=False)
        page = admin_client.post(f"/admin/models_registry/modelbackend/{cloud.pk}/test/").content.decode()
    assert "Bearer [hidden]" in page and SECRET not in page


# --- Redirects ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [302, 307])
@pytest.mark.parametrize("kind", FAKES)
def test_a_redirect_fails_generation_without_being_followed(kind, status):
    with FAKES[kind]() as elsewhere, FAKES[kind]() as bouncer:
        bouncer.redirect_to(elsewhere.url, status=status)
        with pytest.raises(BackendRejected, match="redirect to another address.*use the final URL") as caught:
            backend_for(config_for(kind, bouncer)).generate(TURNS, PARAMS)
    assert not caught.value.transient
    assert [r.status for r in bouncer.requests] == [status]
    assert elsewhere.requests == []


@pytest.mark.parametrize("status", [302, 307])
@pytest.mark.parametrize("kind", FAKES)
def test_a_redirect_fails_the_connection_check_without_being_followed(kind, status):
    with FAKES[kind]() as elsewhere, FAKES[kind]() as bouncer:
        bouncer.redirect_to(elsewhere.url, status=status)
        report = backend_for(config_for(kind, bouncer)).check()
    assert not report.ok and "use the final URL" in report.detail
    assert [r.status for r in bouncer.requests] == [status]
    assert elsewhere.requests == []


# --- Through the whole pipeline --------------------------------------------------------


@pytest.mark.django_db
def test_a_replicate_preset_answers_on_line(webhook, line_api, preset, replicate_server):
    cloud = ModelBackend.objects.create(
        name="Replicate Gemma", kind=BackendKind.REPLICATE, base_url=replicate_server.url, model=GEMMA,
        api_key="r8_test", is_local=False,
    )
    preset.backend = cloud
    preset.save()
    webhook.post(ev.text_message_event("雲端你好"))
    assert line_api.delivered_texts() == ["echo: 雲端你好"]
    assert Message.objects.get(direction="out").backend == cloud
    assert check_backend(backend=cloud).ok


@pytest.mark.django_db
def test_an_openai_compatible_preset_answers_on_line(webhook, line_api, preset, vllm):
    local = ModelBackend.objects.create(
        name="vLLM", kind=BackendKind.OPENAI_COMPATIBLE, base_url=vllm.url + "/v1", model="llama-3.1-8b",
        api_key="sk-local",
    )
    preset.backend = local
    preset.save()
    webhook.post(ev.text_message_event("hello vllm"))
    assert line_api.delivered_texts() == ["echo: hello vllm"]
    assert Message.objects.get(direction="out").completion_tokens > 0
