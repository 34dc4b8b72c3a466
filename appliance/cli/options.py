"""Command-line options shared by the commands that generate (ask, chat, bench).

The flags override the config (``--config``, else /etc/llm-tpu/appliance.yaml, drop-ins and
``LLM_TPU_*`` variables), whose ``model:`` and ``generation:`` sections give every default: one
source of defaults for the service and the in-process commands alike.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from appliance.config import load_config
from appliance.config.schema import ApplianceConfig
from appliance.engine.options import ENGINE_KINDS, HOST_QUANTS, parse_device_ids
from appliance.generation.types import GenerationOptions

__all__ = [
    "add_config_option",
    "add_devid_option",
    "add_generation_options",
    "add_model_options",
    "config_from_args",
    "requested_options",
]


def add_config_option(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--config",
        metavar="PATH",
        help="config file whose model and generation sections give the defaults, also for a private "
        "service (default: /etc/llm-tpu/appliance.yaml when it exists)",
    )


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (default: the config's model section, else the embedded SmolLM2-135M)")
    g.add_argument("-m", "--model", help="installed model name or path (overrides model.ref)")
    g.add_argument("--engine", choices=ENGINE_KINDS, help="engine (default: the model's manifest, else auto)")
    g.add_argument("--threads", type=int, help="CPU threads for the host engine")
    g.add_argument(
        "--host-quant",
        choices=HOST_QUANTS,
        help="host engine weights: auto, none, int8 or int4 (default: the config's model.host_quant)",
    )
    g.add_argument(
        "--libdir", help="bmrt runtime libraries (default: libsophon; or the x86 cmodel directory)"
    )
    g.add_argument("--decrypt-lib", help="cipher library exporting decrypt(), for encrypted bmodels")
    add_devid_option(g)
    add_config_option(g)


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
    g = p.add_argument_group(
        "generation",
        "unset options take the config's generation section, where it sets none the model's "
        "generation_config.json, else the built-in defaults shown",
    )
    g.add_argument("-s", "--system", help="system prompt")
    g.add_argument("-n", "--max-tokens", type=int, help="most new tokens per answer (1024)")
    g.add_argument("-t", "--temperature", type=float, help="sampling temperature, 0 = greedy (0.7)")
    g.add_argument("--greedy", action="store_true", help="greedy decoding: the most likely token, no penalty")
    g.add_argument("--top-k", type=int, help="keep the k most likely tokens (0 = off)")
    g.add_argument("--top-p", type=float, help="nucleus sampling mass, 1.0 = off (0.9)")
    g.add_argument("--repeat-penalty", type=float, help="repetition penalty, 1.0 = off (1.1)")
    g.add_argument("--repeat-last-n", type=int, help="tokens the penalty looks back on (64)")
    g.add_argument("--seed", type=int, help="seed for reproducible sampling")
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


def requested_options(args: argparse.Namespace) -> dict[str, Any]:
    """The GenerationOptions fields given on the command line (--greedy sets the greedy ones)."""
    given = {
        "max_new_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "repetition_penalty": args.repeat_penalty,
        "repeat_last_n": args.repeat_last_n,
        "seed": args.seed,
        "stop": tuple(args.stop) or None,
    }
    values = {k: v for k, v in given.items() if v is not None}
    if args.greedy:
        greedy = GenerationOptions().greedy()
        values.update(
            temperature=greedy.temperature,
            top_k=greedy.top_k,
            top_p=greedy.top_p,
            repetition_penalty=greedy.repetition_penalty,
        )
    dataclasses.replace(GenerationOptions(), **values)  # InvalidRequest now, before any load or request
    return values


def config_from_args(args: argparse.Namespace) -> ApplianceConfig:
    """The config, with the command line's model flags on top."""
    devid = getattr(args, "devid", None)
    overrides = {
        "model.ref": getattr(args, "model", None),
        "model.engine": getattr(args, "engine", None),
        "model.threads": getattr(args, "threads", None),
        "model.host_quant": getattr(args, "host_quant", None),
        "model.libdir": getattr(args, "libdir", None),
        "model.decrypt_lib": getattr(args, "decrypt_lib", None),
        "model.devices": list(devid) if devid else None,
    }
    return load_config(getattr(args, "config", None), overrides=overrides).config
