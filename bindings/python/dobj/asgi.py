"""dobj.asgi: a Workers project's entry as an ASGI 3 application.

``App(runtime)`` turns each HTTP request into ``await runtime.default.fetch
(request)`` and sends the :class:`dobj.Response` back; ``dobj dev`` serves it
with uvicorn, and any ASGI server or framework can (``Mount("/", app=App(rt))``
in Starlette).  The request is what the Worker would see: the full URL (the
scheme, the ``Host`` header, the raw path and query, even under a mount), the
method, every header (a repeated one joined with ``", "`` in the order
received, as the Fetch API's ``Headers`` does) and the body, byte for byte.

``with_env(app, runtime)`` is the other direction, as Python Workers run a
FastAPI or Starlette app: every request that reaches ``app`` has the
runtime's ``env`` (namespaces and vars) in ``scope["env"]``.  So does
``await fetch(app, request, env)`` inside a Worker's entry: one request run
through an ASGI app, as Python Workers' ``asgi.fetch`` does.

Both take either a runtime or what :meth:`dobj.Runtime.from_config` takes
(``config=``, ``env=``, ``persist_to=``); a runtime they load themselves is
loaded in the server's own event loop (ASGI lifespan startup, or the first
request when the server sends no lifespan events) and closed at lifespan
shutdown, after the entry's ``ctx.wait_until`` work.  In cluster mode
(``DOBJ_CLUSTER_URL``) each server process that loads the project is a node
of its own, so ``uvicorn app:app --workers 4`` serves one set of objects
(docs/cluster.md, "Several worker processes").
"""
from __future__ import annotations

import asyncio
import contextlib
import html
import sys
import time
import traceback
import weakref
from typing import Any, Callable, Optional, TextIO

from . import Error, Headers, Request, Runtime, _dobj
from .config import PathLike

__all__ = ["App", "with_env", "fetch"]

_IS_LIST = _dobj._header_is_list
_WIRE_CHECK = _dobj._wire_check
_REQUEST = Request.__new__
_HEADERS = Headers.__new__
_BODY_MAX = _dobj._MSG_BODY_MAX  # the core's limit on a request body (413 past it)
_FRAMING: dict = {}  # header name -> the core's dobj_msg_header_is_framing, as asked


def _is_framing(name: str) -> bool:
    """Does the server write this header itself (content-length,
    transfer-encoding, connection...)?  Then a response's own copy is
    dropped, as workerd does.  The core's rule, remembered per name."""
    framing = _FRAMING.get(name)
    if framing is None:
        framing = _dobj._header_is_framing(name)
        if len(_FRAMING) < 1024:
            _FRAMING[name] = framing
    return framing


def _too_large(size: int) -> str:
    try:
        _dobj._body_check(size)
    except Error as exc:
        return str(exc)
    return f"request body of {size} bytes is too large"  # not reached: size > _BODY_MAX


def _bad_host(scope: Any) -> Optional[str]:
    """The core's message when the request's Host header is not host[:port]
    (it would rewrite the URL's path or query), else None."""
    for name, value in scope["headers"]:
        if name.lower() == b"host":
            try:
                _dobj._host_check(value.decode("latin-1"))
            except Error as exc:
                return str(exc)
    return None


