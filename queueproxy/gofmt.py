"""Go's ``fmt`` for the values a Go template can hold: ``%v`` printing (floats as Go prints
a float64), ``Sprint``/``Sprintf`` with the verbs templates use, and the ``js``, ``html`` and
``urlquery`` escapers, byte for byte as Go writes them. Used by ``queueproxy.gotemplate``.

Strings stand for Go's byte strings: bytes that are not UTF-8 are carried as lone surrogates
(``surrogateescape``). Pure: no I/O.
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from functools import lru_cache
from types import MethodType
from typing import Any
from urllib.parse import quote_plus

__all__ = [
    "ExecError", "NO_VALUE", "format_float", "format_value", "go_bytes", "html_escape", "is_raw_byte",
    "js_escape", "quote", "sorted_keys", "sprint", "sprintf", "sprintln", "type_name", "urlquery_escape",
]


class ExecError(Exception):
    """Executing the template failed (Go's ``Execute`` error): a missing field, a bad call."""


class _NoValue:
    """Go's invalid ``reflect.Value``: what a missing map key evaluates to."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE: Any = _NoValue()


def _digits(x: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of a finite x > 0, and Go's decimal-point position."""
    r = repr(x)
    mant, _, exp = r.partition("e")
    ip, _, fp = mant.partition(".")
    allds = ip + fp
    stripped = allds.lstrip("0")
    dp = len(ip) + (int(exp) if exp else 0) - (len(allds) - len(stripped))
    return stripped.rstrip("0") or "0", dp


def _exp_suffix(exp: int, e: str) -> str:
    return f"{e}{'-' if exp < 0 else '+'}{abs(exp):02d}"


def format_float(x: float, e: str = "e") -> str:
    """``strconv.FormatFloat(x, 'g', -1, 64)``: what Go prints for a float64 with ``%v``."""
    if x != x:
        return "NaN"
    if x in (math.inf, -math.inf):
        return "+Inf" if x > 0 else "-Inf"
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    sign = "-" if x < 0 else ""
    ds, dp = _digits(abs(x))
    exp = dp - 1
    if exp < -4 or exp >= 6:
        return sign + ds[0] + ("." + ds[1:] if len(ds) > 1 else "") + _exp_suffix(exp, e)
    if dp <= 0:
        return sign + "0." + "0" * -dp + ds
    if dp >= len(ds):
        return sign + ds + "0" * (dp - len(ds))
    return sign + ds[:dp] + "." + ds[dp:]


def type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "[]interface {}"
    if isinstance(v, Mapping):
        return "map[string]interface {}"
    return type(v).__name__


def format_value(v: Any, pointer: bool = False) -> str:
    """Go's ``%v``. ``pointer`` prints a struct held by pointer as ``&{...}`` (``fmt.Sprint``
    does; a template action dereferences first, so it prints ``{...}``)."""
    t = type(v)
    if t is str:
        return v
    if t is int:
        return str(v)
    if t is bool:
        return "true" if v else "false"
    if t is float:
        return format_float(v)
    if v is None:
        return "<nil>"
    if v is NO_VALUE:
        return "<no value>"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(format_value(e, True) for e in v) + "]"
    if isinstance(v, Mapping):
        return "map[" + " ".join(f"{format_value(k)}:{format_value(v[k], True)}"
                                 for k in sorted_keys(v)) + "]"
    stringer = getattr(v, "String", None)
    if isinstance(stringer, MethodType):
        return str(stringer())
    fields = getattr(v, "__go_fields__", None)
    if fields is not None:
        body = "{" + " ".join(format_value(getattr(v, f), True) for f in fields) + "}"
        return "&" + body if pointer else body
    if isinstance(v, str):  # subclasses of the basic types
        return str.__str__(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return int.__repr__(v)
    if isinstance(v, float):
        return format_float(float(v))
    raise ExecError(f"can't print value of type {type(v).__name__}")


def sorted_keys(m: Mapping[Any, Any]) -> list[Any]:
    try:
        return sorted(m)
    except TypeError:
        return list(m)


def sprint(*args: Any) -> str:
    """``fmt.Sprint``: a space between operands when neither is a string."""
    out, prev_str = [], True
    for i, a in enumerate(args):
        is_str = isinstance(a, str)
        if i and not is_str and not prev_str:
            out.append(" ")
        out.append(format_value(a, True))
        prev_str = is_str
    return "".join(out)


def sprintln(*args: Any) -> str:
    return " ".join(format_value(a, True) for a in args) + "\n"


@lru_cache(maxsize=4096)
def _is_print(c: str) -> bool:
    """Go's ``unicode.IsPrint``: letters, marks, numbers, punctuation, symbols, ASCII space."""
    return c == " " or unicodedata.category(c)[0] in "LMNPS"


def is_raw_byte(c: str) -> bool:
    return "\udc80" <= c <= "\udcff"


_JS_SPECIAL = re.compile("[\x00-\x1f\\\\'\"<>&=\x80-\U0010ffff]")
_JS_ASCII = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E",
             "&": "\\u0026", "=": "\\u003D"}
_JS_ASCII.update({chr(i): "\\u00%02X" % i for i in range(0x20)})


def _js_char(m: re.Match[str]) -> str:
    c = m.group()
    if c < "\x80":
        return _JS_ASCII[c]
    if is_raw_byte(c) or _is_print(c):
        return c
    return "\\u%04X" % ord(c)


def js_escape(s: str) -> str:
    """Go's ``template.JSEscapeString``, byte for byte (note ``'`` becomes ``\\'``)."""
    if _JS_SPECIAL.search(s) is None:
        return s
    return _JS_SPECIAL.sub(_js_char, s)


_HTML = str.maketrans({"\0": "\ufffd", '"': "&#34;", "'": "&#39;", "&": "&amp;",
                       "<": "&lt;", ">": "&gt;"})


def html_escape(s: str) -> str:
    """Go's ``template.HTMLEscapeString``."""
    return s.translate(_HTML)


def go_bytes(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def urlquery_escape(s: str) -> str:
    """Go's ``url.QueryEscape``."""
    return quote_plus(go_bytes(s), safe="")


_QUOTE_CTRL = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "\v": "\\v", "\\": "\\\\"}


def quote(s: str, q: str = '"') -> str:
    """Go's ``strconv.Quote`` (and ``QuoteRune`` with ``q="'"``)."""
    out = [q]
    for c in s:
        o = ord(c)
        if c == q:
            out.append("\\" + c)
        elif c in _QUOTE_CTRL:
            out.append(_QUOTE_CTRL[c])
        elif is_raw_byte(c):
            out.append("\\x%02x" % (o - 0xDC00))
        elif o < 0x80 and (o < 0x20 or o == 0x7F):
            out.append("\\x%02x" % o)
        elif o < 0x80 or _is_print(c):
            out.append(c)
        elif o > 0xFFFF:
            out.append("\\U%08x" % o)
        else:
            out.append("\\u%04x" % o)
    out.append(q)
    return "".join(out)


_VERB = re.compile(r"%([-+# 0]*)(\*|\d+)?(?:\.(\*|\d*))?(.?)", re.S)


def _pad(s: str, width: int | None, minus: bool, zero: bool = False) -> str:
    if width is None or len(s) >= width:
        return s
    if minus:
        return s + " " * (width - len(s))
    if zero:
        sign = s[0] if s[:1] in ("-", "+", " ") else ""
        return sign + "0" * (width - len(s)) + s[len(sign):]
    return " " * (width - len(s)) + s


def _bad(verb: str, v: Any) -> str:
    return f"%!{verb}(<nil>)" if v is None else f"%!{verb}({type_name(v)}={format_value(v, True)})"


def _fmt_one(verb: str, flags: str, width: int | None, prec: int | None, v: Any) -> str:
    minus, plus, zero, space, sharp = ("-" in flags, "+" in flags, "0" in flags and "-" not in flags,
                                       " " in flags, "#" in flags)
    is_int = isinstance(v, int) and not isinstance(v, bool)
    if verb in "dxXob" and is_int:
        base = {"d": 10, "x": 16, "X": 16, "o": 8, "b": 2}[verb]
        digits = "" if prec == 0 and v == 0 else format(abs(v), {10: "d", 16: "x", 8: "o", 2: "b"}[base])
        if verb == "X":
            digits = digits.upper()
        if prec is not None:
            digits = digits.zfill(prec)
        if sharp and base != 10:
            digits = {16: "0x" if verb == "x" else "0X", 8: "0", 2: "0b"}[base] + digits
        sign = "-" if v < 0 else "+" if plus else " " if space else ""
        return _pad(sign + digits, width, minus, zero and prec is None)
    if verb in "xX" and isinstance(v, str):
        h = go_bytes(v).hex()
        return _pad(h.upper() if verb == "X" else h, width, minus)
    if verb in "eEfFgG" and isinstance(v, float):
        if v != v or v in (math.inf, -math.inf):
            s = "NaN" if v != v else ("+Inf" if v > 0 else "-Inf")
            if v != v and (plus or space):
                s = ("+" if plus else " ") + s
            elif v == math.inf and space and not plus:
                s = " Inf"
            return _pad(s, width, minus)
        if verb in "gG" and prec is None:
            s = format_float(v, "E" if verb == "G" else "e")
        else:
            s = format(v, f".{6 if prec is None else prec}{verb.lower() if verb == 'F' else verb}")
        if plus and not s.startswith("-"):
            s = "+" + s
        elif space and not s.startswith("-"):
            s = " " + s
        return _pad(s, width, minus, zero)
    if verb == "T":
        return _pad("<nil>" if v is None else type_name(v), width, minus)
    if verb == "t" and isinstance(v, bool):
        return _pad("true" if v else "false", width, minus)
    if verb == "c" and is_int:
        return _pad(chr(v) if 0 <= v <= 0x10FFFF else "\ufffd", width, minus)
    if verb == "q":
        if isinstance(v, str):
            return _pad(quote(v), width, minus)
        if is_int:
            return _pad(quote(chr(v) if 0 <= v <= 0x10FFFF else "\ufffd", "'"), width, minus)
    if verb in "sv":
        if verb == "v" and isinstance(v, float):
            return _fmt_one("g", flags, width, prec, v)
        if verb == "v" and is_int:
            return _fmt_one("d", flags, width, prec, v)
        s = _fmt_s(v) if verb == "s" else format_value(v, True)
        if prec is not None:
            s = s[:prec]
        return _pad(s, width, minus)
    return _bad(verb, v)


def _fmt_s(v: Any) -> str:
    """``%s``: strings and Stringers as they are, containers element by element."""
    if isinstance(v, str):
        return v
    if isinstance(getattr(v, "String", None), MethodType):
        return str(v.String())
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(_fmt_s(e) for e in v) + "]"
    if isinstance(v, Mapping):
        return "map[" + " ".join(f"{_fmt_s(k)}:{_fmt_s(v[k])}" for k in sorted_keys(v)) + "]"
    fields = getattr(v, "__go_fields__", None)
    if fields is not None and v is not None:
        return "&{" + " ".join(_fmt_s(getattr(v, f)) for f in fields) + "}"
    return _bad("s", v)


def sprintf(fmt: str, *args: Any) -> str:
    """Go's ``fmt.Sprintf`` for the verbs ``v s q d x X o b c t T e E f F g G %``."""
    out: list[str] = []
    argi, pos = 0, 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        flags, width_s, prec_s, verb = m.groups()
        if verb == "":
            out.append("%!(NOVERB)")
            continue
        if verb == "%":
            out.append("%")
            continue
        width = prec = None
        if width_s == "*":
            if argi < len(args) and isinstance(args[argi], int):
                width = args[argi]
                if width < 0:
                    flags, width = flags + "-", -width
            else:
                out.append("%!(BADWIDTH)")
            argi += 1
        elif width_s:
            width = int(width_s)
        if prec_s == "*":
            if argi < len(args) and isinstance(args[argi], int):
                prec = max(args[argi], 0)
            else:
                out.append("%!(BADPREC)")
            argi += 1
        elif prec_s is not None:
            prec = int(prec_s or 0)
        if argi >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        out.append(_fmt_one(verb, flags, width, prec, args[argi]))
        argi += 1
    out.append(fmt[pos:])
    if argi < len(args):
        extra = ", ".join("<nil>" if a is None else f"{type_name(a)}={format_value(a, True)}"
                          for a in args[argi:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)
