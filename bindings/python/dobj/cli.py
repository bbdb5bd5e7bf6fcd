"""The ``dobj`` command: ``dobj dev`` serves a Workers project over HTTP.

``dobj dev [--config F] [--env X] [--port 8787] [--ip 127.0.0.1]
[--persist-to DIR] [--cluster URL] [--node-addr HOST:PORT] [--cluster-ttl S]
[--cluster-grace S] [--server native|uvicorn]``
loads the project as :meth:`dobj.Runtime.from_config` does and serves its
entry over HTTP/1.1 with keep-alive and WebSockets.  The default server is
the core's (``dobj/server.h``, libmicrohttpd and wslay: the one ``dobj-lua
dev`` runs; dobj/_native_server.py drives it from the asyncio loop);
``--server uvicorn`` serves :class:`dobj.asgi.App` with uvicorn instead
(httptools and uvloop when installed: ``pip install 'dobj[dev]'``).  Ctrl-C or SIGTERM: no new
connections, requests in flight finish, the entry's ``ctx.wait_until`` work
finishes, the runtime is closed (every acknowledged write is on disk), the
port is freed, exit status 0.  Exit status 2: a bad command line (a
``--cluster`` URL libpq cannot parse included); 1: the project could not
start (its config, PostgreSQL unreachable, ...).

``dobj cluster init URL`` creates or migrates the cluster schema
(:mod:`dobj.cluster`).
"""
from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import sys
from typing import Any, List, Optional

__all__ = ["main"]

