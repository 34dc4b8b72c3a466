"""Layered configuration with provenance.

Layers, later wins: built-in defaults; the main file (``/etc/llm-tpu/appliance.yaml`` or ``--config``,
or ``$LLM_TPU_CONFIG``); drop-ins ``conf.d/*.yaml`` next to the main file in lexical order (provisioning
and Ansible write there, so the conffile itself never changes); environment variables
``LLM_TPU_<SECTION>__<KEY>`` (double underscore between levels, values parsed as YAML scalars); command
line overrides. Every effective value remembers which layer set it, for ``llm-tpu config show``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from appliance.config.schema import ApplianceConfig
from appliance.errors import ConfigError

__all__ = ["DEFAULT_CONFIG_PATH", "ENV_PREFIX", "LoadedConfig", "load_config"]

DEFAULT_CONFIG_PATH = Path("/etc/llm-tpu/appliance.yaml")
ENV_PREFIX = "LLM_TPU_"
DEFAULT_SOURCE = "default"


@dataclass(frozen=True)
class LoadedConfig:
    """The validated configuration, the files it was read from and where each value came from."""

    config: ApplianceConfig
    files: tuple[Path, ...]
    sources: dict[str, str] = field(default_factory=dict)  # dotted key -> layer name

    def source_of(self, key: str) -> str:
        return _source_for(self.sources, key)

    def effective(self) -> list[tuple[str, Any, str]]:
        """(dotted key, value, source) for every leaf, in schema order."""
        return [
            (key, value, self.source_of(key)) for key, value in _leaves(self.config.model_dump(mode="json"))
        ]


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _leaves(value, dotted + ".")
        else:
            yield dotted, value


def _source_for(sources: Mapping[str, str], key: str) -> str:
    # A whole section set by one layer (e.g. `tcp: {...}`) records its leaves; fall back to parents.
    parts = key.split(".")
    while parts:
        found = sources.get(".".join(parts))
        if found:
            return found
        parts.pop()
    # A whole unknown section (``modle: {ref: x}``) is reported at its top key; its leaves know the file.
    children = [src for name, src in sources.items() if name.startswith(key + ".")]
    return children[-1] if children else DEFAULT_SOURCE


def _merge(
    base: dict[str, Any], layer: Mapping[str, Any], source: str, sources: dict[str, str], prefix: str = ""
) -> None:
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value, source, sources, dotted + ".")
        elif isinstance(value, Mapping):
            base[key] = {}
            _merge(base[key], value, source, sources, dotted + ".")
        else:
            base[key] = value
            sources[dotted] = source


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", hint="check the --config path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"{path}: not valid YAML{where}: {problem}", hint="fix the YAML syntax (indentation, colons)"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections, not {type(data).__name__}",
            hint="see /usr/share/doc/llm-tpu-appliance/examples/appliance.yaml for the layout",
        )
    return data


def _env_layer(env: Mapping[str, str]) -> list[tuple[str, dict[str, Any]]]:
    layers = []
    for name in sorted(env):
        # Only LLM_TPU_<SECTION>__<KEY> names belong to the config; others (LLM_TPU_MODELS_DIR) do not.
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(path):
            raise ConfigError(f"environment variable {name}: empty key part", hint="use LLM_TPU_SECTION__KEY")
        try:
            value = yaml.safe_load(env[name]) if env[name] != "" else ""
        except yaml.YAMLError:
            value = env[name]
        tree: dict[str, Any] = {path[-1]: value}
        for part in reversed(path[:-1]):
            tree = {part: tree}
        layers.append((f"env {name}", tree))
    return layers


def _nest(dotted: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in dotted.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _describe(err: ValidationError, sources: Mapping[str, str]) -> str:
    lines = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"])
        source = _source_for(sources, key)
        reason = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        if item["type"] != "extra_forbidden" and "input" in item and not isinstance(item["input"], dict):
            reason += f" (got {item['input']!r})"
        lines.append(f"{source}: {key}: {reason}")
    return "; ".join(lines)


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LoadedConfig:
    """Read, merge and validate the configuration. ConfigError names the file, key and reason."""
    env = os.environ if env is None else env
    explicit = path if path is not None else env.get(f"{ENV_PREFIX}CONFIG")
    main = Path(explicit) if explicit else DEFAULT_CONFIG_PATH
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    files: list[Path] = []
    if explicit or main.exists():
        _merge(merged, _read_yaml(main), str(main), sources)
        files.append(main)
    dropin_dir = main.parent / "conf.d"
    if dropin_dir.is_dir():
        for dropin in sorted(dropin_dir.glob("*.yaml")):
            _merge(merged, _read_yaml(dropin), str(dropin), sources)
            files.append(dropin)
    for source, layer in _env_layer(env):
        _merge(merged, layer, source, sources)
    if overrides:
        _merge(merged, _nest({k: v for k, v in overrides.items() if v is not None}), "command line", sources)
    try:
        config = ApplianceConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(
            f"invalid configuration: {_describe(exc, sources)}",
            hint="see `llm-tpu config show` for every key, its default and meaning",
        ) from None
    return LoadedConfig(config=config, files=tuple(files), sources=sources)
