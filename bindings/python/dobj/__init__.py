"""dobj: Cloudflare-style Durable Objects as a native SDK.

The C core (IDs, dispatch, gates, storage) is in ``dobj._dobj``; this module
adds what reads better in Python: requests, responses, headers, the env and
the ``DurableObject`` base class.
"""

from __future__ import annotations

import asyncio as _asyncio
import inspect as _inspect
import json as _json
import logging as _logging
from collections.abc import Mapping as _Mapping
from typing import Any, Iterable, Iterator, Mapping, Optional, Tuple, Union

from . import _dobj
from ._dobj import (  # noqa: F401  (re-exported)
    Call,
    Context,
    Cursor,
    SqlStorage,
    Storage,
    Transaction,
    deserialize,
    serialize,
    DurableObjectId,
    Aborted,
    Error,
    InvalidIdError,
    InvalidInputError,
    MAX_CALL_DEPTH,
    Namespace,
    Runtime,
    Stub,
    WebSocket,
)
from .config import Binding, ClusterSettings, Config, ConfigError, Migration, load_config  # noqa: F401
from .project import Entry, ExecutionContext, ProjectRuntime, WorkerEntrypoint  # noqa: F401
from .project import from_config as _from_config

__all__ = [
    "Runtime", "Namespace", "DurableObjectId", "Stub", "Context", "Call",
    "DurableObject", "Request", "Response", "Headers", "Env",
    "Error", "InvalidIdError", "InvalidInputError", "Aborted", "MAX_CALL_DEPTH",
    "Storage", "Transaction", "SqlStorage", "Cursor", "serialize", "deserialize",
    "load_config", "Config", "Binding", "Migration", "ClusterSettings", "ConfigError",
    "WorkerEntrypoint", "ExecutionContext", "Entry", "ProjectRuntime",
    "WebSocket", "WebSocketPair", "WebSocketRequestResponsePair",
]

HeadersInit = Union["Headers", Mapping[str, str], Iterable[Tuple[str, str]], None]

# The rules (token names, normalized values, set-cookie kept as a list,
# methods, bodies) are the core's dobj_msg_* functions: this layer only keeps
# the values.  A set-cookie is stored as a list, every other header as one
# str (repeated values joined with ", ", as Fetch's Headers does).
_NAME = _dobj._header_name
_VALUE = _dobj._header_value
_IS_LIST = _dobj._header_is_list
BodyInit = Union[bytes, bytearray, memoryview, str, None]


class Headers:
    """Case-insensitive HTTP headers, as the Fetch API's ``Headers``: names
    are lower-cased, repeated values joined with ``", "`` except set-cookie
    (``get_set_cookie()`` lists them; iteration yields each)."""

    __slots__ = ("_items",)

    def __init__(self, init: HeadersInit = None) -> None:
        self._items: dict = {}
        if init is None:
            return
        if isinstance(init, Headers):
            self._items = {k: list(v) if type(v) is list else v for k, v in init._items.items()}
            return
        pairs = init.items() if isinstance(init, _Mapping) else init
        for pair in pairs:
            try:
                name, value = pair
            except (TypeError, ValueError):
                raise TypeError("headers must be a mapping or (name, value) pairs") from None
            self.append(name, value)

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        v = self._items.get(name.lower() if isinstance(name, str) else name, None)
        if v is None:
            _NAME(name)  # as workerd's get: an invalid name is a TypeError
            return default
        return ", ".join(v) if type(v) is list else v

    def get_set_cookie(self) -> list:
        """Every set-cookie value, in order (as ``getSetCookie()``)."""
        return list(self._items.get("set-cookie", ()))

    def set(self, name: str, value: str) -> None:
        key, value = _NAME(name), _VALUE(value)
        self._items[key] = [value] if _IS_LIST(key) else value

    def append(self, name: str, value: str) -> None:
        key, value = _NAME(name), _VALUE(value)
        old = self._items.get(key)
        if old is None:
            self._items[key] = [value] if _IS_LIST(key) else value
        elif type(old) is list:
            old.append(value)
        else:
            self._items[key] = f"{old}, {value}"

    def delete(self, name: str) -> None:
        self._items.pop(_NAME(name), None)

    def has(self, name: str) -> bool:
        return _NAME(name) in self._items  # an invalid name: TypeError, as in workerd

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: str) -> None:
        self.set(name, value)

    def __delitem__(self, name: str) -> None:
        if not self.has(name):
            raise KeyError(name)
        self.delete(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._items)

    def items(self):
        """(name, value) pairs sorted by name, each set-cookie on its own."""
        out = []
        for k, v in sorted(self._items.items()):
            if type(v) is list:
                out.extend((k, c) for c in v)
            else:
                out.append((k, v))
        return out

    def keys(self):
        return [k for k, _ in self.items()]

    def values(self):
        return [v for _, v in self.items()]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._items == other._items
        if isinstance(other, _Mapping):
            return self == Headers(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


def _body(body: BodyInit) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        try:
            return body.encode("utf-8")
        except UnicodeEncodeError:
            # A str body is a USVString in workerd: a surrogate pair written
            # as two halves is its character, a lone surrogate U+FFFD.
            return body.encode("utf-16-le", "surrogatepass").decode(
                "utf-16-le", "replace").encode("utf-8")
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    raise TypeError(f"a body must be bytes or str, got {type(body).__name__}")


class _Message:
    __slots__ = ("_headers", "body")

    @property
    def headers(self) -> Headers:
        h = self._headers
        if h is None:
            h = self._headers = Headers()
        return h

    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return _json.loads(self.body)


class Request(_Message):
    """An HTTP request for ``stub.fetch``: ``url``, ``method``, ``headers``, ``body``."""

    __slots__ = ("url", "method")

    def __init__(self, url: str, *, method: str = "GET", headers: HeadersInit = None,
                 body: BodyInit = None) -> None:
        if not isinstance(url, str):
            raise TypeError(f"a URL must be a str, got {type(url).__name__}")
        self.url = url
        self.method = _dobj._method(method)
        self._headers = Headers(headers) if headers is not None else None
        self.body = _body(body)
        _dobj._request_body_check(self.method, len(self.body))

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url}>"


