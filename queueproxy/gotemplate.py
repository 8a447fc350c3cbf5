"""A subset of Go's ``text/template``, compiled once into Python closures.

Upstream's request log is a Go template (``logging.request-log-template``); to be a drop-in
replacement we render the same templates to the same bytes. ``compile_template(source)``
parses once and returns a ``Template``; calling it with the data returns the text.

Supported, with Go's semantics:

- text, comments ``{{/* */}}``, trim markers ``{{- `` and `` -}}``;
- ``{{pipeline}}``: ``.``, ``.A.B.C``, ``$``, ``$x.A``, ``(pipeline).A``, literals (strings,
  raw strings, chars, numbers, ``true``/``false``/``nil``), commands joined by ``|`` (the
  value flows in as the last argument), variables ``$x := ...`` and ``$x = ...``;
- ``{{if}}``/``{{else if}}``/``{{else}}``/``{{end}}``, ``{{with}}`` (and ``{{else with}}``),
  ``{{range}}`` over lists, maps (sorted keys) and integers, with ``{{break}}``/``{{continue}}``;
- the builtins ``and or not eq ne lt le gt ge len index slice print printf println js html
  urlquery``, with Go's output: ``js`` is byte-for-byte ``JSEscapeString``, floats print as Go
  prints a float64 with ``%v``.

Not supported, rejected by ``compile_template`` with a ``TemplateError``: ``define``,
``template``, ``block``, ``call``, complex numbers, and anything Go itself would reject.
As in Go, a field that does not exist is only noticed while executing (``ExecError``).

How Python data looks to a template:

- ``str``, ``int``, ``float``, ``bool`` are Go's basic types; ``None`` is ``nil``;
- a ``Mapping`` is a Go map: ``.Key`` looks the key up (a missing key gives "no value",
  or whatever the mapping's ``__missing__`` returns); a ``list``/``tuple`` is a slice;
- any other object is a Go struct: an exported (capitalised) attribute is a field, a bound
  method is a Go method, called with the command's arguments (``.Header.Get "X"``);
  an object with a ``String`` method prints through it (Go's ``fmt.Stringer``), and one with
  ``__go_fields__`` (a tuple of names) prints as ``{v1 v2 ...}``.

Strings stand for Go's byte strings: bytes that are not UTF-8 are carried as lone surrogates
(``surrogateescape``), and ``len``, ``urlquery`` and ``%x`` count and encode those bytes.

Pure: no I/O.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MethodType
from typing import Any

from queueproxy.config import parse_go_int  # Go's base-prefixed, underscore-aware ints
from queueproxy.gofmt import (
    NO_VALUE, ExecError, format_float, format_value, go_bytes, html_escape, is_raw_byte, js_escape, quote,
    sorted_keys, sprint, sprintf, sprintln, type_name, urlquery_escape,
)

__all__ = [
    "ExecError",
    "NO_VALUE",
    "Template",
    "TemplateError",
    "compile_template",
    "format_float",
    "format_value",
    "html_escape",
    "js_escape",
    "quote",
    "sprint",
    "sprintf",
    "urlquery_escape",
]


class TemplateError(ValueError):
    """The template cannot be compiled: bad syntax, or a construct this subset lacks."""


_NOFINAL: Any = object()

# --------------------------------------------------------------------------------------------
# Lexer: the whole template becomes a flat list of items.

_SPACE = " \t\r\n"
_KEYWORDS = {"if", "else", "end", "range", "with", "break", "continue", "define", "template",
             "block", "nil"}
_IDENT = re.compile(r"[^\W\d]\w*")  # Go: a letter or _, then letters, digits, _
_FIELD = re.compile(r"\.\w+")
_NUMBER = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F_]*\.?[0-9a-fA-F_]*(?:[pP][+-]?[0-9_]+)?"
                     r"|0[oO][0-7_]*|0[bB][01_]*"
                     r"|[0-9_]*\.?[0-9_]*(?:[eE][+-]?[0-9_]+)?)i?")
_TERMINATORS = set(_SPACE) | {"", ".", ",", "|", ":", ")", "(", "}"}


class _Item:
    __slots__ = ("kind", "val", "line")

    def __init__(self, kind: str, val: Any, line: int) -> None:
        self.kind, self.val, self.line = kind, val, line

    def __repr__(self) -> str:
        return f"{self.kind}:{self.val!r}"


def _unquote(body: str, q: str, err: Callable[[str], TemplateError]) -> str:
    """Go's interpreted string (or char) literal body, escapes resolved, as a byte string."""
    if "\\" not in body:
        return body
    out, i = bytearray(), 0
    simple = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, q: ord(q)}
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += go_bytes(c)
            i += 1
            continue
        e = body[i + 1:i + 2]
        if e in simple:
            out.append(simple[e])
            i += 2
        elif e in ("x", "u", "U"):
            n = {"x": 2, "u": 4, "U": 8}[e]
            h = body[i + 2:i + 2 + n]
            if len(h) != n or any(ch not in "0123456789abcdefABCDEF" for ch in h):
                raise err(f"invalid syntax in {q}-quoted literal")
            code = int(h, 16)
            if e == "x":
                out.append(code)
            elif code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise err(f"invalid Unicode escape \\{e}{h}")
            else:
                out += chr(code).encode()
            i += 2 + n
        elif e and e in "01234567":
            o = body[i + 1:i + 4]
            if len(o) != 3 or any(ch not in "01234567" for ch in o) or int(o, 8) > 255:
                raise err("invalid octal escape")
            out.append(int(o, 8))
            i += 4
        else:
            raise err(f"unknown escape sequence \\{e}")
    return out.decode("utf-8", "surrogateescape")


