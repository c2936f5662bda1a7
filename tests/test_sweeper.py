"""The sweeper picks up what lost tasks and dead workers left behind."""
from datetime import timedelta

import pytest
from django.utils import timezone

from conversations import answering, ingest, sweeper
from conversations.models import Message, Status
from tests.fakes import webhooks as ev

pytestmark = pytest.mark.django_db


@pytest.fixture
def stored_but_not_queued(webhook, preset, monkeypatch):
    """A message whose task was lost between commit and queue (e.g. the broker was down)."""
    monkeypatch.setattr(ingest, "enqueue_after_commit", lambda *args: None)
    webhook.post(ev.text_message_event("lost task"))
    monkeypatch.undo()
    return Message.objects.get()


def test_fresh_pending_messages_are_left_alone(stored_but_not_queued, line_api):
    assert sweeper.sweep_stuck_messages().requeued == 0
    assert line_api.delivered == []


def test_a_lost_task_is_queued_again_and_answered(stored_but_not_queued, line_api):
    result = sweeper.sweep_stuck_messages(now=timezone.now() + timedelta(minutes=3))
    assert (result.requeued, result.failed) == (1, 0)
    assert line_api.delivered_texts() == ["echo: lost task"]
    assert Message.objects.get(pk=stored_but_not_queued.pk).status == Status.REPLIED


def test_a_message_whose_worker_died_mid_generation_is_answered_once(stored_but_not_queued, line_api):
    # What a worker killed while waiting on the model leaves behind.
    Message.objects.filter(pk=stored_but_not_queued.pk).update(status=Status.GENERATING, attempts=1)
    answering.answer_message(message_id=stored_but_not_queued.pk)  # django-q2 re-running the task
    assert line_api.delivered == []
    sweeper.sweep_stuck_messages(now=timezone.now() + timedelta(hours=1))
    sweeper.sweep_stuck_messages(now=timezone.now() + timedelta(hours=2))
    assert line_api.delivered_texts() == ["echo: lost task"]
    message = Message.objects.get(pk=stored_but_not_queued.pk)
    assert (message.status, message.attempts) == (Status.REPLIED, 2)


def test_a_worker_that_died_after_generating_sends_the_stored_answer(stored_but_not_queued, line_api, ollama_server):
    answering.answer_message(message_id=stored_but_not_queued.pk)
    assert ollama_server.count("chat") == 1
    # Pretend it died after generating, before sending: the answer is stored but not delivered.
    answer = Message.objects.get(direction="out")
    Message.objects.filter(pk=answer.pk).update(delivered_calls=0, status=Status.PENDING)
    Message.objects.filter(pk=stored_but_not_queued.pk).update(status=Status.GENERATING)
    line_api.reset()
    sweeper.sweep_stuck_messages(now=timezone.now() + timedelta(hours=1))
    assert ollama_server.count("chat") == 1, "the answer is not generated twice"
    assert line_api.delivered_texts() == ["echo: lost task"]


def test_a_message_out_of_attempts_is_failed(stored_but_not_queued, line_api, settings):
    Message.objects.filter(pk=stored_but_not_queued.pk).update(
        status=Status.GENERATING, attempts=settings.LINEBOT["MAX_ATTEMPTS"]
    )
    result = sweeper.sweep_stuck_messages(now=timezone.now() + timedelta(hours=1))
    assert (result.requeued, result.failed) == (0, 1)
    message = Message.objects.get(pk=stored_but_not_queued.pk)
    assert message.status == Status.FAILED and "Gave up" in message.error
    assert line_api.delivered == []
