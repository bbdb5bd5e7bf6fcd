// The WebSocket bench's project for `workerd serve` (bench/ws_bench.py): the
// shape of examples/chat/python's /echo.  The entry forwards the upgrade to
// the one Echo object, which accepts with the hibernation API and echoes each
// message from webSocketMessage.

import { DurableObject } from "cloudflare:workers";

export class Echo extends DurableObject {
  async fetch(request) {
    if (request.headers.get("Upgrade") !== "websocket") {
      return new Response(request.url.endsWith("/ready") ? "1" : "expected Upgrade: websocket",
                          { status: request.url.endsWith("/ready") ? 200 : 426 });
    }
    const pair = new WebSocketPair();
    this.ctx.acceptWebSocket(pair[1]);
    return new Response(null, { status: 101, webSocket: pair[0] });
  }

  async webSocketMessage(ws, message) {
    ws.send(message);
  }
}

export default {
  async fetch(request, env) {
    return env.ECHO.get(env.ECHO.idFromName("echo")).fetch(request);
  },
};