def _lex(src: str, name: str) -> list[_Item]:
    items: list[_Item] = []
    pos, n, line, trim_next = 0, len(src), 1, False

    def err(msg: str) -> TemplateError:
        return TemplateError(f"template: {name}:{line}: {msg}")

    while True:
        start = src.find("{{", pos)
        text = src[pos:] if start < 0 else src[pos:start]
        if trim_next:
            text = text.lstrip(_SPACE)
        i = start + 2
        left_trim = start >= 0 and src[i:i + 1] == "-" and src[i + 1:i + 2] in tuple(_SPACE)
        if left_trim:
            text = text.rstrip(_SPACE)
            i += 2
        if text:
            items.append(_Item("text", text, line))
        line += src.count("\n", pos, start if start >= 0 else n)
        if start < 0:
            items.append(_Item("eof", None, line))
            return items
        trim_next = False
        if src.startswith("/*", i):  # a comment fills the whole action
            end = src.find("*/", i + 2)
            if end < 0:
                raise err("unclosed comment")
            j = end + 2
            if src.startswith("}}", j):
                pos = j + 2
            elif src[j:j + 1] in tuple(_SPACE) and src.startswith("-}}", j + 1):
                pos, trim_next = j + 4, True
            else:
                raise err("comment ends before closing delimiter")
            line += src.count("\n", start, pos)
            continue
        items.append(_Item("ldelim", None, line))
        depth = 0
        while True:
            if i >= n:
                raise err("unclosed action")
            c = src[i]
            if src.startswith("}}", i):
                if depth:
                    raise err("unclosed left paren")
                items.append(_Item("rdelim", None, line))
                pos = i + 2
                break
            if c in _SPACE:
                j = i
                while j < n and src[j] in _SPACE:
                    j += 1
                line += src.count("\n", i, j)
                if src.startswith("-}}", j):
                    if depth:
                        raise err("unclosed left paren")
                    items.append(_Item("rdelim", None, line))
                    pos, trim_next = j + 3, True
                    break
                items.append(_Item("space", None, line))
                i = j
            elif c == "|":
                items.append(_Item("pipe", c, line))
                i += 1
            elif c == "(":
                depth += 1
                items.append(_Item("lparen", c, line))
                i += 1
            elif c == ")":
                depth -= 1
                if depth < 0:
                    raise err("unexpected right paren")
                items.append(_Item("rparen", c, line))
                i += 1
            elif c == ",":
                items.append(_Item("comma", c, line))
                i += 1
            elif src.startswith(":=", i):
                items.append(_Item("declare", ":=", line))
                i += 2
            elif c == "=":
                items.append(_Item("assign", "=", line))
                i += 1
            elif c == '"':
                j = i + 1
                while j < n and src[j] != '"':
                    if src[j] == "\n":
                        break
                    j += 2 if src[j] == "\\" else 1
                if j >= n or src[j] != '"':
                    raise err("unterminated quoted string")
                items.append(_Item("string", _unquote(src[i + 1:j], '"', err), line))
                i = j + 1
            elif c == "`":
                j = src.find("`", i + 1)
                if j < 0:
                    raise err("unterminated raw quoted string")
                items.append(_Item("string", src[i + 1:j].replace("\r", ""), line))
                line += src.count("\n", i, j)
                i = j + 1
            elif c == "'":
                j = i + 1
                while j < n and src[j] != "'":
                    if src[j] == "\n":
                        break
                    j += 2 if src[j] == "\\" else 1
                if j >= n or src[j] != "'":
                    raise err("unterminated character constant")
                ch = _unquote(src[i + 1:j], "'", err)
                if len(ch) != 1 or is_raw_byte(ch):
                    raise err(f"malformed character constant: {src[i:j + 1]}")
                items.append(_Item("number", ord(ch), line))
                i = j + 1
            elif c == "$":
                m = _IDENT.match(src, i + 1)
                j = m.end() if m else i + 1
                if src[j:j + 1] not in _TERMINATORS:
                    raise err(f"bad character {src[j]!r}")
                items.append(_Item("var", src[i:j], line))
                i = j
            elif c == "." and not src[i + 1:i + 2].isdigit():
                m = _FIELD.match(src, i)
                j = m.end() if m else i + 1
                if src[j:j + 1] not in _TERMINATORS:
                    raise err(f"bad character {src[j]!r}")
                items.append(_Item("field", m.group()[1:], line) if m else _Item("dot", ".", line))
                i = j
            elif c.isdigit() or c in "+-.":
                m = _NUMBER.match(src, i)
                j = m.end() if m else i
                if j == i or src[j:j + 1].isalnum() or src[j:j + 1] == "_":
                    raise err(f"bad number syntax: {src[i:max(j, i + 1)]!r}")
                items.append(_Item("number", _number(src[i:j], err), line))
                i = j
            elif c.isalpha() or c == "_":
                m = _IDENT.match(src, i)
                if not m:
                    raise err(f"bad character {c!r}")
                word = m.group()
                i = m.end()
                if src[i:i + 1] not in _TERMINATORS:
                    raise err(f"bad character {src[i]!r}")
                if word in ("true", "false"):
                    items.append(_Item("bool", word == "true", line))
                elif word in _KEYWORDS:
                    items.append(_Item(word if word != "nil" else "nil", word, line))
                else:
                    items.append(_Item("ident", word, line))
            else:
                raise err(f"unexpected {c!r} in command")


