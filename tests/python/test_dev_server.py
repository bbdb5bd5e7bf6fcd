"""`dobj dev` as a user runs it: a real subprocess (`python -m dobj dev` or
the `dobj` console script) serving a project copied to a temporary folder,
driven over real HTTP with http.client."""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from devserver import copy_example, dev_env, http_request as get, write_project

ECHO = """\
    import asyncio
    import json

    import dobj


    class Counter(dobj.DurableObject):
        async def fetch(self, request):
            n = (self.ctx.storage.get("count") or 0) + 1
            self.ctx.storage.put("count", n)
            return dobj.Response(str(n))


    async def fetch(request, env, ctx):
        path = request.url.split("/", 3)[3]
        if path.startswith("boom"):
            raise RuntimeError("the entry failed <on purpose>")
        if path.startswith("slow"):
            # A request still running when the server is told to stop.
            print("[test] slow request started", flush=True)
            await asyncio.sleep(0.5)
            return await env.COUNTER.get_by_name("c").fetch(request)
        if path.startswith("count"):
            return await env.COUNTER.get_by_name("c").fetch(request)
        if path.startswith("framing"):
            return dobj.Response("framed by the server", headers=[
                ("connection", "close"), ("transfer-encoding", "chunked"), ("keep-alive", "5"),
                ("content-length", "999"), ("x-ok", "1")])
        if path.startswith("cookies"):
            h = dobj.Headers([("set-cookie", "a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT"),
                              ("Set-Cookie", "b=2")])
            return dobj.Response("two cookies", headers=h)
        if path.startswith("bytes"):
            return dobj.Response(request.body, headers=[
                ("content-type", "application/octet-stream"), ("x-len", str(len(request.body)))])
        return dobj.Response(json.dumps({
            "method": request.method, "url": request.url,
            "headers": dict(request.headers.items()), "body": request.body.hex(),
            "greeting": env.GREETING,
        }), headers=[("content-type", "application/json"), ("x-r", "1"), ("x-r", "2")])
"""


@pytest.fixture
def echo(tmp_path):
    return write_project(tmp_path / "echo", ECHO)


# ------------------------------------------------------------ the example project

def test_counts_persist_across_requests_and_a_restart(tmp_path, servers):
    project = copy_example(tmp_path)
    s = servers(project)
    assert [get(s.port, "/a")[2] for _ in range(3)] == [b"1", b"2", b"3"]
    assert get(s.port, "/b")[2] == b"1"
    s.wait_for(r"\[dobj\] GET /b 200 OK \(\d+ms\)")
    assert s.stop() == 0
    assert "[dobj] stopped" in s.output()
    assert "Traceback" not in s.output()
    # The same folder, the same count: every acknowledged write was on disk.
    # (Started by the console script pip installed this time.)
    again = servers(project, script=True)
    assert get(again.port, "/a")[2] == b"4"
    assert os.path.isdir(project / ".wrangler" / "state" / "v3" / "do" / "python-counter-Counter")
    assert again.stop() == 0


def test_keep_alive_serves_two_requests_on_one_connection(tmp_path, servers):
    s = servers(copy_example(tmp_path))
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    try:
        conn.request("GET", "/k")
        r = conn.getresponse()
        assert (r.status, r.read(), r.getheader("connection")) == (200, b"1", None)
        first = conn.sock
        assert first is not None  # http.client keeps a kept-alive socket open
        conn.request("POST", "/k", body=b"x")
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"2")
        assert conn.sock is first
    finally:
        conn.close()


def test_each_request_gets_a_log_line_like_wrangler_dev(tmp_path, servers):
    s = servers(copy_example(tmp_path))
    get(s.port, "/x?y=1", method="PUT", body=b"z")
    s.wait_for(r"^\[dobj\] PUT /x\?y=1 200 OK \(\d+ms\)$")


# ------------------------------------------------------------ what the Worker sees

