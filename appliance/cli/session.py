"""Where `ask`, `chat --plain` and `bench` get their answers: one TPU, one owner.

The running service owns the TPU, so by default these commands talk to it (the system socket, then
the user socket; --socket or $LLM_TPU_SOCKET to choose). Only --local, or no service at all, loads a
model in this process. Both kinds of :class:`ChatTarget` stream the same generation events, so a
command does not care which one it has.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from appliance.cli.options import config_from_args
from appliance.client import ServiceClient, find_socket
from appliance.config.schema import GenerationDefaults
from appliance.errors import ModelNotFound, ServiceUnavailable
from appliance.generation.types import GenerationEvent, Message, ollama_options, validate_messages
from appliance.models.loader import LoadedModel, load_model

__all__ = ["ChatTarget", "LocalTarget", "ServiceTarget", "add_target_options", "open_target"]


class ChatTarget(Protocol):
    name: str  # the model
    engine: str
    where: str  # for messages: "the service at PATH" or "this process"

    def events(
        self,
        messages: Sequence[Message],
        requested: Mapping[str, Any],
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[GenerationEvent]:
        """One answer: TextDelta / Notice events, then one Finished. ``requested`` holds the
        GenerationOptions fields the user set; the model's defaults fill in the rest."""
        ...

    def close(self) -> None: ...


class LocalTarget:
    """A model loaded in this process (--local, or no service is running)."""

    def __init__(self, loaded: LoadedModel, generation: GenerationDefaults) -> None:
        self.loaded = loaded
        self.defaults = loaded.defaults(generation)
        self.name = loaded.name
        self.engine = loaded.engine.info.kind
        self.where = "this process"

    def events(
        self,
        messages: Sequence[Message],
        requested: Mapping[str, Any],
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[GenerationEvent]:
        options = dataclasses.replace(self.defaults, **requested)
        return self.loaded.generator.generate(validate_messages(messages), options, should_stop=should_stop)

    def close(self) -> None:
        self.loaded.close()


class ServiceTarget:
    """The running service, over its socket."""

    def __init__(self, client: ServiceClient, status: Mapping[str, Any], model: str | None) -> None:
        self.client = client
        info = status.get("model") or {}
        self.name = str(info.get("name") or "")
        self.engine = str(info.get("engine") or "")
        self.where = f"the service at {client.where}"
        self.model = model or ""

    def events(
        self,
        messages: Sequence[Message],
        requested: Mapping[str, Any],
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[GenerationEvent]:
        wire = [{"role": m.role, "content": m.content} for m in messages]
        try:
            for event in self.client.chat_events(wire, model=self.model, options=ollama_options(requested)):
                yield event
                if should_stop is not None and should_stop():
                    return  # closing the stream cancels the request on the service
        except ModelNotFound as err:
            raise ModelNotFound(
                err.message,
                hint=f"{err.hint}; or --local loads {self.model!r} in this process "
                "(on a box, stop the service first: it owns the TPU)",
            ) from None

    def close(self) -> None:
        self.client.close()


def add_target_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("service")
    g.add_argument(
        "--socket",
        metavar="PATH",
        help="service socket (default: $LLM_TPU_SOCKET, /run/llm-tpu/llm.sock, or the user-mode socket)",
    )
    g.add_argument(
        "--local",
        action="store_true",
        help="load the model in this process, not through the running service (never on a box whose "
        "TPU the service owns)",
    )


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _local(args: argparse.Namespace, **load: Any) -> LocalTarget:
    config = config_from_args(args)
    return LocalTarget(load_model(config.model, **load), config.generation)


def open_target(args: argparse.Namespace, *, wait_s: float = 900.0, **load: Any) -> ChatTarget:
    """The running service, else (or with --local) the model loaded here. ``load`` goes to load_model."""
    if getattr(args, "local", False):
        return _local(args, **load)
    path = find_socket(getattr(args, "socket", None))
    client = ServiceClient.for_socket(path)
    try:
        health = client.health()
    except ServiceUnavailable as err:
        if "permission denied" in err.message:
            raise  # someone else's service owns the TPU: loading a second copy would fight it
        client.close()
        if sys.stdin.isatty():
            _say(f"no service at {path}; loading the model in this process ...")
        return _local(args, **load)
    deadline = time.monotonic() + wait_s
    last = ""
    while health.get("status") != "ok":
        state = str(health.get("status"))
        if state == "failed":
            raise ServiceUnavailable(
                f"the service at {path} could not load its model: {health.get('reason', '')}",
                hint=str(health.get("hint") or "see `llm-tpu status` and the service's log"),
            )
        if time.monotonic() > deadline:
            raise ServiceUnavailable(f"the service at {path} was not ready within {wait_s:.0f} s")
        if state != last:
            _say(f"waiting for the service at {path}: {health.get('reason') or state} ...")
            last = state
        time.sleep(0.5)
        health = client.health()
    if getattr(args, "engine", None):
        _say(f"note: using the service at {path}; --engine is ignored (--local to choose one here)")
    return ServiceTarget(client, client.status(), getattr(args, "model", None))
