"""Cluster mode under hostile use (docs/cluster.md): a peer whose network
thread answers pings while its runtime is stuck, calls whose frames lie
about the object's ID, handlers that close their runtime under routed
calls, a cluster runtime used from another thread, and NUL bytes in method
names."""
import asyncio
import os
import socket
import struct
import threading
import time

import pytest

import dobj
from pg_util import available
from log_util import DobjLog
from route_util import Node
from wire_util import HELLO, PING, call_frame, connect, frame, result_of, split_frames

pytestmark = pytest.mark.skipif(not available(), reason="PostgreSQL (Debian: postgresql) not installed")

HOSTILE_NODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hostile_node.py")


@pytest.fixture
def node(pg, tmp_path):
    n = Node(pg, tmp_path / "a", script=HOSTILE_NODE)
    yield n
    n.close()


async def test_a_call_to_a_node_whose_runtime_is_stuck_fails_retryable_at_the_call_timeout(pg, node, tmp_path):
    """The node answers pings (its network thread runs) but its runtime does
    not: the caller's wait was unbounded (the answer came whenever the
    handler let go, or never); now it ends at the call timeout."""
    import hostile_node
    node.send(name="stuck-obj", method="add", args=[1])
    assert node.reply()["ok"] == 1                     # the node owns it
    rt = dobj.Runtime(storage=str(tmp_path / "c"), cluster=pg.url, cluster_ttl=1.5,
                      cluster_call_timeout=1.0)  # a client: its calls go to the owner
    try:
        ns = rt.bind("ROUTE", hostile_node.Box)
        node.send(name="stuck-obj", method="stuck", args=[4])  # the node's loop stops
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        with pytest.raises(dobj.Error) as e:
            await ns.get_by_name("stuck-obj").add(1)
        took = time.monotonic() - t0
        assert e.value.retryable is True
        assert "did not answer the call within 1 s (the call timeout): it may or may not have run" in str(e.value)
        assert 0.9 < took < 3, took
    finally:
        rt.close()


def test_the_call_timeout_is_a_cluster_setting(tmp_path, monkeypatch):
    """call_timeout resolves like the other settings: argument, environment, file."""
    (tmp_path / "wrangler.toml").write_text('name = "w"\n[dobj.cluster]\nurl = "postgresql://a@b/c"\n'
                                            'call_timeout = 12\n')
    assert dobj.load_config(str(tmp_path)).cluster.call_timeout == 12
    monkeypatch.setenv("DOBJ_CLUSTER_CALL_TIMEOUT", "7.5")
    assert dobj.load_config(str(tmp_path)).cluster.call_timeout == 7.5
    monkeypatch.setenv("DOBJ_CLUSTER_CALL_TIMEOUT", "inf")
    with pytest.raises(dobj.ConfigError, match="environment variable DOBJ_CLUSTER_CALL_TIMEOUT: must be a finite"):
        dobj.load_config(str(tmp_path))
    monkeypatch.delenv("DOBJ_CLUSTER_CALL_TIMEOUT")
    with pytest.raises(dobj.Error, match="cluster_call_timeout: the call timeout must be a number of seconds "
                                         "from 0.01 to 86400"):
        dobj.Runtime(storage=str(tmp_path), cluster="postgresql://a@127.0.0.1:1/c", cluster_call_timeout=1e6)


def answer_of(addr, call):
    """Send HELLO + call to a node; (status, message, value) of its RESULT."""
    _, status, message, rest = result_of(addr, call)
    return status, message, dobj.deserialize(rest) if rest else None


