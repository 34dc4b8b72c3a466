"""Model names: the one grammar every name that enters the appliance must match.

A model name becomes one directory in the model store (``<store>/<name>/``) and is what clients send
in a request's ``model`` field, so it must never be able to name anything else: ``.``, ``..``, a path
with ``/`` or an absolute path would make `models import --name .` replace the whole store or
`models rm ../x` remove a directory beside it. ``models import``, ``pull``, ``rm``, ``compile`` and the
chat APIs all check names here, before anything is read, downloaded or moved.

Names given by a person are checked (:func:`check_model_name`); names the appliance derives from a
file or catalog name are made to fit (:func:`derive_model_name`).
"""

from __future__ import annotations

import re

from appliance.errors import InvalidModelName

__all__ = ["MODEL_NAME_GRAMMAR", "MODEL_NAME_HELP", "check_model_name", "derive_model_name"]

MODEL_NAME_GRAMMAR = "[a-z0-9][a-z0-9_.:-]{0,127}"
MODEL_NAME_HELP = (
    f"a model name matches {MODEL_NAME_GRAMMAR}: lower-case letters, digits and . _ : -, "
    "starting with a letter or digit, at most 128 characters (e.g. qwen2-7b-int4)"
)
_NAME = re.compile(MODEL_NAME_GRAMMAR)
_OUTSIDE = re.compile(r"[^a-z0-9_.:-]+")


def _why(name: str) -> str:
    if not name:
        return "it is empty"
    if name in (".", ".."):
        return "it names the store itself or its parent"
    if "/" in name or "\\" in name:
        return "it is a path, not a name"
    if len(name) > 128:
        return f"it is {len(name)} characters long"
    if not name[0].isascii() or not name[0].isalnum():
        return f"it starts with {name[0]!r}"
    bad = sorted({c for c in name if _OUTSIDE.fullmatch(c.lower()) or c.isupper()})
    return "it contains " + ", ".join(repr(c) for c in bad)


def check_model_name(name: str) -> str:
    """``name`` itself when it matches the grammar; InvalidModelName (exit 2, HTTP 400) saying why not."""
    if _NAME.fullmatch(name):
        return name
    raise InvalidModelName(f"invalid model name {name!r}: {_why(name)}", hint=MODEL_NAME_HELP)


def derive_model_name(stem: str) -> str:
    """A valid name made from a file, directory or catalog name: lower-cased, other characters as ``-``."""
    name = _OUTSIDE.sub("-", stem.lower()).lstrip("_.:-").rstrip("-")[:128].rstrip("-")
    return name or "model"
