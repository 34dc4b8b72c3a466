"""Command-line options shared by the commands that generate (ask, chat, bench).

The flags override the config (``--config``, else /etc/llm-tpu/appliance.yaml, drop-ins and
``LLM_TPU_*`` variables), whose ``model:`` and ``generation:`` sections give every default: one
source of defaults for the service and the in-process commands alike.
"""

from __future__ import annotations

import argparse

from appliance.config import load_config
from appliance.config.schema import ApplianceConfig
from appliance.engine.options import ENGINE_KINDS, parse_device_ids
from appliance.generation.types import GenerationOptions, options_with_defaults

__all__ = [
    "add_config_option",
    "add_devid_option",
    "add_generation_options",
    "add_model_options",
    "config_from_args",
    "generation_options",
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
    g = p.add_argument_group("generation (default: the config's generation section)")
    g.add_argument("-s", "--system", help="system prompt")
    g.add_argument("-n", "--max-tokens", type=int, help="most new tokens per answer (generation.max_tokens)")
    g.add_argument("-t", "--temperature", type=float, help="0 = greedy (generation.temperature)")
    g.add_argument("--top-k", type=int, help="keep the k most likely tokens, 0 = off (generation.top_k)")
    g.add_argument("--top-p", type=float, help="nucleus sampling mass, 1.0 = off (generation.top_p)")
    g.add_argument("--repeat-penalty", type=float, help="1.0 = off (generation.repetition_penalty)")
    g.add_argument(
        "--repeat-last-n", type=int, help="tokens the penalty looks back on (generation.repeat_last_n)"
    )
    g.add_argument("--seed", type=int, help="seed for reproducible sampling")
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


def config_from_args(args: argparse.Namespace) -> ApplianceConfig:
    """The config, with the command line's model flags on top."""
    devid = getattr(args, "devid", None)
    overrides = {
        "model.ref": getattr(args, "model", None),
        "model.engine": getattr(args, "engine", None),
        "model.threads": getattr(args, "threads", None),
        "model.libdir": getattr(args, "libdir", None),
        "model.decrypt_lib": getattr(args, "decrypt_lib", None),
        "model.devices": list(devid) if devid else None,
    }
    return load_config(getattr(args, "config", None), overrides=overrides).config


def generation_options(args: argparse.Namespace, config: ApplianceConfig) -> GenerationOptions:
    return options_with_defaults(
        config.generation,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repeat_penalty,
        repeat_last_n=args.repeat_last_n,
        seed=args.seed,
        stop=args.stop,
    )