def test_a_call_whose_id_does_not_match_its_name_or_namespace_is_refused(node):
    """A peer's frame names the object by ID and name: the ID must be the
    name's (or the namespace's own, without a name).  Before, a lying frame
    made an object whose ctx.id.name was not its ID's name, or an object
    under an ID no stub of the namespace could make."""
    ids = dobj.Runtime().bind("ROUTE", dobj.DurableObject)
    honest = bytes.fromhex(str(ids.id_from_name("honest")))
    assert answer_of(node.addr, call_frame(1, b"ROUTE", honest, b"honest", b"name_of", [])) == (0, "", "honest")
    status, msg, _ = answer_of(node.addr, call_frame(2, b"ROUTE", honest, b"liar", b"name_of", []))
    assert (status, msg) == (1, "cluster: a malformed call (its ID is not the namespace's, or not its name's)")
    status, msg, _ = answer_of(node.addr, call_frame(3, b"ROUTE", b"\x07" * 32, None, b"name_of", []))
    assert (status, msg) == (1, "cluster: a malformed call (its ID is not the namespace's, or not its name's)")
    unique = bytes.fromhex(str(ids.new_unique_id()))
    assert answer_of(node.addr, call_frame(4, b"ROUTE", unique, None, b"name_of", [])) == (0, "", None)
    node.send(name="honest", method="name_of")
    assert node.reply()["ok"] == "honest"  # the node still serves


class Closer(dobj.DurableObject):
    """Objects whose handlers close their own runtime (RUNTIMES[key])."""

    async def add(self, n=1):
        v = (self.ctx.storage.get("n") or 0) + n
        self.ctx.storage.put("n", v)
        return v

    async def close_runtime(self, key, write=False):
        if write:
            self.ctx.storage.put("n", 99)
        RUNTIMES[key].close()
        return "closed"

    async def slow(self, seconds):
        await asyncio.sleep(seconds)
        return "slept"


RUNTIMES = {}


def two_nodes(pg, tmp_path, ttl=1.5):
    a = dobj.Runtime(storage=str(tmp_path / "a"), cluster=pg.url, node_addr="127.0.0.1:0",
                     cluster_ttl=ttl, cluster_grace=0.5)
    b = dobj.Runtime(storage=str(tmp_path / "b"), cluster=pg.url, node_addr="127.0.0.1:0",
                     cluster_ttl=ttl, cluster_grace=0.5)
    RUNTIMES.update(a=a, b=b)
    return a, b, a.bind("CLOSER", Closer), b.bind("CLOSER", Closer)


async def test_a_handler_that_closes_its_runtime_under_routed_calls(pg, tmp_path):
    """rt.close() from a handler while a call to it comes from another node,
    while another node's call is in flight, and while its own write waits for
    the committer: every caller gets an answer or a clear error, and nothing
    acknowledged is lost."""
    a, b, na, nb = two_nodes(pg, tmp_path)
    try:
        assert await na.get_by_name("x").add(1) == 1          # a owns x and y
        assert await na.get_by_name("y").add(1) == 1
        slow = asyncio.ensure_future(nb.get_by_name("y").slow(5))  # in flight from b
        await asyncio.sleep(0.2)

        async def outcome(aw):
            try:
                return await aw
            except dobj.Error as e:
                return e

        # In one turn: a's own write of x (its append queued on a's committer),
        # b's routed write of x, and x's handler (called from b) closing a.
        got = await asyncio.gather(outcome(na.get_by_name("x").add(10)),
                                   outcome(nb.get_by_name("x").add(100)),
                                   outcome(nb.get_by_name("x").close_runtime("a", True)))
        # b's add ran on a before the close (its result, confirmed while a
        # closed, answered as a left), or was answered "not the owner" and
        # ran on b, or its outcome is unknown; the closing handler's own is.
        for r in got[1:]:
            if isinstance(r, dobj.Error):
                assert r.retryable is True and "may or may not have run" in str(r), r
        assert isinstance(got[2], dobj.Error), got[2]
        e = await asyncio.wait_for(outcome(slow), 10)
        assert isinstance(e, dobj.Error) and e.retryable is True and "may or may not have run" in str(e)
        # b takes the objects over: a's acknowledged write of x is there, and
        # so is b's when it was acknowledged.
        after = await nb.get_by_name("x").add(0)
        if isinstance(got[1], int):
            assert after == got[1]
        if got[0] == 11:
            assert after in (11, 111)      # b's add may or may not have run
        else:
            assert isinstance(got[0], dobj.Error) and after in (1, 101)
        assert await nb.get_by_name("y").add(0) == 1
    finally:
        b.close()
        a.close()


