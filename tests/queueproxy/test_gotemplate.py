"""The Go text/template subset: what templates render to, and what is rejected when.

Expected outputs are what Go's text/template produces for the same template and data
(the cases follow the behaviour pinned by Go's own exec tests).
"""
from __future__ import annotations

import pytest

from queueproxy.gotemplate import ExecError, TemplateError, compile_template


class U:
    V = "v"


class Stringer:
    def __init__(self, n: int) -> None:
        self.n = n

    def String(self) -> str:  # noqa: N802 - a Go method
        return f"<{self.n}>"


class Pair:
    __go_fields__ = ("A", "B")

    def __init__(self) -> None:
        self.A, self.B = 7, "seven"


class T:
    """A Go struct: exported fields and methods."""

    def __init__(self) -> None:
        self.X = "x"
        self.U = U()
        self.I = 17
        self.SI = [3, 4, 5]
        self.SIEmpty: list[int] = []
        self.MSI = {"one": 1, "two": 2, "three": 3}
        self.MSIone = {"one": 1}
        self.MSIEmpty: dict[str, int] = {}
        self.S = "xyz"
        self.Empty0 = None
        self.FloatZero = 0.0
        self.V0 = Stringer(6666)
        self.P = Pair()
        self.unexported = "hidden"

    def Method0(self) -> str:  # noqa: N802
        return "M0"

    def Method1(self, i: int) -> int:  # noqa: N802
        return i

    def Method2(self, a: int, b: str) -> str:  # noqa: N802
        return f"Method2: {a} {b}"


def render(src: str, data: object = None) -> str:
    return compile_template(src, "t")(data)


