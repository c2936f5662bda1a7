"""The answering engine: one answer at a time per chat, in order; backend slots; many in flight."""
import multiprocessing
import os
import signal
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from conversations import answering, claims, engine, sweeper
from conversations.models import Chat, Direction, Message, Status
from models_registry import concurrency
from models_registry.models import GenerationSlot, ModelBackend, SamplingPreset
from tests.fakes import webhooks as ev

pytestmark = pytest.mark.django_db


def inbound(text: str) -> Message:
    return Message.objects.get(direction=Direction.IN, text=text)


def hold_chat(message: Message) -> claims.Turn:
    """A worker takes up `message`'s chat and is still generating (the turn is not run)."""
    outcome, turn = claims.claim_turn(chat_id=message.chat_id)
    assert outcome == claims.Outcome.CLAIMED
    return turn


@pytest.fixture
def first_message_held(webhook, monkeypatch):
    """The first message of a 1:1 chat stored, its chat claimed by a worker still generating."""
    monkeypatch.setattr("conversations.ingest.enqueue_after_commit", lambda *args: None)
    webhook.post(ev.text_message_event("first"))
    monkeypatch.undo()
    return hold_chat(inbound("first"))


def test_messages_that_come_while_the_bot_answers_wait_then_get_one_answer_together(
        first_message_held, webhook, line_api, ollama_server):
    second_token, third_token = ev.new_reply_token(), ev.new_reply_token()
    webhook.post(ev.text_message_event("second", reply_token=second_token))
    webhook.post(ev.text_message_event("third", reply_token=third_token))
    # Their tasks ran and found the chat busy: nothing generated, both still pending.
    assert ollama_server.count("chat") == 0
    assert {inbound("second").status, inbound("third").status} == {Status.PENDING}

    answering._take_turn(first_message_held)  # the first answer ends; what waited goes next

    assert line_api.delivered_texts() == ["echo: first", "echo: third"]
    assert ollama_server.count("chat") == 2
    prompt = ollama_server.last("chat").json["messages"]
    assert [turn["content"] for turn in prompt if turn["role"] != "system"][-4:] == [
        "first", "echo: first", "second", "third"]
    assert "Answer the last 2 messages together" in prompt[0]["content"]
    # The newest reply token answers; the older one is left unused.
    assert line_api.requests_for("reply")[-1].json["replyToken"] == third_token
    answer = Message.objects.get(direction=Direction.OUT, text="echo: third")
    assert answer.reply_to_id == inbound("third").pk
    assert {inbound("second").status, inbound("third").status} == {Status.REPLIED}
    assert Chat.objects.get().answering_claim == ""


def test_a_command_in_the_queue_is_answered_on_its_own_in_its_place(first_message_held, webhook, line_api):
    webhook.post(ev.text_message_event("second"))
    webhook.post(ev.text_message_event("/help"))
    webhook.post(ev.text_message_event("fourth"))
    answering._take_turn(first_message_held)
    texts = line_api.delivered_texts()
    assert texts[:2] == ["echo: first", "echo: second"]
    assert texts[-1] == "echo: fourth"
    assert len(texts) == 4 and "/reset" in texts[2]  # the help text, between the two answers


def test_a_claim_whose_lease_ran_out_does_not_hold_the_chat(first_message_held, webhook, line_api, settings):
    Chat.objects.update(answering_until=timezone.now() - timedelta(seconds=1))
    webhook.post(ev.text_message_event("second"))
    assert line_api.delivered_texts() == ["echo: second"]


def test_the_first_run_can_finish_after_a_lost_claim_without_answering_twice(first_message_held, webhook,
                                                                              line_api, ollama_server):
    # The holder was presumed dead and the message given back; its own run still ends well.
    answering._take_turn(first_message_held)
    sweeper.sweep_stuck_messages(now=timezone.now() + timedelta(hours=1))
    assert line_api.delivered_texts() == ["echo: first"]
    assert ollama_server.count("chat") == 1