async def test_calls_queued_behind_a_handler_that_closes_its_runtime_go_again_in_order(pg, tmp_path):
    """Routed calls waiting at an object's gate while its handler closes the
    runtime never started there: they are answered "not the owner" before
    the node's connections close, and run where the object goes next (here
    the caller's node), in the order they were made.  Before, their answers
    waited for the handler's step to end, the route was gone by then, and
    every caller heard "it may or may not have run"; the closing call itself
    ran, and says so."""
    a, b, na, nb = two_nodes(pg, tmp_path)
    try:
        assert await na.get_by_name("q").add(1) == 1  # a owns q

        async def outcome(aw):
            try:
                return await aw
            except dobj.Error as e:
                return e
        closing = asyncio.ensure_future(outcome(nb.get_by_name("q").close_runtime("a")))
        adds = [asyncio.ensure_future(outcome(nb.get_by_name("q").add(1))) for _ in range(5)]
        got = await asyncio.gather(closing, *adds)
        assert isinstance(got[0], dobj.Error) and got[0].retryable is True
        assert "closed while the call ran: it may or may not have run" in str(got[0])
        assert got[1:] == [2, 3, 4, 5, 6]
        assert await nb.get_by_name("q").add(0) == 6
    finally:
        b.close()
        a.close()


async def test_a_cluster_runtime_used_from_another_thread_is_a_clear_error(pg, tmp_path):
    """The host contract: one thread per runtime; a call, a bind, a close from
    another thread raise dobj.Error instead of racing the node's threads."""
    a, b, na, nb = two_nodes(pg, tmp_path)
    try:
        assert await na.get_by_name("t").add(1) == 1
        stub = nb.get_by_name("t")

        def in_thread(fn):
            out = []

            def run():
                try:
                    out.append(fn())
                except BaseException as e:  # noqa: BLE001 - reported to the test
                    out.append(e)
            th = threading.Thread(target=run)
            th.start()
            th.join()
            return out[0]

        for fn in (lambda: asyncio.run(stub.add(1)), lambda: b.bind("OTHER", Closer), b.close):
            e = in_thread(fn)
            assert isinstance(e, dobj.Error) and "can only be used from the thread that created it" in str(e)
        assert await stub.add(1) == 2  # b still serves its own thread
    finally:
        b.close()
        a.close()


async def test_a_nul_byte_in_a_method_name_calls_no_other_method(pg, tmp_path):
    """getattr(stub, "add\\x00x")() ran add: the core took the name up to its
    NUL.  Now it is a missing method, locally and routed alike."""
    a, b, na, nb = two_nodes(pg, tmp_path)
    try:
        assert await na.get_by_name("n").add(1) == 1
        for ns in (na, nb):  # a owns it; b's call would be routed
            with pytest.raises(dobj.Error, match='does not implement the method "add'):
                await getattr(ns.get_by_name("n"), "add\x00x")(5)
        assert await nb.get_by_name("n").add(0) == 1
    finally:
        b.close()
        a.close()


def _rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS:"))


def _results(sock, n):
    """Read n RESULT frames from sock: their statuses."""
    got, statuses = b"", []
    while len(statuses) < n:
        chunk = sock.recv(1 << 20)
        assert chunk, "the node closed the connection"
        frames, got = split_frames(got + chunk)
        # RESULTs' statuses (a PING of the node's is passed over)
        statuses += [body[8] for kind, body in frames if kind == 3]
    return statuses


