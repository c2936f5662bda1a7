"""What a model is sent: one prompt builder for the reply pipeline and the playground."""
from .backends import Turn
from .models import SamplingPreset

_ROLE_NAMES = {"user": "user", "assistant": "assistant", "使用者": "user", "助理": "assistant"}


def build_prompt(*, preset: SamplingPreset, conversation: list[Turn]) -> list[Turn]:
    """The preset's system prompt, then the last turn and up to `history_turns` before it."""
    system = [Turn("system", preset.system_prompt)] if preset.system_prompt.strip() else []
    return system + conversation[-(preset.history_turns + 1):]


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
