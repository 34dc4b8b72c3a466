"""The chat app's key bindings from a small YAML file (YAML like the service's configuration):
``$XDG_CONFIG_HOME/llm-tpu/tui.yaml``.

    keys:
      regenerate: ctrl+r          # an action's id: one key, or several separated by commas
      copy_answer: "f10,ctrl+o"

The ids are those the help screen (F1) lists. An unknown id, a key Textual does not know, or a file
that is not YAML is a ConfigError saying what was wrong and where; nothing starts half-configured.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import yaml
from textual.keys import KEY_NAME_REPLACEMENTS, Keys

from appliance.errors import ConfigError

__all__ = ["config_path", "load_keymap"]

_MODIFIERS = {"ctrl", "shift", "alt", "meta", "super", "hyper"}
_NAMES = (
    {k.value.rsplit("+", 1)[-1] for k in Keys}
    | set(KEY_NAME_REPLACEMENTS.values())
    | {
        "enter",
        "tab",
        "space",
        "backspace",
        "escape",
        "delete",
        "insert",
        "home",
        "end",
        "pageup",
        "pagedown",
    }
    | {f"f{n}" for n in range(1, 25)}
    | {"exclamation_mark", "question_mark", "full_stop", "comma", "colon", "semicolon"}
)


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "llm-tpu" / "tui.yaml"


def _check_key(key: str) -> str | None:
    """Why ``key`` is not a key Textual can bind (None when it is)."""
    *mods, base = key.split("+")
    unknown = [m for m in mods if m not in _MODIFIERS]
    if unknown:
        return f"unknown modifier {unknown[0]!r} (use {', '.join(sorted(_MODIFIERS))})"
    if len(base) == 1 and base.isprintable() and not base.isspace():
        return None
    if base not in _NAMES:
        return f"unknown key {base!r} (e.g. a, f5, enter, escape, pageup, ctrl+r)"
    return None


def load_keymap(path: Path, actions: Iterable[str]) -> dict[str, str]:
    """The file's ``keys`` mapping as a Textual keymap ({binding id: keys}); {} when there is no file."""
    if not path.exists():
        return {}
    where = f"in {path}"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}", hint="fix the file or move it away") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a mapping with one key, keys:", hint="see `keys:` in the README")
    extra = sorted(set(data) - {"keys"})
    if extra:
        raise ConfigError(f"unknown section {extra[0]!r} {where}", hint="the file has one section: keys")
    keys = data.get("keys") or {}
    if not isinstance(keys, dict):
        raise ConfigError(f"'keys' {where} must be a mapping of action ids to keys")
    known = set(actions)
    keymap: dict[str, str] = {}
    for action, value in keys.items():
        if action not in known:
            raise ConfigError(
                f"unknown action {action!r} {where}", hint=f"the actions are: {', '.join(sorted(known))}"
            )
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f'{action} {where}: give the key as a string, e.g. {action} = "ctrl+r"')
        parts = [k.strip().lower() for k in value.split(",")]
        for key in parts:
            why = _check_key(key)
            if why:
                raise ConfigError(f"{action}: {value!r} {where}: {why}")
        keymap[action] = ",".join(parts)
    return keymap