def test_a_peer_that_sends_calls_and_does_not_read_the_answers_is_paused(node):
    """A peer's connection was read whatever waited on the node: one that sent
    calls without reading the answers made the node keep every answer (200
    MiB of 1 MiB echoes: 255 MiB resident, and on without a bound).  Now the
    node stops reading it while 16 MiB of its calls or of their answers wait,
    and reads on once the peer takes its answers: every call is answered."""
    ids = dobj.Runtime().bind("ROUTE", dobj.DurableObject)
    oid = bytes.fromhex(str(ids.id_from_name("echo")))
    call = call_frame(5, b"ROUTE", oid, b"echo", b"echo", ["x" * (1 << 20)])
    total = 160
    before = _rss_mib(node.proc.pid)
    sent = [0, 0]  # whole frames, bytes of the next

    def send(sock):
        """Send the calls from where the last send stopped (socket.timeout: blocked)."""
        view = memoryview(call)
        while sent[0] < total:
            sent[1] += sock.send(view[sent[1]:])
            if sent[1] == len(call):
                sent[0], sent[1] = sent[0] + 1, 0

    with connect(node.addr, None) as s:
        s.sendall(HELLO)
        s.settimeout(10)
        with pytest.raises(socket.timeout):
            send(s)
        assert sent[0] < 100, sent  # the node stopped reading
        if "libasan" not in os.environ.get("LD_PRELOAD", ""):  # (its quarantine keeps 256 MiB)
            assert _rss_mib(node.proc.pid) - before < 120
        # The peer reads: the node reads on, and answers every call.
        s.settimeout(60)
        rest = threading.Thread(target=send, args=(s,))
        rest.start()
        try:
            statuses = _results(s, total)
        finally:
            rest.join()
    assert statuses == [0] * total
    assert answer_of(node.addr, call_frame(1, b"ROUTE", oid, b"echo", b"name_of", [])) == (0, "", "echo")


def _lying_call(call_id=9, kind=2, depth=1, key=b"ROUTE", klen=None, name=b"honest", nlen=None,
                method=b"name_of", mlen=None, payload=None):
    """A CALL frame (cluster_route.c) for "honest" whose fields may lie."""
    ids = dobj.Runtime().bind("ROUTE", dobj.DurableObject)
    oid = bytes.fromhex(str(ids.id_from_name("honest")))
    body = struct.pack(">QBBH", call_id, kind, depth, len(key) if klen is None else klen) + key + oid
    body += struct.pack(">I", len(name) if nlen is None else nlen) + name
    body += struct.pack(">H", len(method) if mlen is None else mlen) + method
    body += dobj.serialize([]) if payload is None else payload
    return frame(2, body)


MALFORMED = "cluster: a malformed call"


@pytest.mark.parametrize("fields, status, message", [
    ({}, 0, ""),
    ({"nlen": 0xFFFFFFFE}, 1, MALFORMED),            # a name longer than the frame
    ({"nlen": 7}, 1, MALFORMED),                     # one byte too long: the rest misread
    ({"klen": 0xFFFF}, 1, MALFORMED),
    ({"mlen": 0xFFFF}, 1, MALFORMED),
    ({"mlen": 0, "method": b""}, 1, MALFORMED),      # an RPC names its method
    ({"depth": 0}, 1, MALFORMED),
    ({"depth": 16}, 0, ""),                          # DOBJ_MAX_CALL_DEPTH
    ({"depth": 17}, 1, MALFORMED),
    ({"depth": 255}, 1, MALFORMED),
    ({"kind": 9}, 1, MALFORMED),
    ({"key": b"", "klen": 0}, 1, "cluster: the node the call reached has no such namespace bound"),
    ({"kind": 1, "method": b"", "payload": b"\xff\x0fo{"}, 1, "cluster: a malformed request"),
    ({"payload": dobj.serialize(5)}, 1, "cluster: malformed RPC arguments"),
    ({"payload": dobj.serialize(["x" * 100])[:-10]}, 1,
     "cluster: malformed RPC arguments: corrupt value: 100 bytes needed at byte 6, 93 left"),
    ({"payload": b"\xff\x0f" + b"A\x01" * 100000}, 1,
     "cluster: malformed RPC arguments: corrupt value: nested deeper than 256 levels (byte 516)"),
])
def test_call_frames_that_lie_about_lengths_or_depth_are_answered_as_malformed(node, fields, status, message):
    """Raw frames on a node's port: each lie is answered with a clear error
    (never a crash, a hang or a read past the frame), and the node serves on."""
    got = answer_of(node.addr, _lying_call(**fields))
    assert got[:2] == (status, message)
    assert answer_of(node.addr, _lying_call()) == (0, "", "honest")