def _number(text: str, err: Callable[[str], TemplateError]) -> int | float:
    """A Go numeric constant as a template argument: an int unless it is written as a float."""
    if text.endswith("i"):
        raise err(f"complex number {text} is not supported")
    body = text.lstrip("+-")
    is_hex = body[:2] in ("0x", "0X")
    if not any(ch in body for ch in (".pP" if is_hex else ".eEpP")):
        try:
            return parse_go_int(text)
        except ValueError:
            raise err(f"illegal number syntax: {text!r}") from None
    try:
        clean = text.replace("_", "")
        return float.fromhex(clean) if is_hex else float(clean)
    except ValueError:
        raise err(f"illegal number syntax: {text!r}") from None


# --------------------------------------------------------------------------------------------
# Parser: items -> nodes (tuples whose first element names the kind).


class _Parser:
    def __init__(self, items: list[_Item], name: str, funcs: Mapping[str, Any]) -> None:
        self.items, self.i, self.name, self.funcs = items, 0, name, funcs
        self.vars = ["$"]
        self.range_depth = 0

    def err(self, msg: str, item: _Item | None = None) -> TemplateError:
        line = (item or self.items[min(self.i, len(self.items) - 1)]).line
        return TemplateError(f"template: {self.name}:{line}: {msg}")

    def next(self) -> _Item:
        it = self.items[self.i]
        self.i += 1
        return it

    def peek(self) -> _Item:
        return self.items[self.i]

    def next_non_space(self) -> _Item:
        it = self.next()
        while it.kind == "space":
            it = self.next()
        return it

    def peek_non_space(self) -> _Item:
        while self.items[self.i].kind == "space":
            self.i += 1
        return self.items[self.i]

    def parse(self) -> list[Any]:
        nodes, stop = self.list_until(())
        if stop.kind != "eof":
            raise self.err(f"unexpected {{{{{stop.kind}}}}}", stop)
        return nodes

    def list_until(self, stops: tuple[str, ...]) -> tuple[list[Any], _Item]:
        """Nodes up to an action starting with one of ``stops`` (or EOF), which is returned."""
        nodes: list[Any] = []
        while True:
            it = self.next()
            if it.kind == "eof":
                if stops:
                    raise self.err("unexpected EOF", it)
                return nodes, it
            if it.kind == "text":
                nodes.append(("text", it.val))
                continue
            kw = self.peek_non_space()
            if kw.kind in ("end", "else"):
                if kw.kind not in stops:
                    raise self.err(f"unexpected {{{{{kw.kind}}}}}", kw)
                self.next()
                return nodes, kw
            nodes.append(self.action())

    def action(self) -> Any:
        it = self.peek_non_space()
        kind = it.kind
        if kind in ("define", "template", "block"):
            raise self.err(f"{{{{{kind}}}}} is not supported by this template engine", it)
        if kind in ("if", "with", "range"):
            self.next()
            return self.control(kind)
        if kind in ("break", "continue"):
            self.next()
            if self.range_depth == 0:
                raise self.err(f"{{{{{kind}}}}} outside {{{{range}}}}", it)
            if self.next_non_space().kind != "rdelim":
                raise self.err(f"unexpected content after {kind}", it)
            return (kind,)
        return ("action", self.pipeline("command", "rdelim"))

    def control(self, kind: str) -> Any:
        mark = len(self.vars)
        pipe = self.pipeline(kind, "rdelim")
        if kind == "range":
            self.range_depth += 1
        body, stop = self.list_until(("end", "else"))
        if kind == "range":
            self.range_depth -= 1
        else_body: list[Any] = []
        if stop.kind == "else":
            nxt = self.peek_non_space()
            if kind in ("if", "with") and nxt.kind == kind:  # {{else if}} / {{else with}}
                self.next()
                else_body = [self.control(kind)]
            else:
                if self.next_non_space().kind != "rdelim":
                    raise self.err(f"expected end of else in {kind}", stop)
                else_body, stop = self.list_until(("end",))
                if stop.kind != "end":
                    raise self.err(f"expected end; found {stop.kind}", stop)
                if self.next_non_space().kind != "rdelim":
                    raise self.err("unexpected content in end", stop)
        elif self.next_non_space().kind != "rdelim":
            raise self.err("unexpected content in end", stop)
        del self.vars[mark:]
        return (kind, pipe, body, else_body)

    def pipeline(self, context: str, end: str) -> Any:
        decls: list[str] = []
        is_assign = False
        v = self.peek_non_space()
        if v.kind == "var":
            save = self.i
            self.next()
            nxt = self.peek_non_space()
            if nxt.kind == "comma":
                if context != "range":
                    raise self.err(f"too many declarations in {context}", nxt)
                self.next()
                v2 = self.next_non_space()
                if v2.kind != "var":
                    raise self.err("range can only initialize variables", v2)
                decls = [v.val, v2.val]
                nxt = self.peek_non_space()
                if nxt.kind not in ("declare", "assign"):
                    raise self.err("range can only initialize variables", nxt)
                self.next()
                is_assign = nxt.kind == "assign"
                for d in decls if is_assign else ():
                    if d not in self.vars:
                        raise self.err(f"undefined variable {d!r}", v)
            elif nxt.kind in ("declare", "assign"):
                self.next()
                is_assign = nxt.kind == "assign"
                decls = [v.val]
                if is_assign and v.val not in self.vars:
                    raise self.err(f"undefined variable {v.val!r}", v)
            else:
                self.i = save
        cmds = []
        while True:
            it = self.peek_non_space()
            if it.kind == end:
                self.next()
                break
            cmds.append(self.command(end))
            if self.peek().kind == "pipe":
                self.next()
                if self.peek_non_space().kind == end:
                    raise self.err("missing command after |", it)
        if not cmds:
            raise self.err(f"missing value for {context}")
        for k, c in enumerate(cmds[1:], start=2):
            if c[0][0] in ("bool", "dot", "nil", "number", "string"):
                raise self.err(f"non executable command in pipeline stage {k}")
        if not is_assign:
            self.vars.extend(decls)
        return (decls, is_assign, cmds)

    def command(self, end: str) -> list[Any]:
        args: list[Any] = []
        while True:
            self.peek_non_space()
            args.append(self.operand())
            it = self.peek()
            if it.kind == "space":
                self.next()
                if self.peek().kind in (end, "pipe"):
                    break
                continue
            if it.kind in (end, "pipe"):
                break
            raise self.err(f"unexpected {it.val!r} in operand", it)
        return args

    def operand(self) -> Any:
        node = self.term()
        if self.peek().kind == "field":
            names = []
            while self.peek().kind == "field":
                names.append(self.next().val)
            if node[0] == "field":
                return ("field", node[1] + tuple(names))
            if node[0] == "var":
                return ("var", node[1], node[2] + tuple(names))
            if node[0] in ("bool", "string", "number", "nil", "dot"):
                raise self.err(f"unexpected . after term {node[0]}")
            return ("chain", node, tuple(names))
        return node

    def term(self) -> Any:
        it = self.next_non_space()
        k = it.kind
        if k == "ident":
            if it.val not in self.funcs:
                raise self.err(f"function {it.val!r} not defined", it)
            return ("func", it.val)
        if k == "dot":
            return ("dot",)
        if k == "nil":
            return ("nil",)
        if k == "var":
            if it.val not in self.vars:
                raise self.err(f"undefined variable {it.val!r}", it)
            return ("var", it.val, ())
        if k == "field":
            return ("field", (it.val,))
        if k in ("bool", "number", "string"):
            return (k, it.val)
        if k == "lparen":
            return ("paren", self.pipeline("parenthesized pipeline", "rparen"))
        raise self.err(f"unexpected {it.val if it.val is not None else it.kind!r} in operand", it)


