"""Go's formatting as templates see it: js/html/urlquery escaping, %v floats, printf verbs."""
from __future__ import annotations

import math

import pytest

from queueproxy.gotemplate import (
    compile_template,
    format_float,
    html_escape,
    js_escape,
    quote,
    sprint,
    sprintf,
    urlquery_escape,
)


@pytest.mark.parametrize(("raw", "want"), [
    # The cases of Go's own TestJSEscaping.
    pytest.param("a", "a", id="plain"),
    pytest.param("'foo", "\\'foo", id="apostrophe"),
    pytest.param('Go "jump" \\', 'Go \\"jump\\" \\\\', id="quote and backslash"),
    pytest.param('Yukihiro says "今日は世界"', 'Yukihiro says \\"今日は世界\\"', id="printable unicode"),
    pytest.param("unprintable \ufffe", "unprintable \\uFFFE", id="unprintable unicode"),
    pytest.param("<html>", "\\u003Chtml\\u003E", id="angle brackets"),
    pytest.param("no = in attributes", "no \\u003D in attributes", id="equals"),
    pytest.param("&#x27; does not become HTML entity", "\\u0026#x27; does not become HTML entity",
                 id="ampersand"),
    # Control characters, DEL, non-printable spaces, bytes that are not UTF-8.
    pytest.param("a\nb\tc\x00\x1f", "a\\u000Ab\\u0009c\\u0000\\u001F", id="controls"),
    pytest.param("del\x7f", "del\x7f", id="DEL passes through"),
    pytest.param("nb\u00a0sp \u2028", "nb\\u00A0sp \\u2028", id="non-printable spaces"),
    pytest.param("emoji \U0001F600 é", "emoji \U0001F600 é", id="printable astral and accents"),
    pytest.param(b"bad \xff\xfe".decode("utf-8", "surrogateescape"),
                 b"bad \xff\xfe".decode("utf-8", "surrogateescape"), id="invalid bytes pass raw"),
])
def test_js_escapes_exactly_as_go(raw: str, want: str) -> None:
    assert js_escape(raw) == want


def test_js_leaves_a_string_without_specials_untouched() -> None:
    s = "/path/to?x-y_z.1~"
    assert js_escape(s) is s


def test_html_escape_like_go() -> None:
    assert html_escape("<a href=\"x\">'&'\x00</a>") == (
        "&lt;a href=&#34;x&#34;&gt;&#39;&amp;&#39;\ufffd&lt;/a&gt;")


@pytest.mark.parametrize(("raw", "want"), [
    pytest.param("http://www.example.org/", "http%3A%2F%2Fwww.example.org%2F", id="url"),
    pytest.param("a b+c&d=é~._-", "a+b%2Bc%26d%3D%C3%A9~._-", id="space plus and utf-8"),
    pytest.param(b"\xff".decode("utf-8", "surrogateescape"), "%FF", id="raw byte"),
])
def test_urlquery_escape_like_go(raw: str, want: str) -> None:
    assert urlquery_escape(raw) == want


@pytest.mark.parametrize(("value", "want"), [
    pytest.param(0.0, "0", id="zero"),
    pytest.param(-0.0, "-0", id="negative zero"),
    pytest.param(1.0, "1", id="integral"),
    pytest.param(15.1, "15.1", id="simple"),
    pytest.param(0.001655826, "0.001655826", id="typical latency"),
    pytest.param(0.0001, "0.0001", id="exponent -4 stays plain"),
    pytest.param(0.00001234, "1.234e-05", id="exponent -5 goes scientific"),
    pytest.param(123456.0, "123456", id="exponent 5 stays plain"),
    pytest.param(1e6, "1e+06", id="exponent 6 goes scientific"),
    pytest.param(1234567.0, "1.234567e+06", id="scientific with digits"),
    pytest.param(1e21, "1e+21", id="large"),
    pytest.param(1e100, "1e+100", id="three-digit exponent"),
    pytest.param(1.5e-7, "1.5e-07", id="small"),
    pytest.param(0.1 + 0.2, "0.30000000000000004", id="shortest round-trip digits"),
    pytest.param(-2.5, "-2.5", id="negative"),
    pytest.param(math.inf, "+Inf", id="inf"),
    pytest.param(-math.inf, "-Inf", id="negative inf"),
    pytest.param(math.nan, "NaN", id="nan"),
])
def test_floats_print_as_go_prints_float64_with_v(value: float, want: str) -> None:
    assert format_float(value) == want
    assert compile_template("{{.}}")(value) == want


