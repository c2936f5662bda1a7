"""What a model is sent: one prompt builder for the reply pipeline and the playground."""
from dataclasses import replace

from .backends import Turn
from .models import SamplingPreset

_ROLE_NAMES = {"user": "user", "assistant": "assistant", "使用者": "user", "助理": "assistant"}


GROUP_LINE = ("This is a group chat: each user message starts with its speaker's name and a colon. "
              "Answer the last message, which is from {speaker}.")
GROUP_LINE_SEVERAL = ("This is a group chat: each user message starts with its speaker's name and a colon. "
                      "Answer the last {count} messages together, from {speakers}.")
SEVERAL_LINE = "Answer the last {count} messages together, in one reply."


def build_prompt(*, preset: SamplingPreset, conversation: list[Turn], speaker: str | None = None,
                 answering: int = 1, speakers: list[str] | None = None) -> list[Turn]:
    """The preset's system prompt, then the last turn and up to `history_turns` before it.

    `speaker`, in a group chat, is the name of whoever wrote the last turn: the system
    prompt then says it is a group and whom to answer. `answering` > 1: the last messages
    came while the bot was answering and get one answer together (`speakers` wrote them).
    Of earlier turns' images, only the preset's `history_images` newest are kept (the answered
    turn's own images all go); a backend
    that reads none gets `without_images()` of the prompt.
    """
    system_prompt = preset.system_prompt if preset.system_prompt.strip() else ""
    line = ""
    if speaker is not None and answering > 1:
        line = GROUP_LINE_SEVERAL.format(count=answering, speakers=", ".join(speakers or [speaker]))
    elif speaker is not None:
        line = GROUP_LINE.format(speaker=speaker)
    elif answering > 1:
        line = SEVERAL_LINE.format(count=answering)
    if line:
        system_prompt = f"{system_prompt.rstrip()}\n\n{line}" if system_prompt else line
    system = [Turn("system", system_prompt)] if system_prompt else []
    window = conversation[-(preset.history_turns + max(answering, 1)):]
    # The turn's own images all go (every photo of an image set); only earlier ones are capped.
    current = max(answering, 1)
    return system + newest_images(window[:-current], keep=preset.history_images) + window[-current:]


def newest_images(turns: list[Turn], *, keep: int) -> list[Turn]:
    """`turns` with only their `keep` newest images (the last of a turn's being its newest)."""
    room, kept = keep, []
    for turn in reversed(turns):
        if turn.images:
            taken = turn.images[max(0, len(turn.images) - room):]
            room -= len(taken)
            turn = replace(turn, images=taken)
        kept.append(turn)
    return kept[::-1]


def without_images(turns: list[Turn]) -> list[Turn]:
    return [replace(turn, images=()) if turn.images else turn for turn in turns]


def parse_transcript(text: str) -> list[Turn]:
    """Typed text as turns: plain text is one user turn; `User:`/`Assistant:` lines make several."""
    turns: list[Turn] = []
    for line in text.strip().splitlines():
        head, _, rest = line.partition(":")
        role = _ROLE_NAMES.get(head.strip().lower())
        if role and rest.strip():
            turns.append(Turn(role, rest.strip()))
        elif turns:
            turns[-1] = Turn(turns[-1].role, f"{turns[-1].content}\n{line}")
        else:
            turns.append(Turn("user", line))
    return turns