_INSTALL = "pip install 'dobj[dev]'"


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0 to 65535)")
    return port


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dobj", description="dobj: Durable Objects as a native SDK")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    dev = sub.add_parser("dev", help="serve a Workers project over HTTP, like wrangler dev",
                         description="Serve a Workers project (wrangler.toml / wrangler.json[c] "
                         "and its main module) over HTTP on localhost, like wrangler dev.")
    dev.add_argument("--config", "-c", metavar="F",
                     help="the config file or its folder (default: the current folder's)")
    dev.add_argument("--env", "-e", metavar="X",
                     help="the environment ([env.X]; default: $CLOUDFLARE_ENV, else none)")
    dev.add_argument("--port", type=_port, default=8787,
                     help="the port to listen on (default 8787; 0 picks a free one)")
    dev.add_argument("--ip", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    dev.add_argument("--persist-to", metavar="DIR",
                     help="keep state in DIR/v3/do (default: .wrangler/state next to the config)")
    dev.add_argument("--idle-timeout", type=float, metavar="SECONDS",
                     help="evict objects idle this long (default 10; WebSockets hibernate)")
    dev.add_argument("--server", choices=("native", "uvicorn"), default="native",
                     help="the HTTP server: the core's (native, the default: libmicrohttpd "
                     "and wslay, as dobj-lua dev) or uvicorn (serving dobj.asgi.App)")
    dev.add_argument("--cluster", metavar="URL",
                     help="run as a node of the cluster on this PostgreSQL database "
                     "(default: $DOBJ_CLUSTER_URL, else the config's [dobj.cluster] url)")
    dev.add_argument("--node-addr", metavar="HOST:PORT",
                     help="the address other nodes reach this one at (default: "
                     "$DOBJ_NODE_ADDR, else the config's [dobj.cluster] node_addr, else "
                     "127.0.0.1:0: a port the system picks, printed at start)")
    dev.add_argument("--cluster-ttl", type=float, metavar="SECONDS",
                     help="the node's lease time to live (default: $DOBJ_CLUSTER_TTL, else "
                     "the config's [dobj.cluster] ttl, else 3)")
    dev.add_argument("--cluster-grace", type=float, metavar="SECONDS",
                     help="after a node's lease lapsed, before another node may take its "
                     "objects (default: $DOBJ_CLUSTER_GRACE, else the config's [dobj.cluster] "
                     "grace, else 1)")
    from . import cluster
    cl = sub.add_parser("cluster", help="cluster mode on PostgreSQL (docs/cluster.md)",
                        description="dobj cluster mode on PostgreSQL")
    add_parser_to = cl.add_subparsers(dest="cluster_command", metavar="COMMAND", required=True)
    cluster.add_parser(add_parser_to, "dobj cluster")
    return p


def _fail(message: str, status: int = 1) -> int:
    sys.stderr.write(f"dobj dev: {message}\n")
    sys.stderr.flush()
    return status


def _listen(ip: str, port: int) -> socket.socket:
    """The listening socket, made here so that a port in use is one clear
    error (and port 0 works: the chosen port is printed)."""
    infos = socket.getaddrinfo(ip, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _http_protocol() -> Any:
    """uvicorn's httptools protocol with the request head bounded: httptools
    gathers a request line or a header of any size (one client sending an
    endless header grew the server by all it sent).  Past the core's
    DOBJ_MSG_HEAD_MAX the client gets 431 and the connection closes.
    Without httptools, h11's own bound is set to the same size."""
    from . import _dobj

    head_max = _dobj._MSG_HEAD_MAX
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return "h11"

    class Protocol(HttpToolsProtocol):
        _head = 0            # bytes of the current request's head fed so far
        _in_head = True      # its head is not complete yet
        _tail = b""          # the last bytes fed: a "\r\n\r\n" may span two reads

        def data_received(self, data: bytes) -> None:
            # Checked before feeding, on where the head ends: a read may hold
            # the whole request (the 200 KB header arrived in one read, the
            # head completed inside it and the entry ran), and what
            # httptools would gather stays within the limit and one read.
            if self._in_head and not self.transport.is_closing():
                end = (self._tail + data).find(b"\r\n\r\n")
                size = self._head + (len(data) if end < 0 else end + 4 - len(self._tail))
                if size > head_max:
                    msg = f"request head (request line and headers) larger than {head_max >> 10} KiB\n"
                    self.logger.warning(msg.rstrip())
                    self.transport.write(
                        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                        b"content-type: text/plain; charset=utf-8\r\n"
                        b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                        % (len(msg), msg.encode()))
                    self.transport.close()
                    return
                self._head += len(data)
                self._tail = (self._tail + data)[-3:]
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._head = 0
            self._tail = b""
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head = True

    return Protocol


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, minus re-raising the stopping signal after a
        graceful shutdown: ``dobj dev`` has closed the runtime by then and
        exits with status 0."""

        out: Any = None
        loop: Any = None
        banner: Any = None  # writes the Ready line

        async def startup(self, sockets=None):  # type: ignore[override]
            await super().startup(sockets=sockets)
            # Ready only now that SIGINT/SIGTERM are this server's (serve()
            # took them before startup): a supervisor that stops the server
            # as soon as it reads the Ready line must not kill it instead.
            if self.banner is not None:
                self.banner()

        def capture_signals(self):  # type: ignore[override]
            import contextlib

            @contextlib.contextmanager
            def captured():
                handlers = {s: signal.signal(s, self.handle_exit)
                            for s in (signal.SIGINT, signal.SIGTERM)}
                try:
                    yield
                finally:
                    for s, h in handlers.items():
                        signal.signal(s, h)
            return captured()

        def handle_exit(self, sig, frame):  # type: ignore[override]
            first = not self.should_exit
            super().handle_exit(sig, frame)
            if first and self.out is not None:
                # Not written here: a signal handler may interrupt a write.
                self.loop.call_soon_threadsafe(self.stopping)

        def stopping(self) -> None:
            n = len(self.server_state.tasks)
            self.out.write(f"[dobj] stopping: {n} request(s) in flight\n")

    return Server


def _in_use(args: argparse.Namespace) -> int:
    return _fail(f"cannot listen on {args.ip}:{args.port}: the address is already "
                 "in use (another dobj dev or wrangler dev?); pick another with --port")


def _banner(rt: Any, out: Any, shown: str, port: int) -> None:
    cfg = rt.config
    where = cfg.worker_name + (f" (env {cfg.env})" if cfg.env else "")
    out.write(f"[dobj] {where}: {cfg.config_path}\n")
    for b in cfg.bindings:
        out.write(f"[dobj]   env.{b.binding} (Durable Object {b.class_name})\n")
    out.write(f"[dobj] state: {cfg.state_dir}\n")
    if rt.node_id is not None:
        # Not the URL: it may hold a password; where it listens (port 0:
        # the port it got).
        addr = rt.node_addr
        out.write(f"[dobj] cluster: node {rt.node_id}" + (f" at {addr}" if addr else "") + "\n")
    out.write(f"[dobj] Ready on http://{shown}:{port}\n")
    out.flush()


async def _serve_native(args: argparse.Namespace, out: Any, rt: Any) -> int:
    import dobj
    from ._native_server import NativeServer

    loop = asyncio.get_running_loop()
    try:
        server = NativeServer(rt, args.ip, args.port, out, loop)
    except dobj.Error as exc:
        if "address already in use" in str(exc):
            return _in_use(args)
        if str(exc).startswith("dobj was built without"):
            return _fail(f"{exc}; or serve with --server uvicorn")
        return _fail(f"cannot listen on {exc}")
    stop = loop.create_future()

    def on_signal(name: str) -> None:
        if stop.done():  # a second signal: stop now
            for task in list(server._tasks):
                task.cancel()
            server.stopping = True
            if server._done is not None and not server._done.done():
                server._done.set_result(None)
            return
        out.write(f"[dobj] stopping: {server.inflight} request(s) in flight\n")
        stop.set_result(name)

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig.name)
        host, _, port = server.address.rpartition(":")
        _banner(rt, out, host, int(port))
        await stop
        await server.stop()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        server.close()
    out.write("[dobj] stopped\n")
    return 0


async def _serve(args: argparse.Namespace, out: Any) -> int:
    import dobj
    from .asgi import close_runtime

    # A bad --cluster / --node-addr is a bad command line (exit 2), checked
    # by the core as the runtime would check it.
    for flag, bad in (("--cluster", args.cluster is not None and
                       dobj._dobj._cluster_check(args.cluster)),
                      ("--node-addr", args.node_addr is not None and
                       dobj._dobj._cluster_check("postgresql://", args.node_addr))):
        if bad:
            return _fail(f"{flag}: {bad.removeprefix('cluster: ')}", 2)
    for flag, which, value in (("--cluster-ttl", 0, args.cluster_ttl),
                               ("--cluster-grace", 1, args.cluster_grace)):
        bad = value is not None and dobj._dobj._cluster_seconds(which, value, flag)
        if bad:
            return _fail(bad, 2)
    try:
        extra = {} if args.idle_timeout is None else {"idle_timeout": args.idle_timeout}
        # The flags win over the environment and the config (the core's
        # config loader resolves them: dobj_config.cluster).
        for key, value in (("cluster", args.cluster), ("node_addr", args.node_addr),
                           ("cluster_ttl", args.cluster_ttl), ("cluster_grace", args.cluster_grace)):
            if value is not None:
                extra[key] = value
        # Without a node address from any source, the core's config loader
        # gives 127.0.0.1:0: a project is a node that serves its objects.
        rt = dobj.Runtime.from_config(args.config, env=args.env, persist_to=args.persist_to,
                                      **extra)
    except (dobj.Error, ValueError) as exc:  # ConfigError, a state folder in use, ...
        return _fail(str(exc))
    try:
        if args.server == "native":
            return await _serve_native(args, out, rt)
        return await _serve_uvicorn(args, out, rt)
    finally:
        await close_runtime(rt)


async def _serve_uvicorn(args: argparse.Namespace, out: Any, rt: Any) -> int:
    import uvicorn

    import dobj
    from .asgi import App

    if True:
        try:
            sock = _listen(args.ip, args.port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return _in_use(args)
            return _fail(f"cannot listen on {args.ip}:{args.port}: {exc.strerror or exc}")
        except (ValueError, UnicodeError) as exc:  # an --ip no resolver takes
            return _fail(f"cannot listen on {args.ip}:{args.port}: {exc}")
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        config = uvicorn.Config(
            App(rt, log=out), lifespan="off", access_log=False, log_config=None,
            log_level="warning", ws=_ws_impl(), ws_max_size=32 << 20, http=_http_protocol(),
            server_header=False, proxy_headers=False, timeout_graceful_shutdown=30,
            h11_max_incomplete_event_size=dobj._dobj._MSG_HEAD_MAX)
        server = _server_class()(config)
        server.out, server.loop = out, asyncio.get_running_loop()
        server.banner = lambda: _banner(rt, out, shown, port)
        await server.serve(sockets=[sock])
        sock.close()
        out.write("[dobj] stopped\n")
    return 0


def _ws_impl() -> Any:
    """WebSockets through uvicorn's implementation on the ``websockets``
    library (its sans-I/O protocol), when installed (``dobj[dev]`` has it);
    messages up to Cloudflare's 32 MiB.

    One change, so that a close the server began ends as on the core's
    server (docs/design.md, DOBJ_WS_CLOSE_WAIT_MS): uvicorn hands the app a
    disconnect with the app's own close code as soon as the app sends its
    close, whether the client ever answers or not, so the object heard its
    own code, was_clean True, from a client that never answered, and the
    connection stayed for uvicorn's 10 s.  Here the disconnect is the
    client's answer (its code and reason), or 1006 when the connection ends
    without one, and the connection is cut after the same wait as on the
    core's server."""
    try:
        import websockets  # noqa: F401
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol)
    except ImportError:
        try:
            import websockets  # noqa: F401,F811
        except ImportError:
            return "none"
        return "websockets-sansio"
    from . import _dobj

    class Events(asyncio.Queue):
        """The ASGI events of one connection; `echo` drops uvicorn's own
        disconnect for the app's close (put while sending it)."""
        echo = False

        def put_nowait(self, item: Any) -> None:
            if self.echo and item.get("type") == "websocket.disconnect":
                self.echo = False
                return
            super().put_nowait(item)

    class Protocol(WebSocketsSansIOProtocol):  # type: ignore[misc]
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            self.queue = Events()
            self.close_timeout = _dobj._WS_CLOSE_WAIT_MS / 1000.0

        async def send(self, message: Any) -> None:
            if message.get("type") != "websocket.close" or not self.handshake_complete:
                await super().send(message)
                return
            # The close's send has no pause once writable: nothing but it
            # puts an event between the two lines below.
            await self.writable.wait()
            self.queue.echo = True
            try:
                await super().send(message)
            finally:
                self.queue.echo = False

        def handle_close(self, event: Any) -> None:
            answer = self.conn.close_rcvd
            if self.close_sent and answer is not None and not self.transport.is_closing():
                self.queue.put_nowait({"type": "websocket.disconnect", "code": answer.code,
                                       "reason": answer.reason})
            super().handle_close(event)

        def connection_lost(self, exc: Any) -> None:
            if self.close_sent and self.handshake_complete and self.conn.close_rcvd is None:
                # No close came (RFC 6455 7.1.5): uvicorn would say 1005.
                self.queue.put_nowait({"type": "websocket.disconnect", "code": 1006})
            super().connection_lost(exc)

    return Protocol


class _LineWriter:
    """stdout for the request log.  Lines written while the loop runs are
    joined and written once at the end of the loop's current turn (one
    write for every request it served, not one each: a busy server makes
    far fewer system calls), and flushed then (a pipe or file is
    block-buffered otherwise: a line must show when its request is done)."""

    __slots__ = ("_stream", "_lines", "_loop")

    def __init__(self, stream: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._stream = stream
        self._lines: List[str] = []
        self._loop = loop

    def write(self, text: str) -> None:
        lines = self._lines
        if not lines:
            try:
                self._loop.call_soon(self.flush)
            except RuntimeError:  # the loop is closed: write at once
                self._stream.write(text)
                self._stream.flush()
                return
        lines.append(text)

    def flush(self) -> None:
        lines = self._lines
        if lines:
            text = "".join(lines)
            lines.clear()
            self._stream.write(text)
        self._stream.flush()


def dev(args: argparse.Namespace) -> int:
    if args.server == "uvicorn":
        try:
            import uvicorn  # noqa: F401
        except ImportError:
            return _fail(f"--server uvicorn needs uvicorn, which is not installed: {_INSTALL}")
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(levelname)s %(message)s")
    loop = _new_loop()
    try:
        asyncio.set_event_loop(loop)
        out = _LineWriter(sys.stdout, loop)
        try:
            return loop.run_until_complete(_serve(args, out))
        finally:
            out.flush()
    finally:
        try:
            # What is left (an ASGI app's lifespan task...) is cancelled, as
            # asyncio.run does.
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "dev":
        return dev(args)
    if args.command == "cluster":
        from . import cluster
        return cluster.run(args)
    _parser().print_help(sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