def test_a_backend_at_its_limit_makes_the_next_chat_wait_in_the_queue(webhook, line_api, backend, monkeypatch):
    ModelBackend.objects.filter(pk=backend.pk).update(max_concurrency=1)
    monkeypatch.setattr("conversations.ingest.enqueue_after_commit", lambda *args: None)
    webhook.post(ev.text_message_event("mine", user_id="U" + "1" * 32))
    monkeypatch.undo()
    held = hold_chat(inbound("mine"))
    assert concurrency.in_flight() == {backend.pk: 1}

    webhook.post(ev.text_message_event("yours", user_id="U" + "2" * 32))
    waiting = Chat.objects.get(pk=inbound("yours").chat_id)
    assert (waiting.waiting_for_id, inbound("yours").status, line_api.delivered) == (backend.pk, Status.PENDING, [])

    # The slot frees once "mine" is generated (before it is delivered): the waiting chat is
    # queued then, and here, where tasks run inline, answered first.
    answering._take_turn(held)
    assert sorted(line_api.delivered_texts()) == ["echo: mine", "echo: yours"]
    assert Chat.objects.get(pk=waiting.pk).waiting_for_id is None
    assert concurrency.in_flight() == {}


def test_a_fallback_answer_counts_on_the_fallback_backend(first_message_held, preset, ollama_server):
    fallback = ModelBackend.objects.create(name="Other", base_url=ollama_server.url, model="llama3.2:3b")
    concurrency.move_slot(holder=first_message_held.claim, backend=fallback)
    assert concurrency.in_flight() == {fallback.pk: 1}


def test_commands_take_no_backend_slot(webhook, monkeypatch):
    monkeypatch.setattr("conversations.ingest.enqueue_after_commit", lambda *args: None)
    webhook.post(ev.text_message_event("/help"))
    turn = hold_chat(inbound("/help"))
    assert turn.backend_id is None and not GenerationSlot.objects.exists()


def test_the_lead_is_cut_at_an_answer_a_dead_run_already_stored(first_message_held, webhook, line_api, ollama_server):
    """A run that stored its answer and died: the rerun sends that answer for its messages, and
    what came later gets its own turn."""
    answer = Message.objects.create(chat_id=first_message_held.chat_id, direction=Direction.OUT, text="stored",
                                    reply_to_id=first_message_held.lead_id, event_at=timezone.now(),
                                    status=Status.PENDING, status_changed_at=timezone.now(),
                                    backend_id=first_message_held.backend_id)
    Chat.objects.update(answering_claim="", answering_until=None)
    Message.objects.filter(pk=first_message_held.lead_id).update(status=Status.PENDING)
    webhook.post(ev.text_message_event("later"))
    assert line_api.delivered_texts() == ["stored", "echo: later"]
    assert ollama_server.count("chat") == 1
    assert Message.objects.get(pk=answer.pk).status == Status.REPLIED


@pytest.mark.django_db(transaction=True)
def test_many_answers_are_in_flight_at_once_in_one_process(webhook, line_api, ollama_server, backend, monkeypatch):
    ModelBackend.objects.filter(pk=backend.pk).update(max_concurrency=8)
    monkeypatch.setattr("conversations.ingest.enqueue_after_commit", lambda *args: None)
    for number in range(8):
        webhook.post(ev.text_message_event(f"q{number}", user_id=f"U{number:032d}"))
    monkeypatch.undo()
    ollama_server.set_delay("chat", 0.6)
    pool = engine.Engine(threads=8, renew=lambda held: claims.renew_claims(claims=held), heartbeat_every=0.2)
    for chat in Chat.objects.all():
        with pool.seat() as seat:
            outcome, turn = claims.claim_turn(chat_id=chat.pk)
            seat.run(lambda turn=turn: answering._take_turn(turn), claim=turn.claim)
    assert pool.in_flight == 8
    time.sleep(0.3)
    assert concurrency.in_flight() == {backend.pk: 8}
    assert pool.drain(timeout=10)
    assert sorted(line_api.delivered_texts()) == sorted(f"echo: q{n}" for n in range(8))
    assert ollama_server.concurrency()["chat"]["peak"] == 8, "the model had all eight at once"
    assert concurrency.in_flight() == {}


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_keeps_a_long_answer_claimed(webhook, ollama_server, monkeypatch, settings):
    settings.LINEBOT = {**settings.LINEBOT, "CLAIM_LEASE": 0.6}
    monkeypatch.setattr("conversations.ingest.enqueue_after_commit", lambda *args: None)
    webhook.post(ev.text_message_event("slow"))
    ollama_server.set_delay("chat", 1.5)
    pool = engine.Engine(threads=2, renew=lambda held: claims.renew_claims(claims=held), heartbeat_every=0.2)
    with pool.seat() as seat:
        outcome, turn = claims.claim_turn(chat_id=inbound("slow").chat_id)
        seat.run(lambda: answering._take_turn(turn), claim=turn.claim)
    time.sleep(1.0)  # past the first lease
    assert Chat.objects.get().answering_until > timezone.now()
    assert claims.claim_turn(chat_id=inbound("slow").chat_id)[0] == claims.Outcome.BUSY
    assert pool.drain(timeout=10)


