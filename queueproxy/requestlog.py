"""Request logs: one line per request from upstream's Go template, written to stdout.

Upstream (``pkg/http/request_log.go``) renders ``requestLogTemplate`` for every request when
``enableRequestLog`` is on, with ``.Request`` (Go's ``*http.Request``), ``.Response``
(``{Code, Size, Latency}``, latency in float seconds), ``.Revision`` (``{Name, Namespace,
Service, Configuration, PodName, PodIP}``) and ``.TraceID``; it appends a newline when the
template lacks one, and writes a fixed fallback line when the template fails to execute.
Probe requests are skipped unless ``enableProbeRequestLog``.

How the proxy engine uses it::

    request_logger = RequestLogger.from_config(obs_config, revision)   # None when off
    ...
    if request_logger is not None:                     # nothing is built otherwise
        view = RequestView(method, target, "1.1", headers, peer, content_length)
        request_logger.log(view, status, body_bytes_sent, latency_seconds)

``RequestView`` holds what the engine already has (bytes from the parser); the Go-shaped
``.Request`` is derived from it lazily, only for the fields the template reads.
Writing is synchronous, one ``write`` per line, as upstream does.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from queueproxy.gotemplate import ExecError, Template, TemplateError, compile_template, format_value
from queueproxy.httptoken import is_token
from queueproxy.observability import ObservabilityConfig
from queueproxy.tracecontext import extract_trace_id

__all__ = [
    "GoHeader",
    "GoURL",
    "GoValues",
    "RequestLogger",
    "RequestView",
    "RevisionInfo",
    "canonical_header_key",
    "is_probe",
    "remote_addr",
]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RequestView:
    """The request as the proxy engine sees it, cheap to fill in.

    ``http_version`` is ``"1.0"``, ``"1.1"`` or ``"2"``. ``headers`` are the raw pairs in
    arrival order; an HTTP/2 engine passes ``:authority`` as a pair too. ``remote_addr`` is
    Go's ``"ip:port"`` text or the socket's peername tuple. ``content_length`` follows Go:
    ``-1`` when unknown (chunked, or an HTTP/2 body without a length), ``0`` without a body.
    """

    method: bytes
    target: bytes
    http_version: str
    headers: Sequence[tuple[bytes, bytes]]
    remote_addr: str | tuple[Any, ...] | None = None
    content_length: int = 0


@dataclass(frozen=True, slots=True)
class RevisionInfo:
    """Upstream's ``RequestLogRevision``: static facts about this pod's revision."""

    name: str = ""
    namespace: str = ""
    service: str = ""
    configuration: str = ""
    pod_name: str = ""
    pod_ip: str = ""


def remote_addr(peer: str | tuple[Any, ...] | None) -> str:
    """Go's ``RemoteAddr`` text for a socket peername: ``ip:port``, ``[v6]:port``."""
    if peer is None:
        return ""
    if isinstance(peer, str):
        return peer
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def is_probe(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Upstream's ``IsProbe``: a kubelet probe (``User-Agent: kube-probe/...`` or
    ``K-Kubelet-Probe``) or a Knative probe (``K-Network-Probe``); first values count."""
    seen_ua = seen_kubelet = seen_network = False
    for k, v in headers:
        n = len(k)
        if n == 10 and not seen_ua and k.lower() == b"user-agent":
            seen_ua = True
            if v.lstrip(b" \t").startswith(b"kube-probe/"):
                return True
        elif n == 15 and not (seen_kubelet and seen_network):
            name = k.lower()
            if name == b"k-kubelet-probe" and not seen_kubelet:
                seen_kubelet = True
            elif name == b"k-network-probe" and not seen_network:
                seen_network = True
            else:
                continue
            if v.strip(b" \t"):
                return True
    return False


def _s(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------------------------
# Go's net/http and net/url shapes, as far as templates read them.

def canonical_header_key(key: str) -> str:
    """Go's ``CanonicalMIMEHeaderKey``: ``content-type`` -> ``Content-Type``; a key with a
    byte that is not a token character is returned unchanged."""
    if not is_token(key):
        return key
    return "-".join(p[:1].upper() + p[1:].lower() for p in key.split("-"))


class GoValues(dict):  # type: ignore[type-arg]
    """Go's ``url.Values`` (``map[string][]string``); a missing key reads as an empty slice."""

    def __missing__(self, key: str) -> list[str]:
        return []

    def Get(self, key: str) -> str:  # noqa: N802 - Go's method name
        vs = dict.get(self, key)
        return vs[0] if vs else ""

    def Values(self, key: str) -> list[str]:  # noqa: N802
        return list(dict.get(self, key, []))

    def Has(self, key: str) -> bool:  # noqa: N802
        return key in self