# --------------------------------------------------------------------------------------------
# Execution helpers (Go's exec.go semantics).


class _State:
    __slots__ = ("out", "vars")

    def __init__(self, root: Any) -> None:
        self.out: list[str] = []
        self.vars: list[list[Any]] = [["$", root]]

    def lookup(self, name: str) -> Any:
        for k in range(len(self.vars) - 1, -1, -1):
            if self.vars[k][0] == name:
                return self.vars[k][1]
        raise ExecError(f"undefined variable: {name}")

    def assign(self, name: str, value: Any) -> None:
        for k in range(len(self.vars) - 1, -1, -1):
            if self.vars[k][0] == name:
                self.vars[k][1] = value
                return
        raise ExecError(f"undefined variable: {name}")


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def _call_method(method: Any, name: str, args: Any) -> Any:
    try:
        return method(*args)
    except TypeError as exc:
        raise ExecError(f"error calling {name}: {exc}") from None


def _field(recv: Any, name: str, args: list[Any] | None) -> Any:
    """``recv.Name`` with Go's lookup order: method, struct field, map key."""
    if name[0].isupper():
        attr = getattr(recv, name, NO_VALUE)
        if attr is not NO_VALUE:
            if type(attr) is MethodType:
                return _call_method(attr, name, args or ())
            if args:
                raise ExecError(f"{name} has arguments but cannot be invoked as function")
            return attr
    if isinstance(recv, Mapping):
        if args:
            raise ExecError(f"{name} is not a method but has arguments")
        try:
            return recv[name]
        except KeyError:
            return NO_VALUE
    if recv is NO_VALUE or recv is None:  # Go: a field of a nil interface is "no value"
        return NO_VALUE
    if name[0].isupper():
        raise ExecError(f"can't evaluate field {name} in type {type_name(recv)}")
    raise ExecError(f"{name} is an unexported field of type {type_name(recv)}")