def test_the_worker_reads_presets_once_and_an_edit_counts_at_once(webhook, ollama_server, preset):
    from django.db import connection as default_connection
    from django.test.utils import CaptureQueriesContext

    from conversations import selectors

    webhook.post(ev.text_message_event("first"))
    chat = Chat.objects.select_related("channel").get()
    with CaptureQueriesContext(default_connection) as queries:
        assert selectors.preset_for_answer(chat=chat).pk == preset.pk
    assert not [q for q in queries if "samplingpreset" in q["sql"]], "the first answer's read is reused"

    preset.system_prompt = "You are a pirate."
    preset.save()  # in this process: forgotten at once
    webhook.post(ev.text_message_event("second"))
    assert ollama_server.last("chat").json["messages"][0]["content"].startswith("You are a pirate.")

    # Saved by another process (no signal here): this one keeps its copy until the cache expires.
    SamplingPreset.objects.filter(pk=preset.pk).update(system_prompt="You are a poet.")
    assert selectors.preset_for_answer(chat=chat).system_prompt == "You are a pirate."
    assert selectors._presets.seconds == selectors.SETTINGS_CACHE_SECONDS == 10.0


def _handed(pool: engine.Engine, work) -> None:
    with pool.seat() as seat:
        seat.run(work)


def test_threads_start_only_while_few_have_python_to_run():
    pool = engine.Engine(threads=6, renew=lambda held: None, heartbeat_every=60, running=2)
    names, lock = set(), threading.Lock()

    def work() -> None:
        with lock:
            names.add(threading.current_thread().name)
        time.sleep(0.02)  # running Python, never waiting on the network

    for _ in range(12):
        _handed(pool, work)
    assert pool.drain(timeout=5)
    assert len(names) == 2, "two threads took all the work in turn"


@pytest.mark.parametrize("wait", ["on the network", "before a retry"])
def test_a_thread_waiting_makes_room_for_another(wait, monkeypatch):
    pool = engine.Engine(threads=6, renew=lambda held: None, heartbeat_every=60, running=2)
    lock, release, never = threading.Lock(), threading.Event(), threading.Event()
    state = {"started": 0, "waiting": 0}

    def waited(seconds: float | None = None) -> None:
        with lock:
            state["waiting"] += 1
        release.wait(5)

    # engine.sleep's time.sleep stands for a retry's delay (the threads' own pauses use `never`).
    monkeypatch.setattr(engine.time, "sleep", waited)

    def work() -> None:
        with lock:
            state["started"] += 1
        never.wait(0.2)  # running Python
        if wait == "on the network":
            with engine.waiting():  # a model's answer, say
                waited()
        else:
            engine.sleep(2.0)

    for _ in range(6):
        _handed(pool, work)
    never.wait(0.1)
    assert state["started"] == 2, "the others wait in the queue while two run"
    deadline = time.monotonic() + 5
    while state["waiting"] < 6 and time.monotonic() < deadline:
        never.wait(0.01)
    assert state["waiting"] == 6, "each thread waiting let the next one start"
    release.set()
    assert pool.drain(timeout=5)


def test_a_wait_inside_a_wait_counts_once():
    pool = engine.Engine(threads=3, renew=lambda held: None, heartbeat_every=60, running=1)
    inside, release, started = threading.Event(), threading.Event(), []

    def nested() -> None:
        with engine.waiting(), engine.waiting():  # a LINE call inside a turn's media, say
            inside.set()
            release.wait(5)

    _handed(pool, nested)
    assert inside.wait(5)
    _handed(pool, lambda: (started.append("second"), release.wait(5)))  # runs Python until released
    _handed(pool, lambda: started.append("third"))
    release.wait(0.3)
    assert started == ["second"], "one thread waiting made room for one, not two"
    release.set()
    assert pool.drain(timeout=5)
    assert started == ["second", "third"]