class Response(_Message):
    """An HTTP response: ``status``, ``headers``, ``body`` (bytes), ``ok``;
    ``web_socket`` is the client end of a WebSocketPair in a 101 response.
    A str body gets ``content-type: text/plain;charset=UTF-8`` unless the
    headers name one, as in workerd."""

    __slots__ = ("status", "web_socket", "_status_text")

    def __init__(self, body: BodyInit = None, *, status: int = 200,
                 headers: HeadersInit = None, web_socket: Optional[WebSocket] = None) -> None:
        if type(status) is not int:
            raise ValueError(f"status must be an int, got {status!r}")
        if web_socket is None:
            _dobj._check_status(status)  # the core's range and message (workerd's)
        else:
            if not isinstance(web_socket, WebSocket):
                raise TypeError(f"web_socket must be a dobj.WebSocket, got {type(web_socket).__name__}")
            _dobj._check_response(status, True)
        self.status = status
        self.web_socket = web_socket
        self._headers = Headers(headers) if headers is not None else None
        self.body = _body(body)
        if self.body:
            _dobj._response_body_check(status, len(self.body))
        if isinstance(body, str) and "content-type" not in self.headers._items:
            self._headers._items["content-type"] = _dobj._TEXT_TYPE

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def status_text(self) -> str:
        """The status's reason phrase ("OK", "Not Found"), or the one a
        ``dobj.workers.Response`` was made with (it travels with the
        response from the object to its caller, as statusText does)."""
        text = getattr(self, "_status_text", None)
        return _dobj._status_text(self.status) if text is None else text

    def __repr__(self) -> str:
        return f"<Response {self.status}>"


def _json_response(cls, obj: Any = None, status: int = 200, headers: HeadersInit = None):
    h = Headers(headers)
    if not h.has("content-type"):
        h.set("content-type", _dobj._JSON_TYPE)
    return cls(_json.dumps(obj), status=status, headers=h)


class _JsonMethod:
    """``Response.json(obj, status=200)`` builds a JSON response (as in the
    Fetch API); ``response.json()`` parses one."""

    def __get__(self, obj, cls):
        if obj is None:
            return lambda obj=None, status=200, headers=None: _json_response(cls, obj, status, headers)
        return lambda: _json.loads(obj.body)


Response.json = _JsonMethod()  # type: ignore[assignment]


class Env:
    """What every object gets as ``env``: plain values and namespaces by name,
    as attributes (``env.COUNTER``) and as items (``env["COUNTER"]``)."""

    __slots__ = ("_values", "_namespaces")

    def __init__(self, values: Optional[Mapping[str, Any]], namespaces: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values) if values is not None else {})
        object.__setattr__(self, "_namespaces", namespaces)

    def __getitem__(self, name: str) -> Any:
        ns = self._namespaces
        if ns is not None and name in ns:
            return ns[name]
        return self._values[name]

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"env has no binding {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("env is read-only")

    def __contains__(self, name: object) -> bool:
        return (self._namespaces is not None and name in self._namespaces) or name in self._values

    def __iter__(self):
        names = set(self._values)
        if self._namespaces is not None:
            names |= set(self._namespaces)
        return iter(sorted(names))

    def __repr__(self) -> str:
        return f"Env({sorted(self)})"


def _make_request(url_or_request, *, method=None, headers=None, body=None):
    """Build the request ``stub.fetch`` delivers: always a new object, so the
    caller and the object never share one."""
    if isinstance(url_or_request, Request):
        src = url_or_request
        req = Request.__new__(Request)
        req.url = src.url
        req.method = _dobj._method(method) if method else src.method
        req._headers = Headers(headers if headers is not None else src._headers) \
            if (headers is not None or src._headers) else None
        req.body = _body(body) if body is not None else src.body
        _dobj._request_body_check(req.method, len(req.body))
        return req
    if isinstance(url_or_request, str):
        return Request(url_or_request, method=method or "GET", headers=headers, body=body)
    raise TypeError("fetch() needs a URL (str) or a dobj.Request, got "
                    f"{type(url_or_request).__name__}")


