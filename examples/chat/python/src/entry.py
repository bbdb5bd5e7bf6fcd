"""A chat room on the WebSocket hibernation API.

GET /                         the page (examples/chat/index.html, shared with the Lua room)
GET /rooms/<room>?name=<you>  (Upgrade: websocket) joins <room> as <you>
GET /echo                     (Upgrade: websocket) an object echoing messages

ChatRoom keeps nothing in memory: each socket carries its user's name in its
attachment and as its tag, and the message count is in storage, so the room
can be evicted between messages (hibernation) with every client connected.
"""
import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import dobj

# One page for both chat rooms: examples/chat/index.html, next to the two projects.
PAGE = (Path(__file__).resolve().parents[2] / "index.html").read_text(encoding="utf-8")


def _upgrade_required():
    return dobj.Response("expected Upgrade: websocket", status=426)


class ChatRoom(dobj.DurableObject):
    async def fetch(self, request):
        if request.headers.get("upgrade", "").lower() != "websocket":
            return _upgrade_required()
        name = parse_qs(urlsplit(request.url).query).get("name", ["anonymous"])[0][:64]
        client, server = dobj.WebSocketPair()
        self.ctx.accept_web_socket(server, tags=[name])
        server.serialize_attachment({"name": name})
        # "ping" is answered by the runtime without waking the room.
        self.ctx.set_web_socket_auto_response(dobj.WebSocketRequestResponsePair("ping", "pong"))
        self.broadcast({"type": "join", "name": name}, skip=server)
        return dobj.Response(None, status=101, web_socket=client)

    async def web_socket_message(self, ws, message):
        me = ws.deserialize_attachment()["name"]
        if message == "/who":
            names = sorted(w.deserialize_attachment()["name"] for w in self.ctx.get_web_sockets())
            ws.send(json.dumps({"type": "who", "names": names}))
            return
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        seq = (self.ctx.storage.get("seq") or 0) + 1
        self.ctx.storage.put("seq", seq)
        self.broadcast({"type": "message", "seq": seq, "name": me, "text": message})

    async def web_socket_close(self, ws, code, reason, was_clean):
        me = ws.deserialize_attachment()["name"]
        self.broadcast({"type": "leave", "name": me, "code": code}, skip=ws)

    def broadcast(self, event, skip=None):
        text = json.dumps(event)
        for ws in self.ctx.get_web_sockets():
            if ws != skip and ws.ready_state == 1:
                ws.send(text)


class Echo(dobj.DurableObject):
    async def fetch(self, request):
        if request.headers.get("upgrade", "").lower() != "websocket":
            return _upgrade_required()
        client, server = dobj.WebSocketPair()
        self.ctx.accept_web_socket(server)
        return dobj.Response(None, status=101, web_socket=client)

    async def web_socket_message(self, ws, message):
        ws.send(message)


class Default(dobj.WorkerEntrypoint):
    async def fetch(self, request):
        path = urlsplit(request.url).path
        if path == "/":
            return dobj.Response(PAGE, headers={"content-type": "text/html; charset=utf-8"})
        if path.startswith("/rooms/") and len(path) > len("/rooms/"):
            return await self.env.ROOMS.get_by_name(path[len("/rooms/"):]).fetch(request)
        if path == "/echo":
            return await self.env.ECHO.get_by_name("echo").fetch(request)
        return dobj.Response("not found", status=404)