class GoHeader(GoValues):
    """Go's ``http.Header``: canonical keys, ``Get`` and ``Values`` canonicalise their key."""

    def Get(self, key: str) -> str:  # noqa: N802
        return GoValues.Get(self, canonical_header_key(key))

    def Values(self, key: str) -> list[str]:  # noqa: N802
        return GoValues.Values(self, canonical_header_key(key))

    @classmethod
    def from_request_pairs(cls, pairs: Sequence[tuple[bytes, bytes]]) -> GoHeader:
        """The header map Go's server hands a handler: pseudo-headers dropped, ``Host``
        promoted out of it, ``Transfer-Encoding`` (and, with it, ``Content-Length``) removed,
        values trimmed of surrounding whitespace."""
        h = cls()
        for k, v in pairs:
            if k[:1] == b":":
                continue
            h.setdefault(canonical_header_key(_s(k)), []).append(_s(v.strip(b" \t")))
        h.pop("Host", None)
        if h.pop("Transfer-Encoding", None) is not None:
            h.pop("Content-Length", None)
        return h


def _should_escape_path(c: int) -> bool:
    if 0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A or c in b"-_.~":
        return False
    if c in b"$&+,/:;=?@":
        return c == 0x3F  # '?'
    return True


def _valid_encoded_path(raw: bytes) -> bool:
    return all(c in b"!$&'()*+,;=:@[]%" or not _should_escape_path(c) for c in raw)


def _unescape(raw: bytes, plus_is_space: bool = False) -> bytes | None:
    """Percent-decoding; None for a malformed escape (Go rejects those)."""
    if plus_is_space:
        raw = raw.replace(b"+", b" ")
    if b"%" not in raw:
        return raw
    out, i = bytearray(), 0
    while i < len(raw):
        c = raw[i]
        if c == 0x25:
            h = raw[i + 1:i + 3]
            if len(h) != 2 or not all(x in b"0123456789abcdefABCDEF" for x in h):
                return None
            out.append(int(h, 16))
            i += 3
        else:
            out.append(c)
            i += 1
    return bytes(out)


def _escape_path(path: bytes) -> str:
    return "".join("%%%02X" % c if _should_escape_path(c) else chr(c) for c in path)