@pytest.mark.parametrize(("fmt", "args", "want"), [
    pytest.param("%5.2f|", (3.14159,), " 3.14|", id="width and precision"),
    pytest.param("%-5d|", (42,), "42   |", id="left justify"),
    pytest.param("%05d", (-42,), "-0042", id="zero pad after sign"),
    pytest.param("%+d % d", (5, 5), "+5  5", id="sign flags"),
    pytest.param("%x %X %o %b %#x", (255, 255, 8, 5, 255), "ff FF 10 101 0xff", id="bases"),
    pytest.param("%x", ("hi",), "6869", id="hex of a string"),
    pytest.param("%q", ('a"b\n\x00é\u2028',), '"a\\"b\\n\\x00é\\u2028"', id="quoted string"),
    pytest.param("%q", (65,), "'A'", id="quoted rune"),
    pytest.param("%c%c", (72, 105), "Hi", id="chars"),
    pytest.param("%t", (True,), "true", id="bool"),
    pytest.param("%v %v %v", ([1, 2], {"b": 2, "a": 1}, None), "[1 2] map[a:1 b:2] <nil>", id="values"),
    pytest.param("%e", (1234.5678,), "1.234568e+03", id="e"),
    pytest.param("%g %G", (1e6, 1e-7), "1e+06 1E-07", id="shortest g"),
    pytest.param("%.3g", (1234.0,), "1.23e+03", id="g with precision"),
    pytest.param("%.2s|%6s|", ("abcdef", "ab"), "ab|    ab|", id="string precision and width"),
    pytest.param("%s", ([["a", "b"]],), "[[a b]]", id="s on nested slices"),
    pytest.param("%f", (math.inf,), "+Inf", id="inf"),
    pytest.param("%T %T %T %T", (1, 1.5, "s", None), "int float64 string <nil>", id="types"),
    pytest.param("100%%", (), "100%", id="percent"),
    pytest.param("%s", (5,), "%!s(int=5)", id="wrong type"),
    pytest.param("%d", ("x",), "%!d(string=x)", id="wrong type string"),
    pytest.param("%d", (True,), "%!d(bool=true)", id="bool is not an int"),
    pytest.param("%d %d", (1,), "1 %!d(MISSING)", id="missing"),
    pytest.param("%d", (1, "x"), "1%!(EXTRA string=x)", id="extra"),
    pytest.param("%z", (1,), "%!z(int=1)", id="unknown verb"),
    pytest.param("abc%", (), "abc%!(NOVERB)", id="no verb"),
    pytest.param("%*d|", (4, 7), "   7|", id="star width"),
])
def test_sprintf_like_go(fmt: str, args: tuple[object, ...], want: str) -> None:
    assert sprintf(fmt, *args) == want


def test_sprint_spaces_only_between_non_strings() -> None:
    assert sprint(1, 2, "a", 3, "b", "c", 4.5, True) == "1 2a3bc4.5 true"


@pytest.mark.parametrize(("raw", "want"), [
    pytest.param("plain", '"plain"', id="plain"),
    pytest.param("tab\there", '"tab\\there"', id="tab"),
    pytest.param("\x7f\x01", '"\\x7f\\x01"', id="controls"),
    pytest.param("\U0001F600\U000E0001", '"\U0001F600\\U000e0001"', id="astral"),
    pytest.param(b"\xff".decode("utf-8", "surrogateescape"), '"\\xff"', id="invalid byte"),
])
def test_quote_like_strconv_quote(raw: str, want: str) -> None:
    assert quote(raw) == want