def truth(v: Any) -> bool:
    """Go's ``isTrue``: false, 0, nil, and empty strings, slices and maps are false."""
    if v is None or v is NO_VALUE:
        return False
    if isinstance(v, (bool, int, float, str, list, tuple, Mapping)):
        return bool(v)
    return True


def _arg(v: Any) -> Any:
    return None if v is NO_VALUE else v


def _printable(v: Any) -> str:
    """What an action writes: like ``fmt.Fprint`` after dereferencing a pointer."""
    if type(v) is str:
        return v
    return format_value(v)


def _basic_kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    return ""


def _eq(a: Any, *bs: Any) -> bool:
    if not bs:
        raise ExecError("missing argument for comparison")
    ka = _basic_kind(a)
    for b in bs:
        kb = _basic_kind(b)
        if ka and kb:
            if ka != kb:
                raise ExecError(f"incompatible types for comparison: {type_name(a)} and {type_name(b)}")
            if a == b:
                return True
        elif a is None or b is None:
            if (a is None) == (b is None):
                return True
        else:
            raise ExecError("invalid type for comparison")
    return False


def _ne(a: Any, b: Any) -> bool:
    return not _eq(a, b)


def _lt(a: Any, b: Any) -> bool:
    ka, kb = _basic_kind(a), _basic_kind(b)
    if not ka or not kb or ka == "bool" or kb == "bool":
        raise ExecError("invalid type for comparison")
    if ka != kb:
        raise ExecError(f"incompatible types for comparison: {type_name(a)} and {type_name(b)}")
    return bool(a < b)


def _le(a: Any, b: Any) -> bool:
    return _lt(a, b) or _eq(a, b)


def _gt(a: Any, b: Any) -> bool:
    return not _le(a, b)


def _ge(a: Any, b: Any) -> bool:
    return not _lt(a, b)


def _eval_args(args: tuple[Any, ...]) -> str:
    """Go's ``evalArgs`` (for js, html, urlquery): ``fmt.Sprint`` of dereferenced arguments,
    with a nil argument printed as ``<no value>``."""
    if len(args) == 1 and type(args[0]) is str:
        return args[0]
    parts, prev_str = [], True
    for i, a in enumerate(args):
        text, is_str = ("<no value>", True) if a is None else (format_value(a), isinstance(a, str))
        if i and not is_str and not prev_str:
            parts.append(" ")
        parts.append(text)
        prev_str = is_str
    return "".join(parts)


def _len(v: Any) -> int:
    if isinstance(v, str):
        return len(go_bytes(v))
    if isinstance(v, (list, tuple, Mapping)):
        return len(v)
    if v is None:
        raise ExecError("len of nil pointer")
    raise ExecError(f"len of type {type_name(v)}")


def _index_arg(i: Any, cap: int) -> int:
    if not isinstance(i, int) or isinstance(i, bool):
        raise ExecError(f"cannot index slice/array with type {type_name(i)}")
    if i < 0 or i > cap:
        raise ExecError(f"index out of range: {i}")
    return i