@pytest.mark.parametrize(("src", "data", "want"), [
    pytest.param("", None, "", id="empty"),
    pytest.param("some text", None, "some text", id="text"),
    pytest.param("-{{.X}}-", T(), "-x-", id="field"),
    pytest.param("-{{.U.V}}-", T(), "-v-", id="field chain"),
    pytest.param("{{.MSI.one}}", T(), "1", id="map key"),
    pytest.param("{{.MSI.NO}}", T(), "<no value>", id="missing map key"),
    pytest.param("{{.cause}}", {"cause": "neglect"}, "neglect", id="lower-case map key"),
    pytest.param("{{.foo}}", None, "<no value>", id="field of nil data"),
    pytest.param("<{{.}}>", 13, "<13>", id="dot int"),
    pytest.param("<{{.}}>", 15.1, "<15.1>", id="dot float"),
    pytest.param("<{{.}}>", True, "<true>", id="dot bool"),
    pytest.param("<{{.}}>", [-1, -2, -3], "<[-1 -2 -3]>", id="dot slice"),
    pytest.param("<{{.}}>", {"two": 22, "one": 1}, "<map[one:1 two:22]>", id="dot map sorted"),
    pytest.param("<{{.P}}>", T(), "<{7 seven}>", id="struct printed without &"),
    pytest.param("{{print .P}}", T(), "&{7 seven}", id="struct pointer through print"),
    pytest.param("-{{.V0}}-", T(), "-<6666>-", id="Stringer"),
    pytest.param("{{$}}", 123, "123", id="root variable"),
    pytest.param("{{$.U.V}}", T(), "v", id="root variable chain"),
    pytest.param("{{$x := $.U.V}}{{$x}}", T(), "v", id="declare"),
    pytest.param("{{$x := 2}}{{$x = 3}}{{$x}}", None, "3", id="assign"),
    pytest.param("{{$x := 2}}{{if true}}{{$x = 3}}{{end}}{{$x}}", None, "3", id="nested assign"),
    pytest.param("{{$x := 1}}{{if true}}{{$x := 2}}{{if true}}{{$x = 3}}{{end}}{{end}}{{$x}}",
                 None, "1", id="assign changes the innermost declaration"),
    pytest.param("-{{.Method0}}-", T(), "-M0-", id="method"),
    pytest.param("-{{.Method1 1234}}-", T(), "-1234-", id="method with argument"),
    pytest.param("-{{.Method2 3 .X}}-", T(), "-Method2: 3 x-", id="method with two arguments"),
    pytest.param("-{{.Method0 | .Method2 16}}-", T(), "-Method2: 16 M0-", id="pipeline into method"),
    pytest.param("{{if $x := .X}}-{{.Method2 16 $x}}{{end}}-", T(), "-Method2: 16 x-",
                 id="variable as argument"),
    pytest.param("{{(1)}}", None, "1", id="parenthesized constant"),
    pytest.param("{{printf `%d %s` (1) (2 | print)}}", None, "1 2", id="parens in pipeline"),
    pytest.param("{{($).X}}", T(), "x", id="field of parenthesized"),
    pytest.param("{{if true}}TRUE{{end}}", None, "TRUE", id="if true"),
    pytest.param("{{if false}}TRUE{{else}}FALSE{{end}}", None, "FALSE", id="if false"),
    pytest.param("{{if 0}}NON-ZERO{{else}}ZERO{{end}}", None, "ZERO", id="if 0"),
    pytest.param("{{if 1.5}}NON-ZERO{{else}}ZERO{{end}}", None, "NON-ZERO", id="if 1.5"),
    pytest.param("{{if .FloatZero}}NON-ZERO{{else}}ZERO{{end}}", T(), "ZERO", id="if 0.0"),
    pytest.param("{{if ``}}NON-EMPTY{{else}}EMPTY{{end}}", None, "EMPTY", id="if empty string"),
    pytest.param("{{if .SIEmpty}}NON-EMPTY{{else}}EMPTY{{end}}", T(), "EMPTY", id="if empty slice"),
    pytest.param("{{if .MSI}}NON-EMPTY{{else}}EMPTY{{end}}", T(), "NON-EMPTY", id="if map"),
    pytest.param("{{if .Empty0}}non-nil{{else}}nil{{end}}", T(), "nil", id="if nil"),
    pytest.param("{{if eq 1 3}}1{{else if eq 2 3}}2{{else if eq 3 3}}3{{end}}", None, "3",
                 id="else if chain"),
    pytest.param("{{if $x := true}}{{with $x := .I}}{{$x}},{{end}}{{$x}}{{end}}", T(), "17,true",
                 id="variables are scoped to their block"),
    pytest.param("{{with 1.5}}{{.}}{{else}}ZERO{{end}}", None, "1.5", id="with value"),
    pytest.param("{{with 0}}{{.}}{{else}}ZERO{{end}}", None, "ZERO", id="with zero"),
    pytest.param("{{with .MSIone}}{{.}}{{end}}", T(), "map[one:1]", id="with map"),
    pytest.param("{{with 0}}{{.}}{{else with `notempty`}}{{.}}{{end}}", None, "notempty",
                 id="else with"),
    pytest.param("{{range .SI}}-{{.}}-{{end}}", T(), "-3--4--5-", id="range slice"),
    pytest.param("{{range .SIEmpty}}-{{.}}-{{else}}EMPTY{{end}}", T(), "EMPTY", id="range else"),
    pytest.param("{{range .SI}}-{{.}}-{{break}}NOTREACHED{{end}}", T(), "-3-", id="break"),
    pytest.param("{{range .SI}}-{{.}}-{{continue}}NOTREACHED{{end}}", T(), "-3--4--5-", id="continue"),
    pytest.param("{{range .MSI}}-{{.}}-{{end}}", T(), "-1--3--2-", id="range map by sorted key"),
    pytest.param("{{range $x, $y := .SI}}<{{$x}}={{$y}}>{{end}}", T(), "<0=3><1=4><2=5>",
                 id="range index and element"),
    pytest.param("{{range $x, $y := .MSIone}}<{{$x}}={{$y}}>{{end}}", T(), "<one=1>", id="range key value"),
    pytest.param("{{range $x := .SI}}<{{$foo := $x}}{{$x}}>{{end}}", T(), "<3><4><5>",
                 id="declare inside range"),
    pytest.param("{{range .Empty0}}-{{.}}-{{end}}", T(), "", id="range over nil"),
    pytest.param('{{range $v := 3}}{{printf "%T%d" $v $v}}{{end}}', None, "int0int1int2",
                 id="range over int"),
    pytest.param("{{$i := 0}}{{range $i = .SI}}{{end}}{{$i}}", T(), "5", id="range assigns"),
    pytest.param("{{$k := 0}}{{$v := 0}}{{range $k, $v = .SI}}{{$k}}={{$v}} {{end}}", T(),
                 "0=3 1=4 2=5 ", id="range assigns two"),
    pytest.param('{{print "hello, print"}}', None, "hello, print", id="print"),
    pytest.param("{{print 1 2 3}}", None, "1 2 3", id="print spaces between non-strings"),
    pytest.param('{{print "a" 1 2 "b"}}', None, "a1 2b", id="print no space next to strings"),
    pytest.param("{{print nil}}", None, "<nil>", id="print nil"),
    pytest.param("{{println 1 2 3}}", None, "1 2 3\n", id="println"),
    pytest.param('{{printf "%04x" 127}}', None, "007f", id="printf int"),
    pytest.param('{{printf "%g" 3.5}}', None, "3.5", id="printf float"),
    pytest.param('{{printf "%s" .U.V}}', T(), "v", id="printf field"),
    pytest.param('{{with .I}}{{printf "%d" .}}{{end}}', T(), "17", id="printf dot"),
    pytest.param('{{"aaa" | printf}}', None, "aaa", id="printf from pipe"),
    pytest.param('{{html "<script>alert(\\"XSS\\");</script>"}}', None,
                 "&lt;script&gt;alert(&#34;XSS&#34;);&lt;/script&gt;", id="html"),
    pytest.param('{{printf "<b>" | html}}', None, "&lt;b&gt;", id="html pipeline"),
    pytest.param("{{html .Empty0}}", T(), "&lt;no value&gt;", id="html of nil"),
    pytest.param("{{js .}}", "It'd be nice.", "It\\'d be nice.", id="js"),
    pytest.param('{{"http://www.example.org/"|urlquery}}', None, "http%3A%2F%2Fwww.example.org%2F",
                 id="urlquery"),
    pytest.param("{{not true}} {{not false}}", None, "false true", id="not"),
    pytest.param("{{and false 0}} {{and 1 0}} {{and 0 true}} {{and 1 1}}", None, "false 0 0 1", id="and"),
    pytest.param("{{or 0 0}} {{or 1 0}} {{or 0 true}} {{or 1 1}}", None, "0 1 true 1", id="or"),
    pytest.param("{{or 0 1 (index .SI 10)}}", T(), "1", id="or short-circuits"),
    pytest.param("{{and 1 0 (index .SI 10)}}", T(), "0", id="and short-circuits"),
    pytest.param("{{1 | and 1}} {{0 | or 0}}", None, "1 0", id="and/or take the piped value last"),
    pytest.param("{{and 1 .Unknown}}", None, "<no value>", id="and keeps a missing value"),
    pytest.param('{{or .SIEmpty "slice is empty"}}', T(), "slice is empty", id="or as default"),
    pytest.param("{{if true | not | and 1}}TRUE{{else}}FALSE{{end}}", None, "FALSE", id="bool pipe"),
    pytest.param("{{index .SI 1}}", T(), "4", id="index slice"),
    pytest.param("{{index .MSI `two`}}", T(), "2", id="index map"),
    pytest.param('{{index "abc" 1}}', None, "98", id="index string gives a byte"),
    pytest.param("{{slice .SI 1 2}}", T(), "[4]", id="slice"),
    pytest.param("{{slice .S 1}}", T(), "yz", id="slice string"),
    pytest.param("{{len .SI}} {{len .MSI}} {{len `héllo`}}", T(), "3 3 6", id="len counts bytes"),
    pytest.param("{{eq 3 4 5 6 3}} {{ne 1 2}} {{lt 1.5 2.5}} {{le `xy` `xy`}} {{gt 2 1}} {{ge 1 2}}",
                 None, "true true true true true false", id="comparisons"),
    pytest.param("{{eq . '.'}}", ord("."), "true", id="char constant is an int"),
    pytest.param("{{eq (index `x` 0) 'x'}}", None, "true", id="byte equals char"),
    pytest.param("{{eq .Empty0 0}}", T(), "false", id="nil is not equal to 0"),
    pytest.param("{{print 12_34}} {{print 0b101}} {{print 0377}} {{print 0o_3_7_7}} {{print 0X123ABC}}",
                 None, "1234 5 255 255 1194684", id="integer literals"),
    pytest.param("{{print 123.4}} {{print 0_0_1_2_3.4}} {{print +0x1.ep+2}} {{print 1e3}}", None,
                 "123.4 123.4 7.5 1000", id="float literals"),
    pytest.param("{{printf `%T` 0xef}} {{printf `%T` 1e1}}", None, "int float64",
                 id="hex e is a digit, 1e1 is a float"),
    pytest.param('{{"a\\tb\\x41\\u00e9\\101"}}', None, "a\tbAéA", id="string escapes"),
    pytest.param("{{`raw\\n`}}", None, "raw\\n", id="raw string"),
    pytest.param("a {{- 1 -}} b", None, "a1b", id="trim markers"),
    pytest.param("a {{-3}} b", None, "a -3 b", id="minus number is not a trim marker"),
    pytest.param("x\n  {{- /* comment */ -}}\n  y", None, "xy", id="trimmed comment"),
    pytest.param("{{/* a comment */}}ok", None, "ok", id="comment"),
    pytest.param("{{.X\n}}", T(), "x", id="newline inside an action"),
])
def test_template_renders_like_go(src: str, data: object, want: str) -> None:
    assert render(src, data) == want