def _claim_in_child(chat_id: int, barrier, results) -> None:
    try:
        connections.close_all()
        barrier.wait(timeout=10)
        outcome, turn = claims.claim_turn(chat_id=chat_id)
        results.put(outcome.value)
        connections.close_all()
    except BaseException as exc:  # reported to the test, which would otherwise see only a timeout
        results.put(f"error: {exc!r}")
    finally:
        os._exit(0)


@pytest.mark.django_db(transaction=True)
def test_two_workers_taking_up_the_same_message_at_the_same_moment_claim_it_once(webhook, monkeypatch):
    monkeypatch.setattr("conversations.ingest.enqueue_after_commit", lambda *args: None)
    webhook.post(ev.text_message_event("contested"))
    chat_id = inbound("contested").chat_id
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.SimpleQueue()
    connections.close_all()
    workers = [context.Process(target=_claim_in_child, args=(chat_id, barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=20)
    outcomes = sorted(results.get() for _ in workers)
    assert outcomes == ["busy", "claimed"]
    message = inbound("contested")
    assert (message.status, message.attempts) == (Status.GENERATING, 1)


@pytest.mark.django_db(transaction=True)
def test_a_sweep_racing_a_worker_that_just_finished_does_not_give_its_message_back(
        webhook, line_api, monkeypatch, settings):
    """The window the sweeper's UPDATE closes: it read the message as lost (its claim had run
    out), then the slow worker finished before the UPDATE; the message stays answered."""
    settings.LINEBOT = {**settings.LINEBOT, "CLAIM_LEASE": 0.2}
    monkeypatch.setattr("conversations.ingest.enqueue_after_commit", lambda *args: None)
    webhook.post(ev.text_message_event("slow worker"))
    monkeypatch.undo()
    turn = hold_chat(inbound("slow worker"))
    time.sleep(0.5)  # the lease runs out: the sweeper will think the worker dead

    def finish_first(execute, sql, params, many, context):
        if sql.startswith('UPDATE "conversations_message" SET "status"') and not finished.is_set():
            # The worker finishes on its own connection, between the sweeper's read and write.
            worker = threading.Thread(target=lambda: (answering._take_turn(turn), connections.close_all()))
            worker.start()
            worker.join()
            finished.set()
        return execute(sql, params, many, context)

    finished = threading.Event()
    with connection.execute_wrapper(finish_first):
        sweeper.sweep_stuck_messages()
    assert finished.is_set()
    assert line_api.delivered_texts() == ["echo: slow worker"]
    message = inbound("slow worker")
    assert (message.status, message.attempts) == (Status.REPLIED, 1)


def _answer_in_child(message_id: int) -> None:
    connections.close_all()
    answering.answer_message(message_id=message_id)
    os._exit(0)


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_after_line_took_its_reply_is_not_answered_again_by_push(
        webhook, line_api, monkeypatch, settings):
    settings.LINEBOT = {**settings.LINEBOT, "CLAIM_LEASE": 0.5}
    monkeypatch.setattr("conversations.ingest.enqueue_after_commit", lambda *args: None)
    webhook.post(ev.text_message_event("once only"))
    monkeypatch.undo()
    message_id = inbound("once only").pk
    line_api.hold_response("reply", 10)  # LINE takes the reply; its answer never reaches the worker
    connections.close_all()
    worker = multiprocessing.get_context("fork").Process(target=_answer_in_child, args=(message_id,))
    worker.start()
    line_api.wait_for(lambda fake: fake.delivered, timeout=20)
    os.kill(worker.pid, signal.SIGKILL)
    worker.join(timeout=5)
    line_api.hold_response("reply", 0)
    time.sleep(0.6)  # the dead worker's claim runs out

    sweeper.sweep_stuck_messages(now=timezone.now() + timedelta(seconds=1))

    assert line_api.delivered_texts() == ["echo: once only"]
    assert line_api.count("push") == 0
    message = Message.objects.get(pk=message_id)
    assert (message.status, message.attempts) == (Status.REPLIED, 2)
    assert Message.objects.get(reply_to_id=message_id).reply_attempted


def test_a_refused_reply_after_a_5xx_counts_as_delivered_not_pushed(webhook, line_api):
    """LINE answered 500 yet took the reply: the retry's token is refused as used."""
    line_api.fail_next("reply", 500)
    token = ev.new_reply_token()
    line_api.expire_reply_token(token)  # LINE refuses it from now on: the 500'd call used it
    webhook.post(ev.text_message_event("after a 500", reply_token=token))
    assert line_api.count("push") == 0
    assert inbound("after a 500").status == Status.REPLIED