def test_the_worker_sees_the_full_url_method_headers_and_body(echo, servers):
    s = servers(echo)
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    try:
        conn.putrequest("PATCH", "/p/a%20b/?q=1&r=%2F&q=2", skip_accept_encoding=True)
        conn.putheader("X-Rep", "one")
        conn.putheader("x-other", "o")
        conn.putheader("X-Rep", "two")
        conn.putheader("x-rep", "three")
        conn.putheader("Content-Length", "3")
        conn.endheaders(b"abc")
        r = conn.getresponse()
        got = json.loads(r.read())
        assert r.status == 200
        # A repeated response header, in order.
        assert r.getheader("x-r") == "1, 2"
    finally:
        conn.close()
    assert got["method"] == "PATCH"
    assert got["url"] == f"http://127.0.0.1:{s.port}/p/a%20b/?q=1&r=%2F&q=2"
    assert got["headers"]["x-rep"] == "one, two, three"
    assert got["headers"]["x-other"] == "o"
    assert got["headers"]["host"] == f"127.0.0.1:{s.port}"
    assert got["body"] == b"abc".hex()
    assert got["greeting"] == "hello"
    # The Host header is the URL's host, as in workerd.
    _, _, body = get(s.port, "/h", headers={"Host": "example.test:99"})
    assert json.loads(body)["url"] == "http://example.test:99/h"


def test_head_gets_the_headers_and_no_body(echo, servers):
    s = servers(echo)
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    try:
        conn.request("HEAD", "/x")
        r = conn.getresponse()
        assert r.status == 200 and r.read() == b""
        length = int(r.getheader("content-length"))
        # The connection is still in step: the next answer is whole.
        conn.request("GET", "/x")
        r = conn.getresponse()
        got = json.loads(r.read())
        assert got["method"] == "GET"
        assert length == int(r.getheader("content-length")) + 1  # "HEAD" vs "GET"
    finally:
        conn.close()


def test_binary_body_round_trips_unchanged(echo, servers):
    s = servers(echo)
    data = bytes(range(256)) * 4096 + os.urandom(12345)  # 1 MiB and a bit
    status, headers, body = get(s.port, "/bytes", method="POST", body=data)
    assert (status, headers["x-len"], headers["content-length"]) == \
        (200, str(len(data)), str(len(data)))
    assert body == data


def test_chunked_upload_arrives_whole(echo, servers):
    s = servers(echo)
    parts = [b"\x00\xff" * 1000, b"", b"middle\r\n0\r\n\r\n", os.urandom(70000)]
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    try:
        conn.request("POST", "/bytes", body=iter([p for p in parts if p]),
                     headers={"Transfer-Encoding": "chunked"}, encode_chunked=True)
        r = conn.getresponse()
        assert r.status == 200
        assert r.read() == b"".join(parts)
    finally:
        conn.close()


def test_an_upload_cut_short_never_reaches_the_entry(echo, servers):
    s = servers(echo)
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
    try:
        sock.sendall(b"POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nfirst\r\n")
    finally:
        sock.close()
    s.wait_for(r"\[dobj\] POST /count: the client disconnected before sending the whole body")
    assert get(s.port, "/count")[2] == b"1"  # the cut request did not count


def test_a_close_that_came_with_the_last_bytes_still_ends_the_request():
    """The core's server (dobj dev's), on its own: the connection accepted,
    then head, part of the body and the client's close all in before it
    reads again.  libmicrohttpd read the connection no more after its short
    read (the close made no new epoll edge): the request waited for the
    rest of its body for ever, its socket held and the cut never reported
    (test_an_upload_cut_short... failed so under load)."""
    import select
    import time

    from dobj import _dobj

    got = []
    srv = _dobj.Server("127.0.0.1", 0, lambda *a: got.append(a[1:3]),
                       lambda method, url: got.append((method, url)))
    try:
        port = int(srv.address.rpartition(":")[2])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
            select.select([srv.fileno()], [], [], 30)
            srv.process()  # accepted; nothing to read yet
            c.sendall(b"POST /cut HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nfirst")
        deadline = time.monotonic() + 10
        while not got:
            left = deadline - time.monotonic()
            assert left > 0, "the request cut short was never ended"
            select.select([srv.fileno()], [], [], left)
            srv.process()
        assert got == [("POST", "http://t/cut")]
    finally:
        srv.close()


def test_a_responses_own_framing_headers_are_dropped(echo, servers):
    s = servers(echo)
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    try:
        for _ in range(2):  # the connection stays open: "connection: close" was dropped
            conn.request("GET", "/framing")
            r = conn.getresponse()
            assert (r.status, r.read()) == (200, b"framed by the server")
            assert r.getheader("content-length") == "20" and r.getheader("x-ok") == "1"
            assert r.getheader("connection") is None and r.getheader("keep-alive") is None
            assert r.getheader("transfer-encoding") is None
    finally:
        conn.close()