class _Project:
    """The runtime an adapter serves: given, or loaded (and then owned)."""

    __slots__ = ("runtime", "owned", "_load")

    def __init__(self, runtime: Optional[Runtime], config: Optional[PathLike],
                 env: Optional[str], persist_to: Optional[PathLike]) -> None:
        if runtime is not None and (config is not None or env is not None or
                                    persist_to is not None):
            raise TypeError("give either a runtime or config=/env=/persist_to=, not both")
        self.runtime = runtime
        self.owned = False
        self._load = (config, env, persist_to)

    def get(self) -> Any:
        rt = self.runtime
        if rt is None:
            config, env, persist_to = self._load
            rt = Runtime.from_config(config, env=env, persist_to=persist_to)
            self.runtime, self.owned = rt, True
        return rt

    async def close(self, timeout: float = 10.0) -> None:
        """Close a runtime this adapter loaded, once the entry's
        ``ctx.wait_until`` work is done (or ``timeout`` seconds passed)."""
        rt = self.runtime
        if rt is None or not self.owned:
            return
        self.runtime, self.owned = None, False
        await close_runtime(rt, timeout)

    async def lifespan(self, receive: Callable[..., Any], send: Callable[..., Any],
                       inner: Any = None, scope: Any = None) -> None:
        """Answer the lifespan protocol (or pass it on to ``inner``, after
        loading the runtime first and before closing it)."""
        if inner is not None:
            async def wrapped_receive() -> Any:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.get()
                return message

            async def wrapped_send(message: Any) -> None:
                if message["type"] == "lifespan.shutdown.complete":
                    await self.close()
                await send(message)

            await inner(scope, wrapped_receive, wrapped_send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.get()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def close_runtime(rt: Any, timeout: float = 10.0) -> None:
    """Close a project runtime: wait (up to ``timeout`` seconds) for the
    entry's ``ctx.wait_until`` work, then :meth:`Runtime.close` it.  Every
    write a response acknowledged is already committed; closing closes the
    objects' databases."""
    with contextlib.suppress(TimeoutError):
        await rt.drain_background(timeout)
    rt.close()


def _server_host(scope: Any) -> str:
    """host[:port] of the server, for a request without a Host header."""
    server = scope.get("server")
    if server is None:
        return "localhost"
    name, port = server[0], server[1]
    if ":" in name:
        name = f"[{name}]"
    return name if port is None else f"{name}:{port}"


def _url(scope: Any, host: Optional[str]) -> str:
    if host is None:
        server = scope.get("server")
        if server is None:
            host = "localhost"
        else:
            name, port = server[0], server[1]
            if ":" in name:
                name = f"[{name}]"
            host = name if port is None else f"{name}:{port}"
    path = scope.get("raw_path")
    path = path.decode("latin-1") if path else _quote(scope["path"])
    query = scope.get("query_string")
    if query:
        return f"{scope.get('scheme', 'http')}://{host}{path}?{query.decode('latin-1')}"
    return f"{scope.get('scheme', 'http')}://{host}{path}"


def _quote(path: str) -> str:
    from urllib.parse import quote
    return quote(path, safe="/:@!$&'()*+,;=-._~%")


def _text(exc: BaseException) -> str:
    """str(exc), which is user code: one that raises must not turn the
    entry's 500 page and log line into the server's bare 500."""
    try:
        return str(exc)
    except Exception:
        return "<exception str() failed>"


def _error_page(exc: BaseException, tb: str, method: str, url: str, as_html: bool) -> bytes:
    title = f"{type(exc).__name__}: {_text(exc)}"
    if not as_html:
        return f"{title}\n\n{tb}".encode("utf-8", "replace")
    e = html.escape
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{e(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
        "h1{font-size:1.3em;color:#b00020}pre{background:#f6f6f6;padding:1em;overflow:auto}"
        "</style></head><body>"
        f"<h1>{e(title)}</h1><p>{e(method)} {e(url)}</p>"
        f"<pre>{e(tb)}</pre>"
        "<p>dobj dev: the Worker's fetch() raised; this page is shown in development only.</p>"
        "</body></html>\n"
    ).encode("utf-8", "replace")


class App:
    """An ASGI 3 app serving a Workers project's entry (see the module doc).

    ``App(runtime)`` serves ``runtime.default``; ``App(config=..., env=...,
    persist_to=...)`` loads the project itself.  ``log``: a text stream that
    gets a line per request, ``[dobj] GET /path 200 OK (3ms)``, and the
    traceback of an entry that raised (then the client gets a 500: an HTML
    page when it accepts ``text/html``, plain text otherwise); ``None`` logs
    only errors, through the ``dobj`` logger."""

    def __init__(self, runtime: Optional[Runtime] = None, *, config: Optional[PathLike] = None,
                 env: Optional[str] = None, persist_to: Optional[PathLike] = None,
                 log: Optional[TextIO] = None) -> None:
        self._project = _Project(runtime, config, env, persist_to)
        self._log = log

    @property
    def runtime(self) -> Optional[Runtime]:
        """The runtime served (``None`` until a loading adapter has started)."""
        return self._project.runtime

    async def __call__(self, scope: Any, receive: Callable[..., Any],
                       send: Callable[..., Any]) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._project.lifespan(receive, send)
        elif kind == "websocket":
            if _bad_host(scope) is not None:
                await send({"type": "websocket.close", "code": 1008})  # uvicorn answers 403
                return
            # The upgrade request goes to the entry's fetch; a 101 response
            # with web_socket= accepts (dobj/_asgi_websocket.py).
            from ._asgi_websocket import serve
            await serve(self._project.get(), scope, receive, send, _url, self._log)

    async def _http(self, scope: Any, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        log = self._log
        if log is not None:
            started = time.perf_counter()
        items: dict = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            value = value.decode("latin-1")
            old = items.get(key)
            if old is None:
                items[key] = [value] if _IS_LIST(key) else value
            elif type(old) is list:
                old.append(value)  # set-cookie: a list, never joined (the core's rule)
            else:
                items[key] = f"{old}, {value}"
        headers = _HEADERS(Headers)
        headers._items = items
        path = scope.get("raw_path")
        target = path.decode("latin-1") if path else _quote(scope["path"])
        query = scope.get("query_string")
        if query:
            target = f"{target}?{query.decode('latin-1')}"
        # The core's rules (dobj/wire.h): the method, the target, the Host
        # header (two of them, joined, fail too) and the URL the entry gets.
        refused, method, url = _WIRE_CHECK(scope["method"], target, items.get("host"),
                                           _server_host(scope))
        if refused:
            await self._refuse(scope, send, refused, method, log)
            return
        if scope.get("scheme") == "https" and url.startswith("http://"):
            url = "https://" + url[7:]
        length = items.get("content-length")
        if length is not None and len(length) >= 9 and length.isdigit() and \
                int(length) > _BODY_MAX:
            await self._refuse(scope, send, 413, _too_large(int(length)), log)
            return
        message = await receive()
        body = message.get("body", b"")
        if message.get("more_body"):
            parts = [body]
            size = len(body)
            while message.get("more_body"):
                message = await receive()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > _BODY_MAX:
                    await self._refuse(scope, send, 413, _too_large(size), log)
                    return
                parts.append(chunk)
            body = b"".join(parts)
        if message["type"] != "http.request":
            # The client went away before its body was whole: the entry
            # never sees a cut request (nobody is left to answer either).
            if log is not None:
                log.write(f"[dobj] {scope['method']} {scope['path']}: the client disconnected "
                          "before sending the whole body\n")
            return
        request = _REQUEST(Request)
        request.url = url
        request.method = method
        request._headers = headers
        request.body = body

        try:
            response = await self._project.get().default._serve(request)
            status = response.status
            out = [(b"content-length", str(len(response.body)).encode())]
            h = response._headers
            if h is not None:
                for key, value in h._items.items():
                    if _is_framing(key):
                        continue
                    if type(value) is list:  # set-cookie: one line each
                        name = key.encode("latin-1")
                        out.extend((name, v.encode("latin-1")) for v in value)
                    else:
                        out.append((key.encode("latin-1"), value.encode("latin-1")))
            body = response.body
        except Exception as exc:
            status = 500
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            if log is not None:
                log.write(f"[dobj:err] {method} {url}: {type(exc).__name__}: {_text(exc)}\n{tb}")
            else:
                from . import _log
                _log.error("%s %s: the entry raised\n%s", method, url, tb)
            as_html = "text/html" in items.get("accept", "")
            body = _error_page(exc, tb, method, url, as_html)
            out = [(b"content-type", b"text/html; charset=utf-8" if as_html
                    else b"text/plain; charset=utf-8"),
                   (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})
        if log is not None:
            _log_line(log, scope, status, started)

    @staticmethod
    async def _refuse(scope: Any, send: Callable[..., Any], status: int, message: str,
                      log: Optional[TextIO]) -> None:
        """Answer without calling the entry (a body past the core's limit),
        and close the connection: the rest of the body is not read."""
        started = time.perf_counter()
        body = f"{message}\n".encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
        if log is not None:
            _log_line(log, scope, status, started)


def _log_line(log: TextIO, scope: Any, status: int, started: float) -> None:
    ms = (time.perf_counter() - started) * 1000.0
    path = scope.get("raw_path")
    path = path.decode("latin-1") if path else scope["path"]
    query = scope.get("query_string")
    if query:
        path = f"{path}?{query.decode('latin-1')}"
    log.write(f"[dobj] {scope['method']} {path} {status} {_dobj._status_text(status)} ({ms:.0f}ms)\n")


def with_env(app: Any, runtime: Optional[Runtime] = None, *, config: Optional[PathLike] = None,
             env: Optional[str] = None, persist_to: Optional[PathLike] = None) -> Any:
    """Wrap an ASGI app (Starlette, FastAPI, ...) so that each request it
    gets has the runtime's env in ``scope["env"]``, as in Python Workers
    (``request.scope["env"].COUNTER``).  With ``config=`` the runtime is
    loaded at lifespan startup (before the app's own) and closed after the
    app's shutdown."""
    project = _Project(runtime, config, env, persist_to)

    async def wrapped(scope: Any, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await project.lifespan(receive, send, app, scope)
            return
        scope = dict(scope)
        scope["env"] = project.get().env
        await app(scope, receive, send)

    wrapped.runtime = lambda: project.runtime  # type: ignore[attr-defined]
    return wrapped


# app -> (its lifespan startup, done or not; the task running its lifespan)
_started_apps: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


async def _lifespan_startup(app: Any, env: Any) -> None:
    """Run the app's lifespan startup once per event loop (as Python Workers
    do before its first request); an app without lifespan support is fine.
    Its lifespan task then stays until the loop closes."""
    loop = asyncio.get_running_loop()
    known = _started_apps.get(app)
    if known is None or known[0].get_loop() is not loop:
        started = loop.create_future()
        inbox: "asyncio.Queue[Any]" = asyncio.Queue()
        inbox.put_nowait({"type": "lifespan.startup"})

        async def send(message: Any) -> None:
            if started.done():
                return
            if message["type"] == "lifespan.startup.failed":
                started.set_exception(RuntimeError(
                    f"the ASGI app's startup failed: {message.get('message', '')}"))
            else:
                started.set_result(None)

        async def run() -> None:
            try:
                await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                          inbox.get, send)
            except Exception:
                pass  # no lifespan support: nothing to start
            finally:
                if not started.done():
                    started.set_result(None)

        known = _started_apps[app] = (started, loop.create_task(run()))
    await asyncio.shield(known[0])


async def fetch(app: Any, request: Any, env: Any, ctx: Any = None) -> Any:
    """Run one :class:`dobj.Request` through the ASGI app ``app`` (FastAPI,
    Starlette, ...) with ``env`` in ``scope["env"]`` (and ``ctx`` in
    ``scope["ctx"]``), and return what it answered as a
    :class:`dobj.Response`: Python Workers' ``asgi.fetch(app, request, env)``.
    The app's lifespan startup runs before its first request."""
    from urllib.parse import unquote, urlsplit

    from . import Response

    request = getattr(request, "js_object", request)
    await _lifespan_startup(app, env)
    parts = urlsplit(request.url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    headers = request._headers.items() if request._headers is not None else ()
    raw_path = parts.path or "/"
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1", "method": request.method, "scheme": parts.scheme or "http",
        "path": unquote(raw_path), "raw_path": raw_path.encode("latin-1", "replace"),
        "query_string": parts.query.encode("latin-1", "replace"), "root_path": "",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "server": (parts.hostname or "localhost", port), "client": None,
        "env": env, "ctx": ctx, "state": {},
    }
    sent_body = False
    done = asyncio.get_running_loop().create_future()

    async def receive() -> Any:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await asyncio.shield(done)  # the app waits for a disconnect: after the response
        return {"type": "http.disconnect"}

    status = None
    out_headers: list = []
    body: list = []

    async def send(message: Any) -> None:
        nonlocal status
        kind = message["type"]
        if kind == "http.response.start":
            status = message["status"]
            out_headers.extend((k.decode("latin-1"), v.decode("latin-1"))
                               for k, v in message.get("headers", ()))
        elif kind == "http.response.body":
            body.append(message.get("body", b""))
            if not message.get("more_body") and not done.done():
                done.set_result(None)

    try:
        await app(scope, receive, send)
    finally:
        if not done.done():
            done.set_result(None)
    if status is None:
        raise RuntimeError("the ASGI app returned without sending a response")
    return Response(b"".join(body), status=status,
                    headers=[(k, v) for k, v in out_headers if not _is_framing(k.lower())])