def test_a_call_frame_of_only_its_id_is_answered(node):
    """A CALL cut right after its id was left unanswered (its caller waited
    for its call timeout, and the node counted it as waiting for good)."""
    assert answer_of(node.addr, frame(2, struct.pack(">Q", 77)))[:2] == (1, MALFORMED)


def _frames(sock, buf=b""):
    """The frame types that arrived on sock until it was closed, and when."""
    types = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:  # closed with a ping of ours unread
            chunk = b""
        if not chunk:
            return types, time.monotonic()
        frames, buf = split_frames(buf + chunk)
        types += [kind for kind, _ in frames]


def test_a_peer_that_only_pings_is_closed_after_twenty_ttls(pg, tmp_path):
    """A peer that said hello and then only pinged held one of the node's
    incoming slots (1,024) for ever: the node answered each ping and never
    let go.  Now a peer's connection that carries no call, answer or
    WebSocket for 20 TTLs is closed (a node closes its own idle ones after
    10 TTLs, so a dobj caller never loses a call to it)."""
    rt = dobj.Runtime(storage=str(tmp_path / "a"), cluster=pg.url, node_addr="127.0.0.1:0",
                      cluster_ttl=0.2)  # 4 s
    try:
        with connect(rt.node_addr, None) as s:
            t0 = time.monotonic()
            s.sendall(HELLO)
            stop = threading.Event()

            def pinger():
                while not stop.wait(0.3):  # a peer's own schedule: a ping every 0.3 s
                    try:
                        s.sendall(PING)
                    except OSError:
                        return

            t = threading.Thread(target=pinger)
            t.start()
            try:
                s.settimeout(15)
                types, closed = _frames(s)
            finally:
                stop.set()
                t.join()
        assert types and set(types) == {5}, types  # every ping answered, with a PONG
        assert 3.9 < closed - t0 < 6, closed - t0
    finally:
        rt.close()


def _established_to(port):
    """This machine's established TCP connections to 127.0.0.1:port."""
    want = ":%04X" % port
    with open("/proc/net/tcp") as f:
        return sum(1 for line in f.readlines()[1:]
                   if line.split()[2].endswith(want) and line.split()[3] == "01")


async def test_a_callers_idle_connection_is_closed_and_the_next_call_opens_another(pg, tmp_path):
    """The calling node closes its own connection once nothing was on it for
    10 TTLs (before the called node would, at 20): no call is lost to it,
    and the next call connects again."""
    a, b, na, nb = two_nodes(pg, tmp_path, ttl=0.2)
    try:
        assert await na.get_by_name("idle").add(1) == 1   # a owns it
        assert await nb.get_by_name("idle").add(1) == 2   # b's call goes to a
        port = int(a.node_addr.rsplit(":", 1)[1])
        assert _established_to(port) == 1
        await asyncio.sleep(3)                            # past 10 TTLs (2 s)
        assert _established_to(port) == 0
        assert await nb.get_by_name("idle").add(1) == 3
        assert _established_to(port) == 1
    finally:
        b.close()
        a.close()


class Waker(dobj.DurableObject):
    fired = []

    async def set_in(self, seconds):
        self.ctx.storage.set_alarm(time.time() * 1000 + seconds * 1000)

    async def who(self):
        return self.ctx.id.name

    async def alarm(self, info=None):
        type(self).fired.append(self.ctx.id.name)
        type(self).event.set()


async def _alarm_left_in_postgresql(pg, tmp_path, name):
    """An alarm of `name` in the cluster's schedule, its node gone."""
    Waker.fired = []
    Waker.event = asyncio.Event()
    rt = dobj.Runtime(storage=str(tmp_path / "a"), cluster=pg.url, node_addr="127.0.0.1:0")
    await rt.bind("WAKER", Waker).get_by_name(name).set_in(0.2)
    rt.close()


