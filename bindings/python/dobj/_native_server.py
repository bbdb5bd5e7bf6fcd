"""``dobj dev``'s default server: the core's HTTP/WebSocket server
(``dobj/server.h``: libmicrohttpd and wslay, the one ``dobj-lua dev`` runs),
driven from the asyncio loop.  Its fd is watched with ``add_reader``; each
complete request becomes a :class:`dobj.Request` and runs the entry's
``fetch`` in a task, whose response goes back through the core (which
checks every header as it goes on the wire).  What a request is, and which
are refused with which status, is the core's rule (``dobj/wire.h``): a
refused one is answered with the reason without running the entry.
"""
from __future__ import annotations

import asyncio
import time
import traceback
from typing import Any, Optional, Set, TextIO

from . import Headers, Request, _dobj
from .asgi import _error_page, _text

_REQUEST = Request.__new__
_HEADERS = Headers.__new__
_STATUS_TEXT = _dobj._status_text
_TEXT = {"content-type": "text/plain;charset=UTF-8"}


def _path(url: str) -> str:
    """The path and query of a URL, for the log line."""
    at = url.find("://")
    if at < 0:
        return url
    slash = url.find("/", at + 3)
    return url[slash:] if slash >= 0 else "/"


class NativeServer:
    """Serve ``rt.default`` on ip:port (``dobj.Error`` when the address
    cannot be had: its message says why)."""

    def __init__(self, rt: Any, ip: str, port: int, log: TextIO,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._rt = rt
        self._log = log
        self._loop = loop
        self._tasks: Set["asyncio.Task[Any]"] = set()
        self._srv = _dobj.Server(ip, port, self._on_request, self._on_abandoned)
        self._fd = self._srv.fileno()
        self.stopping = False
        self._done: Optional["asyncio.Future[None]"] = None
        loop.add_reader(self._fd, self._process)

    @property
    def address(self) -> str:
        return self._srv.address

    @property
    def inflight(self) -> int:
        return self._srv.inflight

    def _process(self) -> None:
        self._srv.process()
        if self.stopping and self._done is not None and not self._done.done() \
                and self._srv.inflight == 0 and not self._tasks:
            self._done.set_result(None)

    def _on_abandoned(self, method: str, url: str) -> None:
        self._log.write(f"[dobj] {method} {_path(url)}: the client disconnected before "
                        "sending the whole body\n")

    def _on_request(self, rid: int, method: str, url: str, headers: dict, body: bytes,
                    refused: int, why: Optional[str]) -> None:
        request = _REQUEST(Request)
        request.url = url
        request.method = method
        h = _HEADERS(Headers)
        h._items = headers
        request._headers = h
        request.body = body
        task = self._loop.create_task(self._serve(rid, request, refused, why))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: "asyncio.Task[Any]") -> None:
        self._tasks.discard(task)
        if self.stopping:
            self._process()  # the answer may be the last in flight

    async def _serve(self, rid: int, request: Any, refused: int, why: Optional[str]) -> None:
        started = time.perf_counter()
        srv = self._srv
        if refused:
            status = srv.respond(rid, refused, _TEXT, f"{why}\n".encode())
            self._line(request, status, started)
            return
        try:
            response = await self._rt.default._serve(request)
            h = response._headers
            status = srv.respond(rid, response.status, h._items if h is not None else None,
                                 response.body, response.web_socket)
        except Exception as exc:  # the entry raised, or a header cannot be sent
            status = self._error(rid, request, exc)
        self._line(request, status, started)

    def _error(self, rid: int, request: Any, exc: BaseException) -> int:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self._log.write(f"[dobj:err] {request.method} {request.url}: "
                        f"{type(exc).__name__}: {_text(exc)}\n{tb}")
        as_html = "text/html" in request._headers._items.get("accept", "")
        body = _error_page(exc, tb, request.method, request.url, as_html)
        ctype = "text/html; charset=utf-8" if as_html else "text/plain; charset=utf-8"
        try:
            return self._srv.respond(rid, 500, {"content-type": ctype}, body)
        except Exception:  # noqa: BLE001  (answered already, or the server closed)
            return 500

    def _line(self, request: Any, status: int, started: float) -> None:
        ms = (time.perf_counter() - started) * 1000.0
        self._log.write(f"[dobj] {request.method} {_path(request.url)} {status} "
                        f"{_STATUS_TEXT(status)} ({ms:.0f}ms)\n")

    async def stop(self, code: int = 1012, reason: str = "the server is stopping",
                   timeout: float = 30.0) -> None:
        """Stop taking connections (the port is freed at once), close the
        WebSockets with ``code``, and wait (up to ``timeout`` seconds) for
        the requests in flight: their answers close their connections."""
        self.stopping = True
        self._srv.quiesce(code, reason)
        self._done = self._loop.create_future()
        self._process()
        try:
            await asyncio.wait_for(asyncio.shield(self._done), timeout)
        except asyncio.TimeoutError:
            pass

    def close(self) -> None:
        self._loop.remove_reader(self._fd)
        self._srv.close()
