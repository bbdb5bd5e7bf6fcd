"""A WebSocket client that does not read until told to: the `websockets`
library's sans-I/O client protocol (the handshake and every frame are the
library's) over a blocking socket whose receive buffer is a few KiB, so that
what the server sends waits in the server.  Used by
tests/python/test_websocket_slow.py and tests/lua/ws_client.py."""
import socket

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri


class SlowClient:
    def __init__(self, port, path="/", timeout=120.0):
        self.proto = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}{path}"), max_size=None)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.proto.send_request(self.proto.connect())
        self._flush()
        # The 101 answer only (the frames after it stay in the socket).
        head = b""
        while b"\r\n\r\n" not in head:
            byte = self.sock.recv(1)
            if not byte:
                raise ConnectionError(f"the server closed during the handshake: {head!r}")
            head += byte
        self.proto.receive_data(head)
        events = self.proto.events_received()
        if not (events and isinstance(events[0], Response) and events[0].status_code == 101):
            raise ConnectionError(f"no 101: {head!r}")
        self.sent = 0  # bytes of messages sent before the server cut the connection

    def _flush(self):
        for data in self.proto.data_to_send():
            if data:
                self.sock.sendall(data)

    def send(self, message):
        """Send one message; False once the server cut the connection."""
        if isinstance(message, str):
            self.proto.send_text(message.encode())
        else:
            self.proto.send_binary(message)
        try:
            self._flush()
        except OSError:  # reset, broken pipe: the server dropped us
            return False
        self.sent += len(message)
        return True

    def send_fragmented(self, count):
        """Send one text message of `count` one-byte fragments; False once
        the server cut the connection (as it does past its fragment bound)."""
        self.proto.send_text(b"x", fin=False)
        for i in range(count - 1):
            self.proto.send_continuation(b"x", fin=i == count - 2)
        try:
            self._flush()
        except OSError:  # reset once the server refused it
            return False
        return True

    def read_to_end(self, answer=False):
        """Read everything until the connection ends: (the messages, the
        close code the client saw: the server's, or 1006 when the connection
        just ended).  answer=True: the server's close is answered, as a
        browser does (the protocol's reply is sent)."""
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except ConnectionResetError:
                data = b""
            if not data:
                self.proto.receive_eof()
                break
            self.proto.receive_data(data)
            if answer:
                try:
                    self._flush()
                except OSError:  # the server did not wait for it
                    pass
        messages = [e.data.decode() if e.opcode == Opcode.TEXT else e.data
                    for e in self.proto.events_received()
                    if getattr(e, "opcode", None) in (Opcode.TEXT, Opcode.BINARY)]
        self.sock.close()
        return messages, self.proto.close_code

    def close(self):
        self.sock.close()