async def test_alarm_rows_of_a_namespace_no_node_serves_hide_no_other_alarm(pg, tmp_path):
    """The lease keeper read the first 1,000 due rows of every namespace and
    kept those of its own: 1,000 rows of a namespace no longer served (or of
    a class without alarm()) hid every later alarm of the cluster for good.
    Now it reads the rows of the namespaces it serves with alarms."""
    await _alarm_left_in_postgresql(pg, tmp_path, "hidden")
    pg.sql("INSERT INTO dobj_alarm (ns, object_id, scheduled_at, name) SELECT 'RETIRED', "
           "sha256(int8send(g)), g, NULL FROM generate_series(1, 1000) g")
    try:
        rt = dobj.Runtime(storage=str(tmp_path / "b"), cluster=pg.url, node_addr="127.0.0.1:0")
        rt.bind("WAKER", Waker)  # never calls the object: finds its alarm in PostgreSQL
        await asyncio.wait_for(Waker.event.wait(), 10)
        assert Waker.fired == ["hidden"]
        rt.close()
    finally:
        pg.sql("DELETE FROM dobj_alarm WHERE ns = 'RETIRED'")


async def test_an_alarm_row_whose_name_is_not_its_ids_is_ignored(pg, tmp_path):
    """A row of the schedule is PostgreSQL's word for the object: one whose
    name does not make its ID activated the object under that name
    (ctx.id.name "evil").  Now it is logged and ignored; the object's alarm
    fires once it is activated under its own name."""
    await _alarm_left_in_postgresql(pg, tmp_path, "named")
    pg.sql("UPDATE dobj_alarm SET name = 'evil' WHERE ns = 'WAKER'")
    with DobjLog() as log:
        rt = dobj.Runtime(storage=str(tmp_path / "b"), cluster=pg.url, node_addr="127.0.0.1:0")
        ns = rt.bind("WAKER", Waker)
        await log.wait()
        assert "names an object its ID was not made from; it is ignored" in log.lines[0], log.lines
        assert Waker.fired == []
        assert await ns.get_by_name("named").who() == "named"
        await asyncio.wait_for(Waker.event.wait(), 10)
        assert Waker.fired == ["named"]
        rt.close()


async def test_stub_calls_from_finalizers_run_or_fail_clearly(pg, tmp_path):
    """A __del__ that calls a stub runs wherever the collector runs: here in
    the middle of routed and local calls of a node (gc thresholds of 1), then
    after the runtime closed.  Each call completes, or fails with "the
    runtime is closed"; nothing crashes (make sanitize runs it under ASan)."""
    import gc
    a, b, na, nb = two_nodes(pg, tmp_path)
    started = []

    class Finalized:
        def __init__(self, stub):
            self.stub, self.me = stub, self  # a cycle: freed by the collector

        def __del__(self):
            try:
                started.append(asyncio.ensure_future(self.stub.add(1)))
            except dobj.Error as e:
                # Kept without its traceback: that holds this frame, whose
                # f_back is the frame the collector interrupted - on 3.12+
                # (collections run at eval-breaker checks) often the
                # __init__ of the next Finalized, which it would keep alive.
                started.append(e.with_traceback(None))

    old = gc.get_threshold()
    gc.set_threshold(1, 1, 1)
    try:
        assert await na.get_by_name("fin").add(0) == 0        # a owns it: b's calls are routed
        for i in range(100):
            Finalized(nb.get_by_name("fin") if i % 2 else na.get_by_name("fin-%d" % (i % 3)))
            await nb.get_by_name("fin").add(0)
        gc.collect()
        results = await asyncio.gather(*started)
        assert len(results) == 100 and max(r for r in results) >= 50
        assert await na.get_by_name("fin").add(0) == 50
        del started[:]
        stubs = [nb.get_by_name("fin") for _ in range(10)]
        b.close()
        for stub in stubs:
            Finalized(stub)
        del stubs, stub
        gc.collect()
        outcomes = await asyncio.gather(*(s for s in started if not isinstance(s, dobj.Error)),
                                        return_exceptions=True)
        outcomes += [s for s in started if isinstance(s, dobj.Error)]
        assert len(outcomes) == 10
        assert all(isinstance(e, dobj.Error) and "the runtime is closed" in str(e) for e in outcomes)
    finally:
        gc.set_threshold(*old)
        b.close()
        a.close()
