"""Command-line options shared by the commands that generate (ask, chat, bench)."""

from __future__ import annotations

import argparse
from typing import Any

from appliance.engine.options import ENGINE_KINDS, EngineOptions, parse_device_ids
from appliance.generation.types import GenerationOptions
from appliance.models.loader import LoadedModel, load_model

__all__ = [
    "add_devid_option",
    "add_generation_options",
    "add_model_options",
    "generation_options",
    "load_from_args",
]


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("-m", "--model", help="installed model name or path (default: the embedded SmolLM2-135M)")
    g.add_argument("--engine", choices=ENGINE_KINDS, help="engine (default: the model's manifest, else auto)")
    g.add_argument("--threads", type=int, help="CPU threads for the host engine")
    g.add_argument(
        "--libdir", help="bmrt runtime libraries (default: libsophon; or the x86 cmodel directory)"
    )
    g.add_argument("--decrypt-lib", help="cipher library exporting decrypt(), for encrypted bmodels")
    add_devid_option(g)


def _device_ids(text: str) -> tuple[int, ...]:
    try:
        return parse_device_ids(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_devid_option(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--devid",
        type=_device_ids,
        metavar="IDS",
        help="TPU device ids for a multi-chip bmodel, e.g. 2,3 (as many as the bmodel's devices)",
    )


def add_generation_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation")
    g.add_argument("-s", "--system", help="system prompt")
    g.add_argument("-n", "--max-tokens", type=int, default=512, help="most new tokens per answer (512)")
    g.add_argument("-t", "--temperature", type=float, default=0.0, help="0 = greedy (default)")
    g.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1.0 = off)")
    g.add_argument("--repeat-penalty", type=float, default=1.0, help="repetition penalty (1.0 = off)")
    g.add_argument("--repeat-last-n", type=int, default=32, help="tokens the penalty looks back on (32)")
    g.add_argument("--seed", type=int, help="seed for reproducible sampling")
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


def generation_options(args: argparse.Namespace) -> GenerationOptions:
    return GenerationOptions(
        max_new_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repeat_penalty,
        repeat_last_n=args.repeat_last_n,
        seed=args.seed,
        stop=tuple(args.stop),
    )


def load_from_args(args: argparse.Namespace, **kwargs: Any) -> LoadedModel:
    engine_options = EngineOptions(
        threads=getattr(args, "threads", None),
        libdir=getattr(args, "libdir", None),
        decrypt_lib=getattr(args, "decrypt_lib", None),
        devices=getattr(args, "devid", None),
    )
    return load_model(args.model, engine=args.engine, engine_options=engine_options, **kwargs)