def _index(item: Any, *idx: Any) -> Any:
    if item is None:
        raise ExecError("index of untyped nil")
    for i in idx:
        if isinstance(item, str):
            b = go_bytes(item)
            k = _index_arg(i, len(b))
            if k == len(b):
                raise ExecError(f"index out of range: {k}")
            item = b[k]
        elif isinstance(item, (list, tuple)):
            k = _index_arg(i, len(item))
            if k == len(item):
                raise ExecError(f"index out of range: {k}")
            item = item[k]
        elif isinstance(item, Mapping):
            if i is None:
                raise ExecError("value is nil; should be of type string")
            try:
                item = item[i]
            except KeyError:
                item = None
        else:
            raise ExecError(f"can't index item of type {type_name(item)}")
    return item


def _slice(item: Any, *idx: Any) -> Any:
    if item is None:
        raise ExecError("slice of untyped nil")
    if len(idx) > 3 or (isinstance(item, str) and len(idx) == 3):
        raise ExecError(f"too many slice indexes: {len(idx)}")
    seq: Any = go_bytes(item) if isinstance(item, str) else item
    if not isinstance(seq, (bytes, list, tuple)):
        raise ExecError(f"can't slice item of type {type_name(item)}")
    bounds = [0, len(seq)]
    for k, i in enumerate(idx[:2]):
        bounds[k] = _index_arg(i, len(seq))
    if bounds[0] > bounds[1]:
        raise ExecError(f"invalid slice index: {bounds[0]} > {bounds[1]}")
    part = seq[bounds[0]:bounds[1]]
    return part.decode("utf-8", "surrogateescape") if isinstance(part, bytes) else part


def _printf(fmt: Any, *args: Any) -> str:
    if not isinstance(fmt, str):
        raise ExecError(f"wrong type for value; expected string; got {type_name(fmt)}")
    return sprintf(fmt, *args)


def _not(v: Any) -> bool:
    return not truth(v)


_BUILTINS: dict[str, Callable[..., Any]] = {
    "eq": _eq, "ne": _ne, "lt": _lt, "le": _le, "gt": _gt, "ge": _ge, "not": _not,
    "len": _len, "index": _index, "slice": _slice,
    "print": sprint, "println": sprintln, "printf": _printf,
    "js": lambda *a: js_escape(_eval_args(a)),
    "html": lambda *a: html_escape(_eval_args(a)),
    "urlquery": lambda *a: urlquery_escape(_eval_args(a)),
}
_FIXED_ARITY = {"ne": 2, "lt": 2, "le": 2, "gt": 2, "ge": 2, "not": 1, "len": 1}
_LAZY = {"and", "or"}
FUNCTIONS = frozenset(_BUILTINS) | _LAZY

# --------------------------------------------------------------------------------------------
# Compiler: nodes -> closures. An expression is ``f(st, dot) -> value``; a command is
# ``f(st, dot, final) -> value``; a node writes to ``st.out``.

_Expr = Callable[[_State, Any], Any]
_Getter = Callable[[Any], Any]


def _simple_chain(names: tuple[str, ...]) -> _Getter:
    """``.A.B.C`` from dot with no arguments: the common case, with the lookups inlined."""
    if not all(n[0].isupper() for n in names):
        def generic(dot: Any) -> Any:
            for n in names:
                dot = _field(dot, n, None)
            return dot
        return generic

    def step(v: Any, n: str) -> Any:
        a = getattr(v, n, NO_VALUE)
        if a is NO_VALUE:
            return _field(v, n, None)
        if type(a) is MethodType:
            return _call_method(a, n, ())
        return a

    if len(names) == 2:
        n0, n1 = names

        def get2(dot: Any) -> Any:
            v = getattr(dot, n0, NO_VALUE)
            if v is NO_VALUE or type(v) is MethodType:
                v = step(dot, n0)
            a = getattr(v, n1, NO_VALUE)
            if a is NO_VALUE or type(a) is MethodType:
                return step(v, n1)
            return a
        return get2

    def get(dot: Any) -> Any:
        for n in names:
            dot = step(dot, n)
        return dot
    return get


_ESCAPERS = {"js": js_escape, "html": html_escape, "urlquery": urlquery_escape}


def _simple_part(node: Any) -> str | Callable[[Any], str] | None:
    """The text of a text node, or a renderer ``f(dot) -> str`` for an action that needs no
    variables: ``{{.A.B}}`` or ``{{js .A.B}}`` (also html, urlquery); None for anything else."""
    if node[0] == "text":
        return node[1]  # type: ignore[no-any-return]
    if node[0] != "action":
        return None
    decls, _, cmds = node[1]
    if decls or len(cmds) != 1:
        return None
    args = cmds[0]
    if len(args) == 1 and args[0][0] == "field":
        get = _simple_chain(args[0][1])

        def plain(dot: Any) -> str:
            v = get(dot)
            t = type(v)
            return v if t is str else str(v) if t is int else _printable(v)
        return plain
    if len(args) == 2 and args[0][0] == "func" and args[0][1] in _ESCAPERS and args[1][0] == "field":
        esc, get = _ESCAPERS[args[0][1]], _simple_chain(args[1][1])

        def escaped(dot: Any) -> str:
            v = get(dot)
            return esc(v if type(v) is str else _eval_args((_arg(v),)))
        return escaped
    return None