def test_each_set_cookie_reaches_the_client_as_its_own_line(echo, servers):
    # Joined with ", " they were one broken cookie (the date holds a comma).
    s = servers(echo)
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    try:
        conn.request("GET", "/cookies")
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"two cookies")
        assert r.headers.get_all("set-cookie") == [
            "a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT", "b=2"]
        assert r.getheader("content-type") == "text/plain;charset=UTF-8"
    finally:
        conn.close()


def test_a_body_past_the_cores_limit_is_refused_with_413(echo, servers):
    s = servers(echo)
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
    try:
        # Declared, not sent: refused before a byte of it is read.
        sock.sendall(b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                     % (100 * 1024 * 1024 + 1))
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    finally:
        sock.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in head.lower()
    assert body == b"request body larger than 100 MiB\n"
    s.wait_for(r"^\[dobj\] POST /count 413 ")
    assert get(s.port, "/count")[2] == b"1"  # the refused request never reached the entry


@pytest.mark.parametrize("host", [b"evil.com/x?y", b"", b"a b", b"h:80/p"])
def test_a_host_header_that_is_not_host_port_is_refused_with_400(echo, servers, host):
    # It would rewrite the URL the entry routes on ("http://evil.com/x?y/echo").
    s = servers(echo)
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
    try:
        sock.sendall(b"GET /count HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    finally:
        sock.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), reply
    assert body.startswith(b"invalid Host header"), body
    assert get(s.port, "/count")[2] == b"1"  # the refused request never reached the entry


def test_an_endless_header_is_refused_with_431_not_gathered(echo, servers):
    """One client sending a header that never ends used to grow the server
    by everything it sent (300 MiB sent: 370 MB resident).  Past the core's
    head limit (128 KiB) it gets 431 and the connection closes; a large
    head under the limit and the next clients are served."""
    s = servers(echo)
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
    sent = 0
    reply = b""
    try:
        sock.sendall(b"GET /count HTTP/1.1\r\nHost: t\r\nX-Big: ")
        try:
            while sent < 64 << 20:  # far past the limit: the server stops reading first
                sock.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
    finally:
        sock.close()
    assert sent < 64 << 20
    if reply:  # unless the reset of the unread data came first
        assert reply.startswith(b"HTTP/1.1 431 ")
    assert get(s.port, "/count", headers={"x-big": "a" * (100 << 10)})[0] == 200
    assert get(s.port, "/count")[2] == b"2"


# ------------------------------------------------------------ errors

def test_an_exception_in_the_entry_is_a_500_with_an_html_page_and_a_log(echo, servers):
    s = servers(echo)
    status, headers, body = get(s.port, "/boom", headers={"Accept": "text/html,*/*;q=0.8"})
    assert status == 500
    assert headers["content-type"] == "text/html; charset=utf-8"
    page = body.decode()
    assert page.startswith("<!DOCTYPE html>")
    assert "RuntimeError: the entry failed &lt;on purpose&gt;" in page  # escaped
    assert "Traceback" in page and "entry.py" in page
    s.wait_for(r"\[dobj:err\] GET http://127\.0\.0\.1:\d+/boom: RuntimeError: the entry failed")
    s.wait_for(r'File ".*entry\.py", line \d+, in fetch')
    s.wait_for(r"^\[dobj\] GET /boom 500 Internal Server Error \(\d+ms\)$")
    # Not a browser: plain text.
    status, headers, body = get(s.port, "/boom")
    assert status == 500 and headers["content-type"] == "text/plain; charset=utf-8"
    assert body.startswith(b"RuntimeError: the entry failed <on purpose>\n")
    # The server goes on serving.
    assert get(s.port, "/count")[2] == b"1"


def test_a_port_in_use_is_a_clear_error(echo, servers):
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        s = servers(echo, "--port", str(port), ready=False)
        assert s.wait() == 1
        out = s.output()
        assert out.strip().splitlines() == [
            f"dobj dev: cannot listen on 127.0.0.1:{port}: the address is already in use "
            "(another dobj dev or wrangler dev?); pick another with --port"]
    finally:
        taken.close()


@pytest.mark.parametrize("args, message", [
    (("--port", "70000"), "argument --port: '70000' is not a port (0 to 65535)"),
    (("--port", "x"), "argument --port: 'x' is not a port (0 to 65535)"),
    (("--ip", "no.such.host.invalid"), "dobj dev: cannot listen on no.such.host.invalid:"),
])
def test_a_bad_port_or_address_is_a_clear_error(echo, servers, args, message):
    s = servers(echo, *args, ready=False)
    assert s.wait() in (1, 2)
    out = s.output()
    assert message in out and "Traceback" not in out


