"""Decoding a request body into JSON without letting a hostile body cost a 500 or the event loop.

Refused with InvalidRequest (HTTP 400): bytes that are not UTF-8, text that is not JSON, the non-JSON
constants ``NaN``/``Infinity`` that Python's json module accepts, and nesting deeper than
:data:`MAX_DEPTH` (5,000 levels used to raise RecursionError inside the parser: a 500). The depth is
counted over the bytes before parsing, so that a deep body costs one linear scan.
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

from appliance.errors import InvalidRequest

__all__ = ["MAX_DEPTH", "decode_json_body"]

MAX_DEPTH = 64
# A JSON string (unrolled: runs of plain bytes in one step) or a bracket.
_STRUCTURE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def _depth(raw: bytes) -> int:
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return 0  # too few brackets to nest deeper: skip the scan (a 4 MB prompt costs nothing here)
    depth = deepest = 0
    for m in _STRUCTURE.finditer(raw):
        c = m.group()
        if c in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                break
        elif c in (b"]", b"}"):
            depth -= 1
    return deepest


def _no_constant(name: str) -> NoReturn:
    raise InvalidRequest(
        f"the request body is not valid JSON: {name} is not a JSON number", hint="send finite numbers"
    )


def decode_json_body(raw: bytes) -> Any:
    if not raw:
        raise InvalidRequest("the request body is empty", hint="send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"the request body is not valid UTF-8 (bad byte at offset {exc.start})",
            hint="encode the JSON body as UTF-8",
        ) from None
    if _depth(raw) > MAX_DEPTH:
        raise InvalidRequest(
            f"the request body is nested more than {MAX_DEPTH} levels deep", hint="send a flatter JSON object"
        )
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:  # unreachable after the depth check; kept so that it can never be a 500
        raise InvalidRequest("the request body is nested too deeply") from None
