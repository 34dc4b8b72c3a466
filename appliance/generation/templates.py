"""Chat templates: messages -> prompt token ids, and the stop ids that end an answer.

- ``tokenizer``: the tokenizer's own Jinja ``chat_template`` (Qwen1.5/Qwen2/Llama/SmolLM ...), rendered
  the way transformers renders it (sandboxed, trim_blocks, lstrip_blocks).
- ``chatml``: Qwen-7B/1.8B-Chat (tiktoken tokenizer, no chat_template): ChatML built by hand; stop
  ``<|im_end|>`` (151645) and ``<|endoftext|>``. The tiktoken tokenizer has no eos_token.
- ``baichuan2``: user turns behind ``<reserved_106>`` (195), assistant turns behind ``<reserved_107>``
  (196), text plain, no bos; the prompt ends with 196; stop ``</s>`` (2).
- ``wizardcoder``: the Alpaca prompt around the last instruction (single turn); stop ``<|endoftext|>`` (0).

See sophgo-facts.md section 6. The vendor demos' template bugs (user turn appended twice, history
that starts with an assistant turn) cannot happen here: windowing works on whole turns (window.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NoReturn

from appliance.errors import InvalidRequest, ModelFormatError
from appliance.generation.control_tokens import ContentShield, control_pattern
from appliance.generation.tokenizer import ChatTokenizer
from appliance.generation.types import Message

__all__ = ["TEMPLATE_NAMES", "ChatTemplate", "make_template"]

QWEN_DEFAULT_SYSTEM = "You are a helpful assistant."
BAICHUAN2_USER_ID = 195
BAICHUAN2_ASSISTANT_ID = 196
BAICHUAN2_EOS_ID = 2
WIZARDCODER_EOS_ID = 0
ALPACA_PREAMBLE = "Below is an instruction that describes a task. Write a response that appropriately completes the request."


@dataclass(frozen=True)
class ChatTemplate:
    """Renders messages to prompt ids; knows the ids that stop an answer."""

    name: str
    render: Callable[[Sequence[Message]], list[int]]
    stop_ids: frozenset[int]
    multi_turn: bool = True
    # messages + tool definitions -> prompt ids; None: the template has no place for tools
    render_tools: Callable[[Sequence[Message], list[dict[str, Any]]], list[int]] | None = None

    def with_tools(self, tools: list[dict[str, Any]]) -> ChatTemplate:
        """This template rendering ``tools`` into every prompt (InvalidRequest when it cannot)."""
        if self.render_tools is None:
            raise InvalidRequest(
                "tools: this model's chat template does not render tool definitions",
                hint="omit 'tools', or serve a model whose template supports them (Qwen2/2.5)",
            )
        render_tools = self.render_tools
        return replace(self, render=lambda messages: render_tools(messages, tools))


def _raise(message: str) -> NoReturn:
    raise InvalidRequest(f"the model's chat template refused the conversation: {message}")


def _jinja_template(tok: ChatTokenizer, default_system: str | None) -> ChatTemplate:
    from jinja2 import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    if not tok.chat_template:
        raise ModelFormatError(
            f"the tokenizer in {tok.source} has no chat_template",
            hint="set 'template' in the model manifest to chatml, baichuan2 or wizardcoder",
        )
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        compiled = env.from_string(tok.chat_template)
    except TemplateError as exc:
        raise ModelFormatError(f"the chat_template in {tok.source} does not compile: {exc}") from None

    controls = control_pattern(tok)

    def text(messages: Sequence[Message], shield: ContentShield, tools: list[dict[str, Any]] | None) -> str:
        msgs: list[dict[str, Any]] = [_message_dict(m, shield) for m in messages]
        if default_system and msgs[0]["role"] != "system":
            msgs.insert(0, {"role": "system", "content": default_system})
        extra = {"tools": tools} if tools else {}
        try:
            return compiled.render(
                messages=msgs,
                add_generation_prompt=True,
                bos_token=tok.bos_token or "",
                eos_token=tok.eos_token or "",
                **extra,
            )
        except TemplateError as exc:
            raise InvalidRequest(f"the model's chat template failed: {exc}") from None

    def render(messages: Sequence[Message]) -> list[int]:
        shield = ContentShield(tok, controls)  # content is text: only the template makes control tokens
        return shield.encode(text(messages, shield, None))

    def render_tools(messages: Sequence[Message], tools: list[dict[str, Any]]) -> list[int]:
        shield = ContentShield(tok, controls)
        return shield.encode(text(messages, shield, tools))

    # a template supports tools when a tool given to it shows up in the prompt (Qwen2/2.5's do)
    probe = [{"type": "function", "function": {"name": _PROBE_TOOL, "description": "", "parameters": {}}}]
    try:
        supports = _PROBE_TOOL in text([Message("user", "x")], ContentShield(tok, controls), probe)
    except InvalidRequest:
        supports = False
    return ChatTemplate("tokenizer", render, tok.eos_ids, render_tools=render_tools if supports else None)


_PROBE_TOOL = "llm_tpu_probe_tool"


def _message_dict(m: Message, shield: ContentShield) -> dict[str, Any]:
    """A message as chat templates take it (tool calls with their arguments as objects, as HF passes them)."""
    out: dict[str, Any] = {"role": m.role, "content": shield.hide(m.content)}
    if m.tool_calls:
        out["tool_calls"] = [
            {"type": "function", "function": {"name": c.name, "arguments": json.loads(c.arguments)}}
            for c in m.tool_calls
        ]
    return out


def _chatml_template(tok: ChatTokenizer, default_system: str | None) -> ChatTemplate:
    im_start, im_end = tok.token_to_id("<|im_start|>"), tok.token_to_id("<|im_end|>")
    if im_start is None or im_end is None:
        raise ModelFormatError(f"the tokenizer in {tok.source} has no <|im_start|>/<|im_end|> tokens")
    newline = tok.encode("\n")
    system_text = default_system if default_system is not None else QWEN_DEFAULT_SYSTEM
    controls = control_pattern(tok)

    def render(messages: Sequence[Message]) -> list[int]:
        shield = ContentShield(tok, controls)
        msgs = list(messages)
        if msgs[0].role != "system":
            msgs.insert(0, Message("system", system_text))
        ids: list[int] = []
        for m in msgs:
            ids += [im_start, *shield.encode_text(f"{m.role}\n{m.content}"), im_end, *newline]
        return [*ids, im_start, *tok.encode("assistant\n")]

    stops = {im_end} | set(tok.eos_ids)
    if (eot := tok.token_to_id("<|endoftext|>")) is not None:
        stops.add(eot)
    return ChatTemplate("chatml", render, frozenset(stops))


def _baichuan2_template(tok: ChatTokenizer, default_system: str | None) -> ChatTemplate:
    # The ids by name where the tokenizer has the pieces (Baichuan2's tokenizer.model does); 195/196/2
    # are Baichuan2's documented ids for tokenizers that do not name them.
    user_id = tok.token_to_id("<reserved_106>") or BAICHUAN2_USER_ID
    assistant_id = tok.token_to_id("<reserved_107>") or BAICHUAN2_ASSISTANT_ID
    eos_id = tok.token_to_id("</s>")
    controls = control_pattern(tok)

    def render(messages: Sequence[Message]) -> list[int]:
        shield = ContentShield(tok, controls)
        ids: list[int] = []
        system = messages[0].content if messages[0].role == "system" else default_system
        if system:
            ids += shield.encode_text(system)
        for m in messages:
            if m.role == "user":
                ids += [user_id, *shield.encode_text(m.content)]
            elif m.role == "assistant":
                ids += [assistant_id, *shield.encode_text(m.content)]
        return [*ids, assistant_id]

    return ChatTemplate("baichuan2", render, frozenset({BAICHUAN2_EOS_ID if eos_id is None else eos_id}))


def _wizardcoder_template(tok: ChatTokenizer, default_system: str | None) -> ChatTemplate:
    preamble = default_system or ALPACA_PREAMBLE
    controls = control_pattern(tok)

    def render(messages: Sequence[Message]) -> list[int]:
        shield = ContentShield(tok, controls)
        question = shield.hide(messages[-1].content)
        return shield.encode(f"{preamble}\n\n### Instruction:\n{question}\n\n### Response:")

    eot = tok.token_to_id("<|endoftext|>")
    stop = WIZARDCODER_EOS_ID if eot is None else eot
    return ChatTemplate("wizardcoder", render, frozenset({stop}), multi_turn=False)


_BUILDERS: dict[str, Callable[[ChatTokenizer, str | None], ChatTemplate]] = {
    "tokenizer": _jinja_template,
    "chatml": _chatml_template,
    "baichuan2": _baichuan2_template,
    "wizardcoder": _wizardcoder_template,
}
# The names a manifest may give as its template (the one list: manifests take it from here).
TEMPLATE_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def make_template(name: str, tok: ChatTokenizer, *, default_system: str | None = None) -> ChatTemplate:
    """Build the named template (``tokenizer``, ``chatml``, ``baichuan2``, ``wizardcoder``)."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ModelFormatError(
            f"unknown chat template {name!r}", hint=f"use one of {', '.join(_BUILDERS)}"
        ) from None
    return builder(tok, default_system)