def test_a_bad_config_is_the_loaders_error(tmp_path, servers):
    project = write_project(tmp_path / "bad", ECHO, config='name = "t"\nmain = [1,\n')
    s = servers(project, ready=False)
    assert s.wait() == 1
    out = s.output()
    assert out.startswith("dobj dev: ") and "wrangler.toml:3:1: " in out  # file:line:column
    assert "Traceback" not in out


def test_the_state_folder_in_use_by_another_server_is_a_clear_error(tmp_path, servers):
    project = copy_example(tmp_path)
    servers(project)
    s = servers(project, ready=False)
    assert s.wait() == 1
    out = s.output()
    assert out.startswith("dobj dev: ") and "used by another process" in out
    assert "Traceback" not in out


def test_dobj_alone_prints_usage(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dobj"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "dev" in r.stderr
    r = subprocess.run([str(Path(sys.executable).parent / "dobj"), "dev", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--persist-to" in r.stdout


# ------------------------------------------------------------ environments, state

def test_env_flag_and_cloudflare_env(echo, servers):
    s = servers(echo, "--env", "staging")
    assert json.loads(get(s.port, "/")[2])["greeting"] == "hello from staging"
    s = servers(echo, env=dev_env(CLOUDFLARE_ENV="staging"))
    assert json.loads(get(s.port, "/")[2])["greeting"] == "hello from staging"


def test_persist_to_keeps_state_there(tmp_path, servers):
    project = copy_example(tmp_path)
    state = tmp_path / "state"
    s = servers(project, "--persist-to", str(state))
    assert get(s.port, "/a")[2] == b"1"
    assert s.stop() == 0
    assert (state / "v3" / "do" / "python-counter-Counter").is_dir()
    assert not (project / ".wrangler").exists()
    s = servers(project, "--persist-to", str(state))
    assert get(s.port, "/a")[2] == b"2"


# ------------------------------------------------------------ stopping

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_request_in_flight_finishes_when_the_server_stops(echo, servers, sig):
    s = servers(echo)
    assert get(s.port, "/count")[2] == b"1"
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    try:
        conn.request("GET", "/slow")
        s.wait_for(r"^\[test\] slow request started$")
        s.proc.send_signal(sig)
        s.wait_for(r"\[dobj\] stopping: 1 request\(s\) in flight")
        r = conn.getresponse()
        assert (r.status, r.read(), r.getheader("connection")) == (200, b"2", "close")
    finally:
        conn.close()
    assert s.wait() == 0
    assert "Traceback" not in s.output()
    # The port is free again, and the write the response acknowledged is on disk.
    again = servers(echo, "--port", str(s.port))
    assert get(again.port, "/count")[2] == b"3"


# Sends its own process SIGTERM the moment `dobj dev` has written the Ready
# line: the earliest a supervisor that waits for that line can stop it.
TERM_AT_READY = """\
import os, signal, sys
import dobj.cli


class Stdout:
    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        self.stream.write(text)
        if "Ready on" in text:
            self.stream.flush()
            os.kill(os.getpid(), signal.SIGTERM)
        return len(text)

    def flush(self):
        self.stream.flush()


sys.stdout = Stdout(sys.stdout)
sys.exit(dobj.cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("server", ["native", "uvicorn"])
def test_sigterm_right_after_the_ready_line_stops_cleanly(echo, server):
    """`dobj dev --server uvicorn` printed Ready before uvicorn took SIGTERM:
    a SIGTERM in between killed it (status -15, runtime not closed)."""
    r = subprocess.run([sys.executable, "-c", TERM_AT_READY, "dev", "--port", "0",
                        "--server", server], cwd=echo, env=dev_env(), capture_output=True,
                       text=True, timeout=60)
    assert (r.returncode, r.stderr) == (0, ""), r.stdout
    assert "Ready on" in r.stdout and r.stdout.endswith("[dobj] stopped\n"), r.stdout


def test_writes_acknowledged_before_sigterm_are_on_disk(echo, servers):
    s = servers(echo)
    for want in range(1, 21):
        assert get(s.port, "/count")[2] == str(want).encode()
    assert s.stop() == 0
    s = servers(echo)
    assert get(s.port, "/count")[2] == b"21"
