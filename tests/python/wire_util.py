"""The node-to-node wire (core/src/cluster_net.c, cluster_route.c) spoken raw
by the hostile tests (test_cluster_hostile.py, test_cluster_route.py): a
frame is a 4-byte big-endian length (of the type byte and the body), the
type, the body; a peer opens with HELLO."""
import socket
import struct

import dobj


def frame(kind, body=b""):
    return struct.pack(">IB", len(body) + 1, kind) + body


HELLO = frame(1, b"DOBJ" + struct.pack(">HQ", 1, 99))
PING = frame(4)


def call_frame(call_id, key, oid, name, method, args):
    """A CALL frame as a node sends it (cluster_route.c): RPC, depth 1."""
    body = struct.pack(">QBBH", call_id, 2, 1, len(key)) + key + oid
    body += struct.pack(">I", 0xFFFFFFFF) if name is None else struct.pack(">I", len(name)) + name
    body += struct.pack(">H", len(method)) + method + dobj.serialize(args)
    return frame(2, body)


def connect(addr, timeout=10):
    """A connection to a node's "host:port" (nothing sent yet)."""
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def split_frames(buf):
    """The whole frames at the head of buf as (type, body), and what is left."""
    frames = []
    while len(buf) >= 5 and len(buf) >= 4 + struct.unpack(">I", buf[:4])[0]:
        n = struct.unpack(">I", buf[:4])[0]
        frames.append((buf[4], buf[5:4 + n]))
        buf = buf[4 + n:]
    return frames, buf


def result_of(addr, call):
    """Send HELLO + call (a whole frame) to a node; its first frame back, a
    RESULT: (call id, status, message, the bytes after the message)."""
    got = b""
    with connect(addr) as s:
        s.sendall(HELLO + call)
        while not split_frames(got)[0]:
            chunk = s.recv(65536)
            assert chunk, "the node closed the connection"
            got += chunk
    kind, body = split_frames(got)[0][0]
    assert kind == 3, kind
    call_id, status, _, _, mlen = struct.unpack(">QBBiI", body[:18])
    return call_id, status, body[18:18 + mlen].decode(), body[18 + mlen:]
