"""The WebSocket half of :class:`dobj.asgi.App` (an ASGI ``websocket`` scope).

The upgrade request reaches the entry's ``fetch`` like any request (method
GET, the ``Upgrade: websocket`` and ``Sec-WebSocket-*`` headers as the client
sent them, an ``http(s)://`` URL as Workers see it).  A response with status
101 and ``web_socket=client`` accepts the handshake; the server (uvicorn, with
the ``websockets`` library doing the framing) then carries frames between the
client and the core (``dobj/websocket.h``): what arrives goes to
``client._receive`` / ``_peer_close``, what the object sends comes back
through the callbacks given to ``client._attach`` (with the bytes still waiting
for the client, so that the core's bound on a client that does not read holds
here too: past it the core aborts the connection), and the core's wait for a
close to end (DOBJ_WS_CLOSE_WAIT_MS: past it the connection is cut and the
object hears 1006, as on the core's server).  Any other response
refuses the handshake with its status (the ASGI ``websocket.http.response``
extension when the server has it, else a close with 1008, which uvicorn
answers with 403).
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Optional, TextIO

from . import Headers, Request, _dobj

_SCHEMES = {"ws": "http", "wss": "https"}
_STOP = object()


def _request(scope: Any, url_of: Callable[[Any, Optional[str]], str]) -> Request:
    items: dict = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1").lower()
        value = value.decode("latin-1")
        old = items.get(key)
        items[key] = value if old is None else f"{old}, {value}"
    headers = Headers.__new__(Headers)
    headers._items = items
    scope = dict(scope)
    scope["scheme"] = _SCHEMES.get(scope.get("scheme", "ws"), "http")
    request = Request.__new__(Request)
    request.url = url_of(scope, items.get("host"))
    request.method = "GET"
    request._headers = headers
    request.body = b""
    return request


async def serve(runtime: Any, scope: Any, receive: Callable[..., Any], send: Callable[..., Any],
                url_of: Callable[[Any, Optional[str]], str], log: Optional[TextIO]) -> None:
    started = time.perf_counter()
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    request = _request(scope, url_of)
    path = scope.get("raw_path")
    path = path.decode("latin-1") if path else scope["path"]
    query = scope.get("query_string")
    if query:  # the log line shows the query, as for HTTP requests
        path = f"{path}?{query.decode('latin-1')}"
    try:
        response = await runtime.default._serve(request)
    except Exception as exc:  # the entry raised: refuse the handshake with a 500
        if log is not None:
            log.write(f"[dobj:err] GET {request.url} (WebSocket): {type(exc).__name__}: {exc}\n")
        else:
            from . import _log
            _log.error("GET %s (WebSocket): the entry raised", request.url, exc_info=exc)
        await _refuse(scope, send, 500, b"the Worker's fetch() raised\n")
        return
    client = getattr(response, "web_socket", None)
    if response.status != 101 or client is None:
        await _refuse(scope, send, response.status, response.body)
        if log is not None:
            log.write(f"[dobj] GET {path} {response.status} (WebSocket refused)\n")
        return
    accept: dict = {"type": "websocket.accept"}
    h = response._headers
    if h is not None:
        proto = h._items.get("sec-websocket-protocol")
        if proto:
            accept["subprotocol"] = proto
        extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in h._items.items()
                 if k not in ("sec-websocket-protocol", "sec-websocket-accept", "upgrade",
                              "connection", "content-length")]
        if extra:
            accept["headers"] = extra
    try:
        await send(accept)
    except Exception:  # noqa: BLE001  (the client left before the handshake completed)
        # The object hears that the socket closed (it stayed in its list).
        client._peer_close(1006, "", False)
        return
    except asyncio.CancelledError:  # the server let go of the connection
        client._peer_close(1006, "", False)
        raise
    if log is not None:
        ms = (time.perf_counter() - started) * 1000.0
        log.write(f"[dobj] GET {path} 101 Switching Protocols ({ms:.0f}ms)\n")

    # What the object sends is queued by the core's callbacks (they run
    # inside its steps and must not block) and written by one task, in order.
    # `waiting` counts the queued bytes: the core closes the connection
    # (abort) rather than let it grow past DOBJ_WS_MAX_BUFFERED.
    out: asyncio.Queue = asyncio.Queue()
    waiting = [0]
    me = asyncio.current_task()
    aborted = False
    expired = False  # the close began DOBJ_WS_CLOSE_WAIT_MS ago and did not end
    ending = False
    close_wait: Optional[asyncio.TimerHandle] = None

    def put(item: Any) -> None:
        waiting[0] += len(item) if isinstance(item, bytes) else len(item.encode("utf-8", "surrogatepass"))
        out.put_nowait(item)

    def abort(code: int, reason: str) -> None:
        nonlocal aborted
        aborted = True
        waiting[0] = 0
        while not out.empty():  # freed now; uvicorn closes the connection once serve returns
            out.get_nowait()
        writer.cancel()
        if me is not None:
            me.cancel()

    def close(code: int, reason: str) -> None:
        nonlocal close_wait
        out.put_nowait((code, reason))
        if close_wait is None:  # from the close's start: the frame may never leave
            close_wait = asyncio.get_running_loop().call_later(
                _dobj._WS_CLOSE_WAIT_MS / 1000.0, cut)

    def cut() -> None:
        # A client that neither answers nor reads what waits before the close.
        nonlocal expired
        expired = True
        writer.cancel()
        if me is not None and not ending:
            me.cancel()

    # Backpressure: while the object has too many of this client's messages
    # to handle, it is not read (uvicorn stops reading the socket then).
    readable = asyncio.Event()
    readable.set()
    client._attach(put, close, lambda: waiting[0], abort, readable.set)
    writer = asyncio.ensure_future(_write(out, send, waiting))
    try:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                client._receive(text if text is not None else message.get("bytes") or b"")
                if client._receive_paused():
                    readable.clear()
                    await readable.wait()
            elif kind == "websocket.disconnect":
                code = message.get("code", 1005)
                reason = message.get("reason") or ""
                client._peer_close(code, reason, code != 1006)
                break
    except asyncio.CancelledError:
        # The core gave up on a client that did not read (it told the
        # object); otherwise the connection ends without a close from the
        # client (the close wait expired, or the server cancelled this
        # task): the object hears 1006, or the socket would stay in its
        # list for good.
        if not aborted:
            client._peer_close(1006, "", False)
            if not expired:
                raise
    except Exception as exc:  # the connection failed under us
        try:
            client._peer_error(f"{type(exc).__name__}: {exc}")
        except Exception:  # noqa: BLE001  (already closed)
            pass
        raise
    finally:
        ending = True
        client._detach()
        if not aborted:
            out.put_nowait(_STOP)
            try:
                await writer
            except Exception:  # noqa: BLE001  (the peer is gone)
                pass
            except asyncio.CancelledError:
                if not expired:  # cut() cancelled the writer: nothing more to wait for
                    raise
        if close_wait is not None:
            close_wait.cancel()


async def _write(out: asyncio.Queue, send: Callable[..., Any], waiting: list) -> None:
    while True:
        item = await out.get()
        if item is _STOP:
            return
        if isinstance(item, str):
            await send({"type": "websocket.send", "text": item})
            waiting[0] -= len(item.encode("utf-8", "surrogatepass"))
        elif isinstance(item, bytes):
            await send({"type": "websocket.send", "bytes": item})
            waiting[0] -= len(item)
        else:
            code, reason = item
            # 1005 ("no code") is not sent on the wire: a bare close is 1000.
            await send({"type": "websocket.close", "code": 1000 if code == 1005 else code,
                        "reason": reason})


async def _refuse(scope: Any, send: Callable[..., Any], status: int, body: bytes) -> None:
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})
