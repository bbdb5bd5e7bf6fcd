/*
 * dobj/server.h — the HTTP/1.1 and WebSocket server of `dobj dev` and
 * `dobj-lua dev`, driven by the host's loop.
 *
 * One server for both bindings, so that they answer the same requests the
 * same way: libmicrohttpd parses HTTP (keep-alive, chunked uploads,
 * 100-continue), wslay frames WebSockets, and the core's rules decide what
 * a request is (dobj/wire.h).  Like a runtime (dobj_rt_fd / dobj_rt_process)
 * the server is sans-loop: it has one pollable fd, readable whenever
 * dobj_server_process has work (a connection to accept or read, a response
 * or a WebSocket message to write), and calls the host back from inside
 * dobj_server_process only:
 *
 *   - request(data, id, msg, refused, why): a request is complete.  `msg`
 *     (url, method, headers, body) stays the server's and is valid until
 *     the request is answered.  When `refused` is not 0 the core refused it
 *     (a status: 400, 413, 414, 431, 501) for the reason `why`: the host
 *     answers it with that status and the reason (and a log line) without
 *     running its entry; the connection closes after the answer.
 *
 * The host answers a request, at once or later (from a task), with
 * dobj_server_response_begin / _header / _send.  A 101 response with a
 * client end (dobj/websocket.h) completes a WebSocket handshake; the
 * server then carries the frames between the client and the core.
 *
 * Threads: a server is used from one thread.  Nothing here blocks.
 */
#ifndef DOBJ_SERVER_H
#define DOBJ_SERVER_H

#include <stddef.h>
#include <stdint.h>

typedef struct dobj_server dobj_server;
typedef struct dobj_server_response dobj_server_response;
struct dobj_ws;

/** What the server calls (from dobj_server_process only). */
typedef struct dobj_server_hooks {
	/** A complete request: answer `id` with dobj_server_response_begin
	 *  (now or later).  `refused`: 0, or the status the core refused it
	 *  with, `why` saying why (see the file comment).  May call any
	 *  dobj_server_* function but dobj_server_free. */
	void (*request)(void *data, uint64_t id, const dobj_msg *msg, int refused, const char *why);
	/** May be NULL.  A client went away before its request was whole (a
	 *  body cut short): the entry never sees it; method and url (valid
	 *  during the call) are for the log.  May not call dobj_server_*. */
	void (*abandoned)(void *data, const char *method, const char *url);
} dobj_server_hooks;

/**
 * Listen on host:port (`host` an address, "127.0.0.1", "::1", "0.0.0.0",
 * or a name whose first address is taken; port 0: a free one) and return
 * the server (`*out`, the caller's, dobj_server_free).  DOBJ_EARG with
 * "host:port: reason" when the address cannot be had (unknown, in use: "...
 * address already in use ...", no permission); DOBJ_ERROR when dobj was
 * built without libmicrohttpd.
 */
DOBJ_API int dobj_server_listen(const char *host, int port, const dobj_server_hooks *hooks,
	void *data, dobj_server **out);

/** The pollable fd: readable when dobj_server_process has work.  The
 *  server's; valid until dobj_server_free. */
DOBJ_API int dobj_server_fd(const dobj_server *s);

/** Milliseconds until dobj_server_process must run even if the fd stays
 *  quiet, or -1 for never. */
DOBJ_API int dobj_server_timeout(dobj_server *s);

/** Do the work there is: accept, read, parse, call the request hook for
 *  each complete request, write the answers and the WebSocket messages.
 *  DOBJ_OK, or DOBJ_ERROR (the message says why) when the server failed. */
DOBJ_API int dobj_server_process(dobj_server *s);

/** The port and the "addr:port" ("[::1]:8787") the server listens on. */
DOBJ_API int dobj_server_port(const dobj_server *s);
DOBJ_API const char *dobj_server_address(const dobj_server *s);

/** Requests handed to the host and not answered yet, and requests being
 *  read: what a graceful stop waits for. */
DOBJ_API size_t dobj_server_inflight(const dobj_server *s);

/** Open WebSocket connections. */
DOBJ_API size_t dobj_server_websockets(const dobj_server *s);

/**
 * Stop taking connections (the port is freed at once) and close every
 * WebSocket with `code` and `reason` (1001: going away, 1012: restarting);
 * requests in flight go on, and their answers close their connections.
 */
DOBJ_API void dobj_server_quiesce(dobj_server *s, int code, const char *reason);

/**
 * Begin the answer to request `id`: status, body (copied) and, for a 101,
 * the client end of a WebSocket pair whose handshake it completes (NULL
 * otherwise).  `*out` is then filled with dobj_server_response_header and
 * handed back with dobj_server_response_send or _abort.  DOBJ_EARG when no
 * request `id` waits for an answer, or the status and body do not go
 * together (dobj_ws_response_check, dobj_msg_response_body_check).
 */
DOBJ_API int dobj_server_response_begin(dobj_server *s, uint64_t id, int status,
	const void *body, size_t len, struct dobj_ws *ws, dobj_server_response **out);

/** Add a header line: checked by dobj_msg_header_check (DOBJ_EARG naming
 *  the header; the response can still be aborted and the request answered
 *  again), dropped when it frames the message (dobj_msg_header_is_framing). */
DOBJ_API int dobj_server_response_header(dobj_server_response *r, const char *name,
	size_t name_len, const char *value, size_t value_len);

/** Send the response (and free it); the request is answered.  Returns the
 *  status sent: a 101 to a request that is not a WebSocket upgrade is
 *  answered 426 (the client end hears a 1006 close). */
DOBJ_API int dobj_server_response_send(dobj_server_response *r);

/** Drop a response begun but not sent: the request still waits. */
DOBJ_API void dobj_server_response_abort(dobj_server_response *r);

/** Close the server: every connection is dropped (WebSockets with 1001). */
DOBJ_API void dobj_server_free(dobj_server *s);

#endif