class WebSocketPair(tuple):
    """``client, server = dobj.WebSocketPair()``: the two ends of a WebSocket.
    The object accepts ``server`` (``ctx.accept_web_socket``) and returns
    ``Response(None, status=101, web_socket=client)``; ``pair.client``,
    ``pair.server`` (and ``pair[0]``, ``pair[1]`` as in JavaScript)."""

    __slots__ = ()

    def __new__(cls) -> "WebSocketPair":
        return tuple.__new__(cls, WebSocket._pair())

    @property
    def client(self) -> WebSocket:
        return self[0]

    @property
    def server(self) -> WebSocket:
        return self[1]


class WebSocketRequestResponsePair:
    """For ``ctx.set_web_socket_auto_response``: a text message equal to
    ``request`` is answered with ``response`` without waking the object."""

    __slots__ = ("request", "response")

    def __init__(self, request: str, response: str) -> None:
        if not isinstance(request, str) or not isinstance(response, str):
            raise TypeError("request and response must be str")
        self.request = request
        self.response = response

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WebSocketRequestResponsePair):
            return NotImplemented
        return (self.request, self.response) == (other.request, other.response)

    def __repr__(self) -> str:
        return f"WebSocketRequestResponsePair({self.request!r}, {self.response!r})"


def _utc_datetime(ms: float):
    import datetime
    return datetime.datetime.fromtimestamp(ms / 1000.0, datetime.timezone.utc)


class DurableObject:
    """Base class for objects: keeps ``self.ctx`` and ``self.env``."""

    def __init__(self, ctx: Context, env: Env) -> None:
        self.ctx = ctx
        self.env = env


async def _transaction(storage, ctx, fn):
    """``await storage.transaction(fn)``: fn(txn) runs as a
    block_concurrency_while section, so no other event reaches the object
    until it is over, even across awaits.  Its error is caught inside the
    section (a failed section would reset the object) and raised here, after
    the writes were rolled back."""
    outcome = []

    async def section():
        txn = storage._begin()
        try:
            result = fn(txn)
            if _inspect.isawaitable(result):
                result = await result
        except BaseException as exc:  # noqa: BLE001  (re-raised below)
            try:
                txn._end(False)
            except Exception:  # noqa: BLE001  (fn's error is the one to see)
                pass
            outcome.append((False, exc))
            return
        try:
            txn._end(True)
        except BaseException as exc:  # noqa: BLE001
            outcome.append((False, exc))
            return
        outcome.append((True, result))

    await ctx.block_concurrency_while(section)
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


async def _drain(rt, timeout=None, _background=False):
    """``await rt.drain()``: run until no call is unfinished and no alarm is
    pending (eviction timers do not count).  It waits for the runtime to move
    (each pump, and the loop watching the runtime's fd, wake it); with
    virtual time, once only timers are left, it jumps the clock to the next.
    With ``_background`` (``drain_background``): until no background work
    (``ctx.wait_until``, the entry's and the objects') is left."""
    loop = _asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout

    def still() -> str:
        if _background:
            return f"drain_background(): {rt._background_count()} ctx.wait_until() tasks still pending"
        return f"drain(): {rt.pending} calls or alarms still pending"

    while True:
        rt._pump()
        if (rt._background_count() if _background else rt.pending) == 0:
            return
        left = None if deadline is None else deadline - loop.time()
        if left is not None and left <= 0:
            raise TimeoutError(still())
        if rt.virtual_time and rt._tasks == 0:
            rt.advance(rt._next_timer())  # only timers are left
            # Let the loop run between jumps: an alarm that sets the next
            # one keeps virtual time going for ever, and the timeout (real
            # seconds) must still be seen.
            await _asyncio.sleep(0)
            continue
        try:
            await _asyncio.wait_for(_asyncio.shield(rt._progress()), left)
        except _asyncio.TimeoutError:
            raise TimeoutError(still()) from None


async def _drain_background(rt, timeout=None):
    """``await rt.drain_background(timeout=None)``: run until no background
    work (``ctx.wait_until`` of the entry and of objects) is left, as the dev
    server does on shutdown; TimeoutError (the work stays) after ``timeout``
    seconds.  The core's dobj_rt_background_count decides what is left."""
    await _drain(rt, timeout, True)


_log = _logging.getLogger("dobj")


def _report_error(what: str, exc: BaseException) -> None:
    """Failures nobody awaits (a ``ctx.wait_until`` task, each failed run of an
    alarm handler) are logged on the ``dobj`` logger at ERROR level with their
    traceback, as asyncio logs a task exception that was never retrieved."""
    _log.error("%s failed: %s", what, exc, exc_info=(type(exc), exc, exc.__traceback__))


Runtime.from_config = classmethod(_from_config)  # type: ignore[attr-defined]
Runtime.drain_background = _drain_background  # type: ignore[attr-defined]

_dobj._setup(Request, Response, Env, _make_request)
_dobj._setup_storage(_transaction, _drain)
_dobj._setup_reporting(_report_error)
