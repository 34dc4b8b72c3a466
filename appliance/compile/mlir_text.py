"""A tiny writer of top-dialect MLIR text (the generic op form ``tpuc-opt`` parses).

The parser fills every attribute that has a default value, so a function only has to spell out the
attributes it sets; any text that parses to the same IR compiles to the same bmodel. Names of ops
(their ``loc``) matter: they become tensor names in the bmodel.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Attr", "Function", "Value", "bool_", "f64", "i32", "i64", "i64s", "si32", "string"]

Shape = Sequence[int]


@dataclass(frozen=True)
class Value:
    """An SSA value: its name (``%3`` or ``%4#1``) and its tensor type text."""

    name: str
    type: str

    @property
    def shape(self) -> tuple[int, ...]:
        body = self.type[len("tensor<") : -1]
        return tuple(int(d) for d in body.split("x")[:-1])


@dataclass(frozen=True)
class Attr:
    text: str


def bool_(v: bool) -> Attr:
    return Attr("true" if v else "false")


def i64(v: int) -> Attr:
    return Attr(f"{int(v)} : i64")


def si32(v: int) -> Attr:
    return Attr(f"{int(v)} : si32")


def i32(v: int) -> Attr:
    return Attr(f"{int(v)} : i32")


def f64(v: float) -> Attr:
    # MLIR float literals need a decimal point; 17 significant digits round-trip every double.
    return Attr(f"{float(v):.17e} : f64")


def i64s(vs: Sequence[int]) -> Attr:
    return Attr("[" + ", ".join(str(int(v)) for v in vs) + "]")


def string(v: str) -> Attr:
    return Attr(json.dumps(v))


def tensor(shape: Shape, elem: str = "f32") -> str:
    return "tensor<" + "".join(f"{d}x" for d in shape) + elem + ">"


def _loc(names: str | Sequence[str]) -> str:
    if isinstance(names, str):
        return f"loc({json.dumps(names)})"
    return "loc(fused[" + ", ".join(json.dumps(n) for n in names) + "])"


class Function:
    """One ``module { func.func @main }`` under construction; ops are appended in order."""

    def __init__(self, name: str, weight_file: str, inputs: Sequence[tuple[Shape, str]]) -> None:
        self.name = name
        self.weight_file = weight_file
        self._inputs = [(tuple(s), t) for s, t in inputs]
        self._lines: list[str] = []
        self._weights: dict[str, tuple[Value, tuple[int, ...]]] = {}
        self._next = 1
        self.none = Value("%0", "none")

    def _fresh(self) -> str:
        name = f"%{self._next}"
        self._next += 1
        return name

    def input(self, index: int, loc: str, *, shape_tensor: Sequence[int] | None = None) -> Value:
        shape, elem = self._inputs[index]
        out = Value(self._fresh(), tensor(shape))
        attrs = {"shape_tensor": i64s(shape_tensor)} if shape_tensor is not None else {}
        self._emit(
            out.name, "top.Input", [Value(f"%arg{index}", tensor(shape, elem))], [out.type], attrs, loc
        )
        return out

    def weight(self, name: str, shape: Shape) -> Value:
        """A weight from the module's npz; asking twice for one name gives the same value."""
        if name in self._weights:
            value, known = self._weights[name]
            if known != tuple(shape):
                raise ValueError(f"weight {name} used with shapes {known} and {tuple(shape)}")
            return value
        out = Value(self._fresh(), tensor(shape))
        self._emit(out.name, "top.Weight", [], [out.type], {}, name)
        self._weights[name] = (out, tuple(shape))
        return out

    def op(
        self,
        kind: str,
        operands: Sequence[Value],
        out_shape: Shape,
        loc: str | Sequence[str],
        /,
        **attrs: Attr,
    ) -> Value:
        out = Value(self._fresh(), tensor(out_shape))
        self._emit(out.name, f"top.{kind}", operands, [out.type], attrs, loc)
        return out

    def op2(
        self,
        kind: str,
        operands: Sequence[Value],
        shapes: tuple[Shape, Shape],
        loc: str | Sequence[str],
        /,
        **attrs: Attr,
    ) -> tuple[Value, Value]:
        base = self._fresh()
        types = [tensor(s) for s in shapes]
        self._emit(f"{base}:2", f"top.{kind}", operands, types, attrs, loc)
        return Value(f"{base}#0", types[0]), Value(f"{base}#1", types[1])

    def _emit(
        self,
        result: str,
        kind: str,
        operands: Sequence[Value],
        types: Sequence[str],
        attrs: dict[str, Attr],
        loc: str | Sequence[str],
    ) -> None:
        attr_text = ""
        if attrs:
            attr_text = " {" + ", ".join(f"{k} = {v.text}" for k, v in attrs.items()) + "}"
        results = types[0] if len(types) == 1 else "(" + ", ".join(types) + ")"
        self._lines.append(
            f'    {result} = "{kind}"({", ".join(o.name for o in operands)}){attr_text} : '
            f"({', '.join(o.type for o in operands)}) -> {results} {_loc(loc)}"
        )

    def text(self, returns: Sequence[Value]) -> str:
        args = ", ".join(f"%arg{i}: {tensor(s, t)} loc(unknown)" for i, (s, t) in enumerate(self._inputs))
        outs = ", ".join(r.type for r in returns)
        out_sig = outs if len(returns) == 1 else f"({outs})"
        head = (
            f'module @"{self.name}" attributes {{module.weight_file = {json.dumps(self.weight_file)}, '
            'module.platform = "LLM", module.state = "TOP_F32", module.chip = "ALL", '
            'module.top_run_mode = "STATIC"} {\n'
            f"  func.func @main({args}) -> {out_sig} {{\n"
            '    %0 = "top.None"() : () -> none loc(unknown)\n'
        )
        ret = f"    return {', '.join(r.name for r in returns)} : {outs}\n"
        return head + "\n".join(self._lines) + "\n" + ret + "  } loc(unknown)\n} loc(unknown)\n"