class GoURL:
    """Go's ``*url.URL`` for a server request's target (``url.ParseRequestURI``)."""

    __slots__ = ("Scheme", "Opaque", "Host", "Path", "RawPath", "ForceQuery", "RawQuery",
                 "Fragment", "RawFragment", "_raw_path")

    def __init__(self) -> None:
        self.Scheme = self.Opaque = self.Host = self.Path = self.RawPath = ""
        self.RawQuery = self.Fragment = self.RawFragment = ""
        self.ForceQuery = False
        self._raw_path = b""

    @classmethod
    def from_request_target(cls, target: str, method: str = "GET") -> GoURL:
        u = cls()
        if target == "*":
            u.Path, u._raw_path = "*", b"*"
            return u
        authority_only = method == "CONNECT" and not target.startswith("/")
        rest = "http://" + target if authority_only else target
        scheme, colon, after = rest.partition(":")
        if colon and scheme[:1].isascii() and scheme[:1].isalpha() and \
                all(ch.isascii() and (ch.isalnum() or ch in "+-.") for ch in scheme):
            u.Scheme, rest = scheme.lower(), after
        if rest.endswith("?") and rest.count("?") == 1:
            u.ForceQuery, rest = True, rest[:-1]
        else:
            rest, _, u.RawQuery = rest.partition("?")
        if u.Scheme and rest.startswith("//"):
            authority, slash, path = rest[2:].partition("/")
            u.Host, rest = authority.rpartition("@")[2], slash + path
        elif u.Scheme and not rest.startswith("/"):
            u.Opaque, rest = rest, ""
        if authority_only:
            u.Scheme = ""
        raw = rest.encode("utf-8", "surrogateescape")
        decoded = _unescape(raw)
        u._raw_path = raw
        u.Path = _s(decoded if decoded is not None else raw)
        if decoded is not None and _escape_path(decoded) != rest:
            u.RawPath = rest
        return u

    def EscapedPath(self) -> str:  # noqa: N802
        raw = self._raw_path
        if raw == b"*":
            return "*"
        if _valid_encoded_path(raw) and _unescape(raw) is not None:
            return _s(raw)
        return _escape_path(self.Path.encode("utf-8", "surrogateescape"))

    def String(self) -> str:  # noqa: N802
        out = self.Scheme + ":" if self.Scheme else ""
        if self.Opaque:
            out += self.Opaque
        else:
            path = self.EscapedPath()
            if self.Scheme or self.Host:
                if self.Host or path:
                    out += "//"
                out += self.Host
            if path and path[0] != "/" and self.Host:
                out += "/"
            if not out and ":" in path.partition("/")[0]:
                out += "./"
            out += path
        if self.ForceQuery or self.RawQuery:
            out += "?" + self.RawQuery
        return out

    def Query(self) -> GoValues:  # noqa: N802
        """Go's ``ParseQuery``: ``&``-separated; pairs with ``;`` or bad escapes are skipped."""
        values = GoValues()
        for part in self.RawQuery.split("&"):
            if not part or ";" in part:
                continue
            k, _, v = part.partition("=")
            key = _unescape(k.encode("utf-8", "surrogateescape"), True)
            val = _unescape(v.encode("utf-8", "surrogateescape"), True)
            if key is not None and val is not None:
                values.setdefault(_s(key), []).append(_s(val))
        return values

    def Hostname(self) -> str:  # noqa: N802
        host = self.Host
        if host.startswith("["):
            return host[1:host.find("]")] if "]" in host else host[1:]
        return host.rpartition(":")[0] if ":" in host else host

    def Port(self) -> str:  # noqa: N802
        host = self.Host
        colon = host.rfind(":")
        if colon < 0 or "]" in host[colon:]:
            return ""
        port = host[colon + 1:]
        return port if port.isdigit() else ""


class _GoRequest:
    """The template's ``.Request``: Go's ``*http.Request`` fields and methods, derived from a
    ``RequestView``. Cheap fields are set at once, the rest computed when first read."""

    __slots__ = ("_view", "Method", "RequestURI", "Proto", "ProtoMajor", "ProtoMinor",
                 "RemoteAddr", "ContentLength", "_header", "_url")

    def __init__(self, view: RequestView) -> None:
        self._view = view
        self.Method = _s(view.method)
        self.RequestURI = _s(view.target)
        major, minor = ((2, 0) if view.http_version in ("2", "2.0") else
                        (1, 0) if view.http_version == "1.0" else (1, 1))
        self.Proto = f"HTTP/{major}.{minor}"
        self.ProtoMajor, self.ProtoMinor = major, minor
        self.RemoteAddr = remote_addr(view.remote_addr)
        self.ContentLength = view.content_length
        self._header: GoHeader | None = None
        self._url: GoURL | None = None

    def _first(self, name: bytes) -> str:
        for k, v in self._view.headers:
            if len(k) == len(name) and k.lower() == name:
                return _s(v.strip(b" \t"))
        return ""

    def UserAgent(self) -> str:  # noqa: N802 - Go's method name
        return self._first(b"user-agent")

    def Referer(self) -> str:  # noqa: N802
        return self._first(b"referer")

    @property
    def Header(self) -> GoHeader:  # noqa: N802
        if self._header is None:
            self._header = GoHeader.from_request_pairs(self._view.headers)
        return self._header

    @property
    def URL(self) -> GoURL:  # noqa: N802
        if self._url is None:
            self._url = GoURL.from_request_target(self.RequestURI, self.Method)
        return self._url

    @property
    def Host(self) -> str:  # noqa: N802
        """Go's rule: the host of an absolute-form target, else ``:authority`` or ``Host``."""
        if self.URL.Host:
            return self.URL.Host
        return self._first(b":authority") or self._first(b"host")

    @property
    def TransferEncoding(self) -> list[str] | None:  # noqa: N802
        te = self._first(b"transfer-encoding")
        return [te.strip().lower()] if te else None

    @property
    def Close(self) -> bool:  # noqa: N802
        conn = self._first(b"connection").lower()
        if self.ProtoMajor == 1 and self.ProtoMinor == 0:
            return "keep-alive" not in conn
        return "close" in conn