@pytest.mark.parametrize(("src", "message"), [
    pytest.param("{{nope}}", "function 'nope' not defined", id="unknown function"),
    pytest.param("{{$x}}", "undefined variable '$x'", id="undefined variable"),
    pytest.param("{{$x = 1}}", "undefined variable '$x'", id="assign to undefined"),
    pytest.param("{{.X", "unclosed action", id="unclosed action"),
    pytest.param('{{"abc}}', "unterminated quoted string", id="unterminated string"),
    pytest.param("{{`abc}}", "unterminated raw quoted string", id="unterminated raw string"),
    pytest.param("{{end}}", "unexpected {{end}}", id="stray end"),
    pytest.param("{{else}}", "unexpected {{else}}", id="stray else"),
    pytest.param("{{if true}}x", "unexpected EOF", id="missing end"),
    pytest.param("{{}}", "missing value for command", id="empty action"),
    pytest.param("{{if}}x{{end}}", "missing value for if", id="empty if"),
    pytest.param("{{.X | 1}}", "non executable command in pipeline stage 2", id="constant after pipe"),
    pytest.param('{{define "x"}}{{end}}', "{{define}} is not supported", id="define"),
    pytest.param('{{template "x"}}', "{{template}} is not supported", id="template"),
    pytest.param('{{block "x" .}}{{end}}', "{{block}} is not supported", id="block"),
    pytest.param("{{call .F}}", "function 'call' not defined", id="call"),
    pytest.param("{{1i}}", "complex number 1i is not supported", id="complex"),
    pytest.param("{{break}}", "{{break}} outside {{range}}", id="break outside range"),
    pytest.param("{{3x}}", "bad number syntax", id="bad number"),
    pytest.param("{{/* open", "unclosed comment", id="unclosed comment"),
    pytest.param("{{/* c */ .X}}", "comment ends before closing delimiter", id="comment with content"),
    pytest.param("{{(.X}}", "unclosed left paren", id="unclosed paren"),
    pytest.param("{{.X)}}", "unexpected right paren", id="stray paren"),
    pytest.param("{{'ab'}}", "malformed character constant", id="long char"),
    pytest.param('{{"\\q"}}', "unknown escape sequence", id="bad escape"),
    pytest.param("{{$x=1}}", "bad character '='", id="no space before ="),
    pytest.param("{{$a, $b := .}}", "too many declarations in command", id="two vars outside range"),
    pytest.param("{{#}}", "unexpected '#' in command", id="bad character"),
])
def test_compile_rejects_bad_or_unsupported_templates(src: str, message: str) -> None:
    with pytest.raises(TemplateError, match="^template: t:1: ") as info:
        compile_template(src, "t")
    assert message in str(info.value)


