"""The generation loop every engine serves: template, window, prefix reuse, sampling, stops, streaming.

One Generator owns one engine and remembers which token ids the engine's KV cache holds. A new
request whose prompt starts with those ids prefills only the rest (the second turn of a conversation
does not pay again for the first). Not thread-safe: the service runs it on one worker thread.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence

from appliance.engine.protocol import DeviceSampling, Engine, StepOutput
from appliance.errors import ContextOverflow, EngineError, InvalidRequest
from appliance.generation.sampling import Sampler
from appliance.generation.structured import GrammarTokenizer, JsonConstraint, refuse_tokenizer
from appliance.generation.templates import ChatTemplate
from appliance.generation.textstream import IncrementalDecoder, StopStringFilter
from appliance.generation.tokenizer import ChatTokenizer
from appliance.generation.types import (
    DoneReason,
    Finished,
    GenerationEvent,
    GenerationOptions,
    Message,
    Notice,
    TextDelta,
    Timings,
)
from appliance.generation.window import Window, fit_history, refuse_unfittable

__all__ = ["PREFILL_CHUNK", "Generator", "common_prefix"]


PREFILL_CHUNK = 128  # tokens per prefill call on engines with incremental prefill


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Generator:
    """Runs chats on one engine."""

    def __init__(
        self,
        engine: Engine,
        tokenizer: ChatTokenizer,
        template: ChatTemplate,
        *,
        load_duration_ns: int = 0,
        prefix_reuse: bool = True,
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.template = template
        self.prefix_reuse = prefix_reuse and engine.capabilities.prefix_reuse
        self._cached: list[int] = []  # ids whose KV the engine holds, in order
        self._pending_load_ns = load_duration_ns
        self._grammar_vocab: GrammarTokenizer | None = None  # built by the first structured request

    @property
    def max_seq_len(self) -> int:
        return self.engine.limits.max_seq_len

    def reset(self) -> None:
        """Forget the cached conversation."""
        self.engine.truncate(0)
        self._cached = []

    def prompt_ids(self, messages: Sequence[Message], options: GenerationOptions) -> list[int]:
        """The token ids the model would see for these messages (after windowing)."""
        return list(self._window(messages, options).prompt_ids)

    def _reserve(self, options: GenerationOptions) -> int:
        if options.reserve_tokens is not None:
            return min(options.reserve_tokens, self.max_seq_len - 1)
        return max(1, min(options.max_new_tokens, self.max_seq_len // 4))

    def _window(self, messages: Sequence[Message], options: GenerationOptions) -> Window:
        if options.raw_prompt:
            return self._raw_window(messages, options)
        template = self.template
        if options.tools is not None:
            template = template.with_tools(json.loads(options.tools))
        return fit_history(
            messages,
            template,
            max_seq_len=self.max_seq_len,
            reserve=self._reserve(options),
            bound=self.tokenizer.min_tokens,
        )

    def take_load_duration(self) -> int:
        """The load still to be charged, now charged to the caller: a request that only loads the model, a
        response, or nobody (the service's start-up load)."""
        load_ns, self._pending_load_ns = self._pending_load_ns, 0
        return load_ns

    def charge_load_duration(self, load_ns: int) -> None:
        """The next response reports ``load_ns`` as its load_duration (a load that request caused)."""
        self._pending_load_ns = load_ns

    def refuse_unsupported(self, options: GenerationOptions, messages: Sequence[Message] = ()) -> None:
        """InvalidRequest naming an option this engine cannot honour (cheap, safe on the event loop)."""
        if self.template.render_tools is None:
            if options.tools is not None:
                self.template.with_tools([])  # raises: the template has no place for tools
            for i, m in enumerate(messages):
                if m.role == "tool" or m.tool_calls:
                    raise InvalidRequest(
                        f"messages[{i}]: tool calls and results need a chat template that renders tools, "
                        "and this model's does not",
                        hint="leave tool messages out of the history for this model",
                    )
        if options.response_schema is not None and not self.engine.capabilities.returns_logits:
            raise InvalidRequest(
                "format / response_format (structured JSON output): this model's engine returns tokens "
                "only (a fused greedy head), so the host cannot mask the logits to the JSON grammar",
                hint="omit it, or serve a bmodel with a logits head (or the host engine)",
            )
        if options.response_schema is not None:
            refuse_tokenizer(self.tokenizer)
        if options.has_additive_penalties and not self.engine.capabilities.returns_logits:
            names = [n for n in ("presence_penalty", "frequency_penalty") if getattr(options, n)]
            raise InvalidRequest(
                f"{' and '.join(names)}: this model's engine returns tokens only (a fused greedy head), so "
                "the host sampler never sees logits to penalize",
                hint="omit them, or serve a bmodel with a logits head (or the host engine)",
            )

    def _constraint(self, options: GenerationOptions) -> JsonConstraint | None:
        if options.response_schema is None:
            return None
        if self._grammar_vocab is None:
            self._grammar_vocab = GrammarTokenizer(
                self.tokenizer, n_vocab=self.engine.limits.vocab_size, stop_ids=self.template.stop_ids
            )
        return JsonConstraint(self._grammar_vocab, options.response_schema)

    def _raw_window(self, messages: Sequence[Message], options: GenerationOptions) -> Window:
        """The one message's text as the whole prompt, no template; nothing can be dropped to fit it."""
        ids = self.tokenizer.encode("".join(m.content for m in messages))
        room = self.max_seq_len - self._reserve(options)
        if not ids:
            raise InvalidRequest("the prompt is empty", hint="send some text in 'prompt'")
        if len(ids) > room:
            raise ContextOverflow(
                f"the prompt has {len(ids)} tokens and {self._reserve(options)} more are reserved for the "
                f"answer, but the model's context holds {self.max_seq_len}",
                hint="shorten the prompt or lower max_tokens",
            )
        return Window(tuple(messages), tuple(ids), 0)

    def refuse_unfittable(self, messages: Sequence[Message], options: GenerationOptions) -> None:
        """Cheap (no tokenizing, safe on the event loop): ContextOverflow for what can never fit."""
        refuse_unfittable(
            messages, self.tokenizer.min_tokens, max_seq_len=self.max_seq_len, reserve=self._reserve(options)
        )

    def _prefill(
        self, ids: list[int], sampling: DeviceSampling | None, should_stop: Callable[[], bool] | None
    ) -> tuple[StepOutput | None, int]:
        """Prefill ``ids``, reusing the cached prefix; returns the output (None when stopped between
        chunks) and the tokens reused. On an engine with incremental prefill a long prompt goes in
        chunks of PREFILL_CHUNK, so that a client leaving or a deadline stops it within one chunk."""
        keep = common_prefix(self._cached, ids) if self.prefix_reuse else 0
        keep = min(keep, len(ids) - 1)  # at least one token must run to get the next-token output
        if keep != self.engine.n_past:
            self.engine.truncate(keep)
        self._cached = ids[:keep]
        done = keep
        if self.engine.capabilities.incremental_prefill:
            while len(ids) - done > PREFILL_CHUNK:
                self.engine.prefill(ids[done : done + PREFILL_CHUNK])
                done += PREFILL_CHUNK
                self._cached = ids[:done]
                if should_stop is not None and should_stop():
                    return None, keep
        out = self.engine.prefill(ids[done:], sampling)
        self._cached = list(ids)
        return out, keep

    def generate(
        self,
        messages: Sequence[Message],
        options: GenerationOptions | None = None,
        *,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[GenerationEvent]:
        """Stream TextDelta / Notice events, then exactly one Finished.

        ``messages`` is a history already checked where it entered (types.validate_messages).
        """
        options = options or GenerationOptions()
        # A bmodel with a greedy_head next to its logits lm_head (the bmrt runner's greedy_on_device)
        # answers a greedy step with a token; penalties and structured output need the logits instead.
        device_greedy = options.needs_logits and getattr(self.engine, "greedy_on_device", False) is True
        if device_greedy:
            self.engine.greedy_on_device = False  # type: ignore[attr-defined]
        try:
            yield from self._generate(messages, options, should_stop)
        finally:
            if device_greedy:
                self.engine.greedy_on_device = True  # type: ignore[attr-defined]

    def _generate(
        self,
        messages: Sequence[Message],
        options: GenerationOptions,
        should_stop: Callable[[], bool] | None,
    ) -> Iterator[GenerationEvent]:
        start = time.perf_counter_ns()
        window = self._window(messages, options)
        if window.dropped_turns:
            yield Notice(
                f"dropped the {window.dropped_turns} oldest turn(s) of the conversation to fit the "
                f"model's context of {self.max_seq_len} tokens"
            )
        prompt = list(window.prompt_ids)
        sampler = Sampler(options, self._constraint(options))
        decoder = IncrementalDecoder(self.tokenizer)
        stops = StopStringFilter(options.stop)
        # the additive penalties and structured output live on the host sampler only: they need the
        # logits every step
        device = (
            self.engine.capabilities.device_sampling and not options.is_greedy and not options.needs_logits
        )
        stop_ids = (
            frozenset() if options.ignore_eos and sampler.constraint is None else self.template.stop_ids
        )
        load_ns = self.take_load_duration()

        def sampling_request() -> DeviceSampling | None:
            if not device:
                return None
            return DeviceSampling(
                temperature=options.temperature,
                top_p=options.top_p,
                top_k=options.top_k,
                repetition_penalty=options.repetition_penalty,
                recent_ids=tuple(sampler.recent(self._cached)),
            )

        def choose(out: StepOutput) -> int:
            if out.token is not None and sampler.constraint is not None:
                raise EngineError(
                    "structured output: the engine chose a token on the device instead of returning logits",
                    hint="omit 'format' / 'response_format' on this model",
                )
            if out.token is not None:
                return out.token
            if out.candidates is not None:
                return sampler.from_candidates(*out.candidates)
            if out.logits is None:
                raise EngineError("the engine returned neither a token nor logits", hint="report this bug")
            return sampler.from_logits(out.logits, self._cached)

        try:
            out, reused = self._prefill(prompt, sampling_request(), should_stop)
        except BaseException:
            self.reset()
            raise
        first_ns = time.perf_counter_ns()
        generated: list[int] = []
        pieces: list[str] = []
        reason: DoneReason | None = None if out is not None else "cancelled"
        try:
            while out is not None:
                token = choose(out)
                if token in stop_ids:
                    reason = "stop"
                    break
                generated.append(token)
                text = stops.feed(decoder.push(token))
                if text:
                    pieces.append(text)
                    yield TextDelta(text, len(generated))
                if stops.stopped:
                    reason = "stop"
                    break
                if len(generated) >= options.max_new_tokens:
                    reason = "length"
                    break
                if self.engine.n_past >= self.max_seq_len:
                    reason = "context"
                    break
                if should_stop is not None and should_stop():
                    reason = "cancelled"
                    break
                out = self.engine.decode(token, sampling_request())
                self._cached.append(token)
        except GeneratorExit:
            raise  # the consumer closed us between steps: the cache is consistent, keep it
        except BaseException:
            self.reset()  # the cache may be mid-step: never trust it again
            raise
        if not stops.stopped:
            tail = stops.feed(decoder.flush())
            if stops.stopped:
                reason = "stop"
            else:
                tail += stops.flush()
            if tail:
                pieces.append(tail)
                yield TextDelta(tail, len(generated))
        assert reason is not None  # every way out of the loop above sets it
        end = time.perf_counter_ns()
        timings = Timings(
            load_duration=load_ns,
            prompt_eval_count=len(prompt) - reused,
            prompt_eval_duration=first_ns - start,
            eval_count=len(generated),
            eval_duration=end - first_ns,
            time_to_first_token=first_ns - start,
            total_duration=end - start + load_ns,
            prompt_tokens=len(prompt),
            reused_tokens=reused,
        )
        yield Finished("".join(pieces), reason, timings, window.dropped_turns, tuple(generated))