class _Response:
    __slots__ = ("Code", "Size", "Latency")
    __go_fields__ = ("Code", "Size", "Latency")

    def __init__(self, code: int, size: int, latency: float) -> None:
        self.Code, self.Size, self.Latency = code, size, latency


class _Revision:
    __slots__ = ("Name", "Namespace", "Service", "Configuration", "PodName", "PodIP")
    __go_fields__ = __slots__

    def __init__(self, r: RevisionInfo) -> None:
        self.Name, self.Namespace, self.Service = r.name, r.namespace, r.service
        self.Configuration, self.PodName, self.PodIP = r.configuration, r.pod_name, r.pod_ip


class _Input:
    """Upstream's ``RequestLogTemplateInput``."""

    __slots__ = ("Request", "Response", "Revision", "TraceID")

    def __init__(self, request: _GoRequest, response: _Response, revision: _Revision,
                 trace_id: str) -> None:
        self.Request, self.Response, self.Revision, self.TraceID = request, response, revision, trace_id


def _default_stream() -> BinaryIO:
    """Standard output, unbuffered, so each line leaves in one write (as upstream's)."""
    try:
        return open(sys.stdout.fileno(), "wb", buffering=0, closefd=False)  # noqa: SIM115
    except (AttributeError, OSError, ValueError):  # stdout replaced by a non-file object
        return sys.stdout.buffer


class RequestLogger:
    """Renders and writes one request-log line per request.

    ``template`` is compiled once (``TemplateError`` if it cannot be); ``stream`` is a binary
    stream (standard output when None); probe requests are skipped unless ``log_probes``.
    """

    __slots__ = ("template", "revision", "log_probes", "_stream", "_revision_view")

    def __init__(self, template: str, revision: RevisionInfo, *, stream: BinaryIO | None = None,
                 log_probes: bool = False) -> None:
        if not template.endswith("\n"):
            template += "\n"
        self.template: Template = compile_template(template, "requestLog")
        self.revision = revision
        self.log_probes = log_probes
        self._stream = stream if stream is not None else _default_stream()
        self._revision_view = _Revision(revision)

    @classmethod
    def from_config(cls, config: ObservabilityConfig, revision: RevisionInfo, *,
                    stream: BinaryIO | None = None) -> RequestLogger | None:
        """The logger the config asks for, or None when request logging is off.

        A template this engine cannot compile turns request logs off with an error log line,
        as upstream does when Go cannot parse it; the process keeps serving.
        """
        if not config.request_log_enabled:
            return None
        try:
            return cls(config.request_log_template, revision, stream=stream,
                       log_probes=config.enable_probe_request_log)
        except TemplateError as exc:
            logger.error("Error setting up request logger. Request logs will be unavailable: %s", exc)
            return None

    def render(self, request: RequestView, response_code: int, response_size: int,
               latency_seconds: float, trace_id: str | None = None, *,
               revision: RevisionInfo | None = None) -> bytes:
        """The bytes one request's log line consists of (with its newline)."""
        req = _GoRequest(request)
        if trace_id is None:
            trace_id = extract_trace_id(request.headers)
        rev = self._revision_view if revision is None else _Revision(revision)
        data = _Input(req, _Response(response_code, response_size, latency_seconds), rev, trace_id)
        try:
            text = self.template(data)
        except ExecError:
            text = (f"Invalid request log template: method: {req.Method}, response code: "
                    f"{response_code}, latency: {format_value(float(latency_seconds))}, "
                    f"url: {req.URL.String()}\n")
        return text.encode("utf-8", "surrogateescape")

    def log(self, request: RequestView, response_code: int, response_size: int,
            latency_seconds: float, trace_id: str | None = None, *, probe: bool | None = None,
            revision: RevisionInfo | None = None) -> None:
        """Write the line for one finished request. ``trace_id`` None: taken from the
        headers; ``probe`` None: detected from the headers; ``revision`` overrides the
        logger's own (the activator serves many revisions)."""
        if not self.log_probes and (is_probe(request.headers) if probe is None else probe):
            return
        data = self.render(request, response_code, response_size, latency_seconds, trace_id,
                           revision=revision)
        stream = self._stream
        try:
            while data:
                n = stream.write(data)
                if n is None or n >= len(data):
                    break
                data = data[n:]
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stdout must not fail the request
            pass