def test_compile_errors_name_the_line() -> None:
    with pytest.raises(TemplateError, match="^template: t:3: function 'nope' not defined"):
        compile_template("a\nb\n{{nope}}", "t")


@pytest.mark.parametrize(("src", "data", "message"), [
    pytest.param("{{.Missing}}", T(), "can't evaluate field Missing in type T", id="missing field"),
    pytest.param("{{.unexported}}", T(), "unexported field", id="unexported field"),
    pytest.param("{{.X.Y}}", 0, "can't evaluate field X in type int", id="field of int"),
    pytest.param("{{nil}}", None, "nil is not a command", id="nil command"),
    pytest.param("{{if nil}}x{{end}}", None, "nil is not a command", id="nil condition"),
    pytest.param("{{1 2}}", None, "can't give argument to non-function", id="argument to constant"),
    pytest.param("{{(1) 2}}", None, "can't give argument to non-function", id="argument to parens"),
    pytest.param("{{$x := 1}}{{3 | $x}}", None, "can't give argument to non-function", id="pipe to var"),
    pytest.param("{{.MSI.one 1}}", T(), "is not a method but has arguments", id="argument to map key"),
    pytest.param("{{.X 1}}", T(), "has arguments but cannot be invoked", id="argument to field"),
    pytest.param("{{.Method1}}", T(), "error calling Method1", id="method missing argument"),
    pytest.param("{{index .SI 10}}", T(), "index out of range: 10", id="index out of range"),
    pytest.param("{{index .SI `x`}}", T(), "cannot index slice/array with type string", id="bad index"),
    pytest.param("{{index nil 1}}", None, "index of untyped nil", id="index nil"),
    pytest.param("{{slice .SI 2 1}}", T(), "invalid slice index: 2 > 1", id="bad slice"),
    pytest.param("{{slice .S 1 2 2}}", T(), "too many slice indexes", id="3-index string slice"),
    pytest.param("{{len 3}}", None, "len of type int", id="len of int"),
    pytest.param("{{eq `xy` 1}}", None, "incompatible types for comparison", id="eq mixed"),
    pytest.param("{{eq 2 2.0}}", None, "incompatible types for comparison", id="eq int float"),
    pytest.param("{{lt true true}}", None, "invalid type for comparison", id="lt bools"),
    pytest.param("{{1 | printf}}", None, "expected string; got int", id="printf format not string"),
    pytest.param("{{not 1 2}}", None, "wrong number of args for not: want 1 got 2", id="not arity"),
    pytest.param("{{range .X}}{{end}}", T(), "range can't iterate over x", id="range over string"),
])
def test_execution_errors_like_go(src: str, data: object, message: str) -> None:
    tpl = compile_template(src, "t")
    with pytest.raises(ExecError, match="^template: t: executing: ") as info:
        tpl(data)
    assert message in str(info.value)


def test_a_compiled_template_renders_many_times_with_different_data() -> None:
    tpl = compile_template("{{.A}}-{{range .L}}{{.}}{{end}}")
    assert tpl({"A": 1, "L": [1, 2]}) == "1-12"
    assert tpl({"A": "z", "L": []}) == "z-"


def test_variables_do_not_leak_between_executions() -> None:
    tpl = compile_template("{{range .}}{{$x := .}}{{$x}}{{end}}{{$}}")
    assert tpl([1, 2]) == "12[1 2]"
    assert tpl([3]) == "3[3]"


def test_unexecuted_branches_may_hold_runtime_errors() -> None:
    assert render("{{if false}}{{nil}}{{.Nope.Deeper}}{{end}}ok", T()) == "ok"
