"""django-q2 entry points: thin wrappers over services (their paths are in `queue`)."""
from . import answering, engine, notices, profiles, retention, sweeper
from .simulator import compare


def answer_message(message_id: int, chat_id: int | None = None) -> None:
    answering.answer_message(message_id=message_id, chat_id=chat_id)


def send_notice(message_id: int) -> None:
    notices.send_notice(message_id=message_id)


# Names are fetched in an answering thread: the worker's task thread only passes work on.
def refresh_chat_profile(chat_id: int) -> None:
    engine.in_background(lambda: profiles.refresh_chat_profile(chat_id=chat_id))


def refresh_member_profile(member_id: int) -> None:
    engine.in_background(lambda: profiles.refresh_member_profile(member_id=member_id))


def sweep_stuck_messages() -> str:
    result = sweeper.sweep_stuck_messages()
    return f"requeued {result.requeued}, failed {result.failed}"


def purge_expired() -> str:
    report = retention.purge_expired(actor="schedule")
    return f"deleted {report.messages} messages in {len(report.chats)} chats"


def compare_presets(comparison_id: int) -> None:
    compare.run_comparison(comparison_id=comparison_id)