def _compile_arg(node: Any) -> _Expr:
    """An operand used as an argument (never given arguments itself)."""
    kind = node[0]
    if kind in ("bool", "number", "string"):
        const = node[1]
        return lambda st, dot: const
    if kind == "nil":
        return lambda st, dot: None
    if kind == "dot":
        return lambda st, dot: dot
    cmd = _compile_command([node])
    return lambda st, dot: cmd(st, dot, _NOFINAL)


def _chain(names: tuple[str, ...], argfns: list[_Expr]) -> Callable[[_State, Any, Any, Any], Any]:
    head, last = names[:-1], names[-1]

    def run(st: _State, dot: Any, recv: Any, final: Any) -> Any:
        for name in head:
            recv = _field(recv, name, None)
        if argfns or final is not _NOFINAL:
            args = [_arg(f(st, dot)) for f in argfns]
            if final is not _NOFINAL:
                args.append(_arg(final))
            return _field(recv, last, args)
        return _field(recv, last, None)

    return run


def _compile_command(args: list[Any]) -> Callable[[_State, Any, Any], Any]:
    first, rest = args[0], args[1:]
    kind = first[0]
    if kind == "field":
        names = first[1]
        if len(names) == 1 and not rest:  # the common case, kept short
            name = names[0]
            return lambda st, dot, final: _field(dot, name, None if final is _NOFINAL else [_arg(final)])
        run = _chain(names, [_compile_arg(a) for a in rest])
        return lambda st, dot, final: run(st, dot, dot, final)
    if kind == "var" and first[2]:
        vname = first[1]
        run = _chain(first[2], [_compile_arg(a) for a in rest])
        return lambda st, dot, final: run(st, dot, st.lookup(vname), final)
    if kind == "chain":
        base = _compile_arg(first[1])
        run = _chain(first[2], [_compile_arg(a) for a in rest])
        return lambda st, dot, final: run(st, dot, base(st, dot), final)
    if kind == "func":
        return _compile_call(first[1], [_compile_arg(a) for a in rest])
    if kind == "nil":
        def nil_command(st: _State, dot: Any, final: Any) -> Any:
            raise ExecError("nil is not a command")
        return nil_command
    if kind == "paren":
        value: _Expr = _compile_pipeline(first[1])
    elif kind == "var":
        vname = first[1]
        value = lambda st, dot: st.lookup(vname)  # noqa: E731
    else:
        value = _compile_arg(first)
    if rest:
        label = kind if kind != "var" else first[1]

        def bad(st: _State, dot: Any, final: Any) -> Any:
            raise ExecError(f"can't give argument to non-function {label}")
        return bad

    def run_value(st: _State, dot: Any, final: Any) -> Any:
        if final is not _NOFINAL:
            raise ExecError(f"can't give argument to non-function {kind}")
        return value(st, dot)
    return run_value


def _compile_call(fname: str, argfns: list[_Expr]) -> Callable[[_State, Any, Any], Any]:
    if fname in _LAZY:
        want = fname == "or"

        def lazy(st: _State, dot: Any, final: Any) -> Any:
            thunks: list[Callable[[], Any]] = [lambda f=f: f(st, dot) for f in argfns]
            if final is not _NOFINAL:
                thunks.append(lambda: final)
            if not thunks:
                raise ExecError(f"wrong number of args for {fname}: want at least 1 got 0")
            v: Any = None
            for t in thunks:
                v = t()
                if truth(v) == want:
                    return v
            return v
        return lazy
    fn = _BUILTINS[fname]
    arity = _FIXED_ARITY.get(fname)

    def call(st: _State, dot: Any, final: Any) -> Any:
        args = [_arg(f(st, dot)) for f in argfns]
        if final is not _NOFINAL:
            args.append(_arg(final))
        if arity is not None and len(args) != arity:
            raise ExecError(f"wrong number of args for {fname}: want {arity} got {len(args)}")
        if fname in ("index", "slice", "printf", "eq") and not args:
            raise ExecError(f"wrong number of args for {fname}: want at least 1 got 0")
        return fn(*args)
    return call


def _compile_pipeline(pipe: Any) -> _Expr:
    decls, is_assign, cmds = pipe
    runs = [_compile_command(c) for c in cmds]
    if len(runs) == 1:
        only = runs[0]

        def value(st: _State, dot: Any) -> Any:
            return only(st, dot, _NOFINAL)
    else:
        def value(st: _State, dot: Any) -> Any:
            v = _NOFINAL
            for r in runs:
                v = r(st, dot, v)
            return v
    if not decls:
        return value
    name = decls[0]

    def declare(st: _State, dot: Any) -> Any:
        v = value(st, dot)
        if is_assign:
            st.assign(name, v)
        else:
            st.vars.append([name, v])
        return v
    return declare


