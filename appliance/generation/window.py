"""History windowing: drop the oldest whole turns until prompt + answer reserve fits the context.

A turn is a user message and the assistant answer that follows it. The system prompt is always kept,
the newest user message is always kept, and the window never starts with an assistant message (a
vendor demo bug). When even the system prompt plus the new message does not fit, the request is
refused with a clear error rather than silently truncated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from appliance.errors import ContextOverflow
from appliance.generation.templates import ChatTemplate
from appliance.generation.types import Message

__all__ = ["Window", "fit_history", "refuse_unfittable", "split_turns"]

TokenBound = Callable[[str], int]  # a lower bound of a text's token count (ChatTokenizer.min_tokens)


@dataclass(frozen=True)
class Window:
    messages: tuple[Message, ...]
    prompt_ids: tuple[int, ...]
    dropped_turns: int


def split_turns(messages: Sequence[Message]) -> tuple[Message | None, list[list[Message]]]:
    """(system message or None, turns); each turn starts with a user message."""
    system = messages[0] if messages and messages[0].role == "system" else None
    turns: list[list[Message]] = []
    for m in messages[1:] if system else messages:
        if m.role == "user" or not turns:
            turns.append([m])
        else:
            turns[-1].append(m)
    return system, turns


def refuse_unfittable(
    messages: Sequence[Message], bound: TokenBound, *, max_seq_len: int, reserve: int
) -> None:
    """ContextOverflow when the system prompt and the new message cannot fit even by the lower bound:
    one UTF-8 encode per message, so a megabyte prompt is refused without tokenizing it."""
    system, turns = split_turns(messages)
    kept = [*([system] if system else []), *(turns[-1] if turns else [])]
    need = sum(bound(m.content) for m in kept)
    if need > max_seq_len - reserve:
        size = sum(len(m.content.encode("utf-8", "surrogatepass")) for m in kept)
        raise ContextOverflow(
            f"the new message needs at least {need} tokens ({size} bytes of text), and {reserve} more are "
            f"reserved for the answer, but the model's context holds {max_seq_len}",
            hint="shorten the message or the system prompt, or lower max_tokens",
        )


def fit_history(
    messages: Sequence[Message],
    template: ChatTemplate,
    *,
    max_seq_len: int,
    reserve: int,
    bound: TokenBound | None = None,
) -> Window:
    """Keep the newest turns whose rendered prompt leaves ``reserve`` positions for the answer.

    ``bound`` (a token-count lower bound) lets old turns that cannot fit be dropped without rendering them.
    """
    system, turns = split_turns(messages)
    if not template.multi_turn:
        turns = turns[-1:]
    budget = max_seq_len - reserve
    head = [system] if system else []
    lo, hi = 0, len(turns) - 1
    if bound is not None:  # skip the oldest turns while even the lower bound of what is left is too long
        suffix = sum(bound(m.content) for m in head) + sum(bound(m.content) for t in turns for m in t)
        while lo < hi and suffix > budget:
            suffix -= sum(bound(m.content) for m in turns[lo])
            lo += 1
    # Binary search over how many of the oldest turns to drop: the prompt shrinks as more are dropped.
    best: tuple[int, list[int]] | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        ids = template.render([*head, *(m for t in turns[mid:] for m in t)])
        if len(ids) <= budget:
            best, hi = (mid, ids), mid - 1
        else:
            lo = mid + 1
    if best is None:
        last = template.render([*head, *turns[-1]])
        raise ContextOverflow(
            f"the new message needs {len(last)} tokens (with the system prompt and template), and "
            f"{reserve} more are reserved for the answer, but the model's context holds {max_seq_len}",
            hint="shorten the message or the system prompt, or lower max_tokens",
        )
    dropped, ids = best
    kept = tuple([*head, *(m for t in turns[dropped:] for m in t)])
    return Window(kept, tuple(ids), dropped)