_Emit = Callable[[_State, Any], None]


def _compile_list(nodes: list[Any]) -> _Emit:
    emits = [_compile_node(n) for n in nodes]
    if len(emits) == 1:
        return emits[0]

    def run(st: _State, dot: Any) -> None:
        for e in emits:
            e(st, dot)
    return run


def _compile_node(node: Any) -> _Emit:
    kind = node[0]
    if kind == "text":
        text = node[1]
        return lambda st, dot: st.out.append(text)
    simple = _simple_part(node)
    if simple is not None and not isinstance(simple, str):
        return lambda st, dot: st.out.append(simple(dot))
    if kind == "action":
        pipe = node[1]
        value = _compile_pipeline(pipe)
        if pipe[0]:  # a declaration or assignment prints nothing
            def declare(st: _State, dot: Any) -> None:
                value(st, dot)
            return declare
        return lambda st, dot: st.out.append(_printable(value(st, dot)))
    if kind == "break":
        def brk(st: _State, dot: Any) -> None:
            raise _Break
        return brk
    if kind == "continue":
        def cont(st: _State, dot: Any) -> None:
            raise _Continue
        return cont
    _, pipe, body, else_body = node
    cond = _compile_pipeline(pipe)
    then = _compile_list(body) if body else (lambda st, dot: None)
    other = _compile_list(else_body) if else_body else (lambda st, dot: None)
    if kind == "if":
        def run_if(st: _State, dot: Any) -> None:
            mark = len(st.vars)
            (then if truth(cond(st, dot)) else other)(st, dot)
            del st.vars[mark:]
        return run_if
    if kind == "with":
        def run_with(st: _State, dot: Any) -> None:
            mark = len(st.vars)
            v = cond(st, dot)
            if truth(v):
                then(st, v)
            else:
                other(st, dot)
            del st.vars[mark:]
        return run_with
    decls, is_assign = pipe[0], pipe[1]
    raw = _compile_pipeline((decls[:0], False, pipe[2]))
    return _compile_range(raw, decls, is_assign, then, other)


def _compile_range(value: _Expr, decls: list[str], is_assign: bool, body: _Emit,
                   other: _Emit) -> _Emit:
    def run(st: _State, dot: Any) -> None:
        mark = len(st.vars)
        v = value(st, dot)
        if v is None or v is NO_VALUE:
            pairs: list[tuple[Any, Any]] = []
        elif isinstance(v, (list, tuple)):
            pairs = list(enumerate(v))
        elif isinstance(v, Mapping):
            pairs = [(k, v[k]) for k in sorted_keys(v)]
        elif isinstance(v, int) and not isinstance(v, bool):
            pairs = [(i, i) for i in range(v)]
        else:
            raise ExecError(f"range can't iterate over {format_value(v)}")
        if not pairs:
            other(st, dot)
            return
        for key, elem in pairs:
            del st.vars[mark:]
            values = (elem,) if len(decls) == 1 else (key, elem)
            for name, val in zip(decls, values):
                if is_assign:
                    st.assign(name, val)
                else:
                    st.vars.append([name, val])
            try:
                body(st, elem)
            except _Continue:
                continue
            except _Break:
                break
        del st.vars[mark:]
    return run


class Template:
    """A compiled template. ``template(data)`` returns the text or raises ``ExecError``."""

    __slots__ = ("name", "source", "_run", "_parts")

    def __init__(self, name: str, source: str, run: _Emit,
                 parts: list[str | Callable[[Any], str]] | None = None) -> None:
        self.name, self.source, self._run, self._parts = name, source, run, parts

    def __call__(self, data: Any) -> str:
        try:
            if self._parts is not None:  # flat template: no state, no variables
                return "".join([p if type(p) is str else p(data) for p in self._parts])
            st = _State(data)
            self._run(st, data)
        except ExecError as exc:
            raise ExecError(f"template: {self.name}: executing: {exc}") from None
        except RecursionError:
            raise ExecError(f"template: {self.name}: executing: too deep") from None
        return "".join(st.out)

    render = __call__

    def __repr__(self) -> str:
        return f"Template({self.name!r})"


def compile_template(source: str, name: str = "requestLog") -> Template:
    """Parse ``source`` once; raises ``TemplateError`` naming the line and the problem."""
    nodes = _Parser(_lex(source, name), name, FUNCTIONS).parse()
    if not nodes:
        return Template(name, source, lambda st, dot: None, [])
    parts = [_simple_part(n) for n in nodes]
    flat = None if any(p is None for p in parts) else parts
    return Template(name, source, _compile_list(nodes), flat)  # type: ignore[arg-type]
