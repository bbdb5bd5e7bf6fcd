/**
 * dobj/websocket.h — WebSockets with the hibernation API.
 *
 * A WebSocketPair is one connection with two ends.  The object accepts the
 * server end (dobj_ws_accept, ctx.acceptWebSocket); the client end goes back
 * in the 101 response and the host (a server such as `dobj dev`) serves it:
 * it attaches its output callbacks (dobj_ws_attach) and hands the core what
 * arrives from the network (dobj_ws_receive, dobj_ws_peer_close,
 * dobj_ws_peer_error).  The core does no network I/O.
 *
 * Accepted sockets belong to the object's ID, not to an instance: an
 * instance evicted for idleness (hibernation) leaves its sockets registered
 * with the runtime, and the next event constructs a fresh instance that sees
 * the same sockets, tags and attachments.  Messages, closes and errors reach
 * the object as CALL tasks (DOBJ_CALL_WS_MESSAGE, _CLOSE, _ERROR) queued in
 * arrival order and run under its input gate like any other event; nobody
 * awaits them, so a failed handler goes to the error hook.  A class without
 * a close or error handler ignores those events (DOBJ_CLASS_WS_* flags); a
 * message to a class without a message handler fails (DOBJ_MSG_WS_NO_MESSAGE).
 *
 * The limits and messages are Cloudflare's (workerd's where it has words).
 */
#ifndef DOBJ_WEBSOCKET_H
#define DOBJ_WEBSOCKET_H

#ifdef __cplusplus
extern "C" {
#endif

/** Limits (Cloudflare's Durable Objects limits and workerd's constants). */
#define DOBJ_WS_MAX_PER_OBJECT 32768      /**< hibernatable sockets per object */
#define DOBJ_WS_MAX_MESSAGE (32u << 20)   /**< received message: 32 MiB */
#define DOBJ_WS_MAX_TAGS 10               /**< tags per socket */
#define DOBJ_WS_MAX_TAG_LEN 256           /**< characters (UTF-16 units) per tag */
#define DOBJ_WS_MAX_ATTACHMENT 16384      /**< serialized attachment, bytes */
#define DOBJ_WS_MAX_AUTO_RESPONSE 2048    /**< auto-response request/response, bytes */
#define DOBJ_WS_MAX_CLOSE_REASON 123      /**< close reason, bytes of UTF-8 */
/** Output waiting for one client, in bytes (dobj's bound: workerd queues
 *  without one).  Before the host attached the client end, a send beyond it
 *  fails; after, output the host has not written yet counts (its io's
 *  `queued`), and a message that would take it past the bound closes the
 *  connection with DOBJ_WS_CLOSE_SLOW instead (see dobj_ws_io). */
#define DOBJ_WS_MAX_BUFFERED (32u << 20)

/** Close code sent when a received message is over DOBJ_WS_MAX_MESSAGE. */
#define DOBJ_WS_CLOSE_TOO_BIG 1009
#define DOBJ_MSG_WS_TOO_BIG "Message is too large"
/** Close code sent when a received text message is not UTF-8 (RFC 6455
 *  8.1; the `websockets` library under uvicorn does the same). */
#define DOBJ_WS_CLOSE_BAD_UTF8 1007
#define DOBJ_MSG_WS_BAD_UTF8 "Invalid UTF-8 in a text message"
#define DOBJ_MSG_WS_SEND_UTF8 "a text WebSocket message must be valid UTF-8: send other " \
	"bytes as a binary message"
/** Received messages of one connection waiting for its object, in bytes
 *  (each counted with its bookkeeping, DOBJ_WS_EVENT_COST): past it the
 *  host stops reading that client (dobj_ws_receive_paused) until the object
 *  caught up (dobj_ws_io.resume).  A client that sends faster than its
 *  object handles waits in its own TCP buffers, not in the server. */
#define DOBJ_WS_MAX_BACKLOG (1u << 20)
#define DOBJ_WS_EVENT_COST 512
/** How long a host waits, once a connection's close began (the object's or
 *  the server's close, or the client's), for the closing handshake to end:
 *  the client's answer, or its end closed.  A client that does not answer,
 *  or does not read what waits before the close frame, is then cut off and
 *  the object hears 1006 (no close came: RFC 6455 7.1.5), was_clean false.  5 s as
 *  Go's nhooyr/websocket waits (Node's ws waits 30 s). */
#define DOBJ_WS_CLOSE_WAIT_MS 5000
/** Close code of a connection whose client did not read: more than
 *  DOBJ_WS_MAX_BUFFERED bytes would have waited for it (policy violation). */
#define DOBJ_WS_CLOSE_SLOW 1008
#define DOBJ_MSG_WS_SLOW "the client did not read: more than 32 MiB waited for it"

/* workerd's messages. */
#define DOBJ_MSG_WS_ACCEPTED \
	"Cannot call `acceptWebSocket()` if the WebSocket was already accepted via `accept()`"
#define DOBJ_MSG_WS_PAIR_USED "Cannot call `acceptWebSocket()` on this WebSocket because " \
	"its pair has already been accepted or used in a Response."
#define DOBJ_MSG_WS_NOT_ACCEPTED "You must call one of accept() or state.acceptWebSocket() " \
	"on this WebSocket before sending messages."
#define DOBJ_MSG_WS_SEND_CLOSED "Can't call WebSocket send() after close()."
#define DOBJ_MSG_WS_TOO_MANY_TAGS "a Hibernatable WebSocket cannot have more than 10 tags"
#define DOBJ_MSG_WS_REASON_NO_CODE \
	"If you specify a WebSocket close reason, you must also specify a code."
/* dobj's own words. */
#define DOBJ_MSG_WS_NO_MESSAGE "Handler does not export a webSocketMessage() function."
#define DOBJ_MSG_WS_CLIENT_END "this is the client end of a WebSocketPair: return it in a " \
	"101 Response (the server serves it) and accept the server end"

/** Ready states (the WebSocket standard's numbers). */
enum {
	DOBJ_WS_CONNECTING = 0,
	DOBJ_WS_OPEN = 1,
	DOBJ_WS_CLOSING = 2,
	DOBJ_WS_CLOSED = 3
};

/** Which end of a pair. */
enum { DOBJ_WS_CLIENT = 0, DOBJ_WS_SERVER = 1 };

/** One end of a WebSocketPair (refcounted: the pair lives while either end
 *  is referenced, or while its server end is accepted by an object). */
typedef struct dobj_ws dobj_ws;

/**
 * new WebSocketPair(): *client and *server each get a new reference
 * (dobj_ws_unref).  The pair belongs to the runtime of the object that
 * accepts its server end.
 */
DOBJ_API int dobj_ws_pair_new(dobj_ws **client, dobj_ws **server);
DOBJ_API void dobj_ws_ref(dobj_ws *ws);
/** Drop a reference (NULL is a no-op; any thread, like the other *_unref). */
DOBJ_API void dobj_ws_unref(dobj_ws *ws);
/** DOBJ_WS_CLIENT or DOBJ_WS_SERVER. */
DOBJ_API int dobj_ws_end(const dobj_ws *ws);
/** The other end of the same pair (borrowed). */
DOBJ_API dobj_ws *dobj_ws_peer(dobj_ws *ws);
/** DOBJ_WS_OPEN until a close was sent or received (CLOSING), CLOSED once
 *  both were (or the connection failed). */
DOBJ_API int dobj_ws_ready_state(const dobj_ws *ws);
/** A number naming the pair, unique in its runtime (for hashing). */
DOBJ_API uint64_t dobj_ws_serial(const dobj_ws *ws);

/* ------------------------------------------------- the object's side */

/**
 * ctx.acceptWebSocket(ws, tags): register the server end with the object
 * `obj` (from inside one of its steps or not).  `tags` are `ntags` strings
 * of `tag_lens[i]` bytes (UTF-8); `tag_units[i]` (may be NULL: UTF-16 units
 * of the UTF-8, JavaScript's length) is what the 256 limit counts.
 * Duplicate tags are kept once.  Errors (DOBJ_ESTATE / DOBJ_EARG, workerd's
 * messages): the end was already accepted, its pair was already used in a
 * response, the client end, more than 10 tags, a tag too long, more than
 * DOBJ_WS_MAX_PER_OBJECT sockets, a reset object (dobj_obj_check).
 */
DOBJ_API int dobj_ws_accept(dobj_obj *obj, dobj_ws *ws, const char *const *tags,
	const size_t *tag_lens, const size_t *tag_units, size_t ntags);

/**
 * ws.send(message): `text` is 1 for a string (valid UTF-8, else DOBJ_EARG
 * DOBJ_MSG_WS_SEND_UTF8: a client would fail the connection), 0 for bytes.
 * A string may carry surrogates in their 3-byte WTF-8 form (a Python str's,
 * Lua's utf8.char(0xD800)): a pair goes as its character, a lone one as
 * U+FFFD (the WebSocket standard's USVString); so does a close reason's.  Before
 * the host attached the client end the message is buffered (and delivered
 * at attach time, in order), up to DOBJ_WS_MAX_BUFFERED bytes (DOBJ_ESTATE
 * beyond; the step's output is checked when the step ends, see below).  DOBJ_ESTATE with workerd's message when the
 * end was not accepted, or after this end's close(); a send after the peer
 * closed or failed is dropped silently (as workerd does).
 */
DOBJ_API int dobj_ws_send(dobj_ws *ws, const void *data, size_t len, int text);

/**
 * ws.close(code, reason): `code` < 0 for none (1005 on the wire, and then no
 * reason may be given: pass reason NULL).  Codes 1000-4999 except 1004,
 * 1005, 1006 and 1015; a reason of at most 123 bytes of UTF-8.  A second close is
 * ignored.  DOBJ_EARG / DOBJ_ESTATE with workerd's messages.
 */
DOBJ_API int dobj_ws_close(dobj_ws *ws, int code, const char *reason, size_t reason_len);

/**
 * ws.serializeAttachment: `data` is the value already encoded in V8's
 * format (dobj_val_to_v8 or a binding's encoder); at most
 * DOBJ_WS_MAX_ATTACHMENT bytes (workerd's message otherwise).  Copied.
 * len 0 with data NULL removes it.
 */
DOBJ_API int dobj_ws_set_attachment(dobj_ws *ws, const void *data, size_t len);
/** The attachment's bytes (borrowed, valid until the next set), or NULL. */
DOBJ_API const unsigned char *dobj_ws_attachment(const dobj_ws *ws, size_t *len);

/** ctx.getTags(ws): the number of tags, and the i-th (borrowed, `*len`
 *  bytes).  DOBJ_ESTATE when the end is not accepted by an object. */
DOBJ_API int dobj_ws_tag_count(const dobj_ws *ws, size_t *n);
DOBJ_API const char *dobj_ws_tag_at(const dobj_ws *ws, size_t i, size_t *len);

/**
 * ctx.getWebSockets(tag): the server ends accepted by `obj`'s ID that are
 * still registered (closed or failed ones leave once their event has run),
 * in accept order, filtered by `tag` (NULL: all).  *out (dobj_free) holds
 * *n new references (dobj_ws_unref each).
 */
DOBJ_API int dobj_obj_web_sockets(dobj_obj *obj, const char *tag, size_t tag_len,
	dobj_ws ***out, size_t *n);

/**
 * ctx.setWebSocketAutoResponse(pair): a text message equal to `request`
 * received on any socket of the object is answered with `response` by the
 * core, without an event (the object stays asleep).  request NULL clears it.
 * Each at most DOBJ_WS_MAX_AUTO_RESPONSE bytes.  Kept with the ID: it
 * survives hibernation.
 */
DOBJ_API int dobj_obj_set_ws_auto_response(dobj_obj *obj, const char *request,
	size_t request_len, const char *response, size_t response_len);
/** The current pair (borrowed) or 0 when none. */
DOBJ_API int dobj_obj_ws_auto_response(dobj_obj *obj, const char **request, size_t *request_len,
	const char **response, size_t *response_len);
/** ctx.getWebSocketAutoResponseTimestamp(ws): 1 and *ms (ms since the
 *  epoch, the runtime's wall clock) of the last auto-response, or 0. */
DOBJ_API int dobj_ws_auto_response_time(const dobj_ws *ws, double *ms);

/* -------------------------------------------------------- the events */

/** What a DOBJ_CALL_WS_* task carries (dobj_task_ws_event). */
typedef struct dobj_ws_event {
	dobj_ws *ws;          /**< the server end (borrowed for the task's life) */
	const unsigned char *data; /**< MESSAGE: the message; ERROR: the error text */
	size_t len;
	int text;             /**< MESSAGE: 1 for a string */
	int code;             /**< CLOSE: the close code (1005: none, 1006: abnormal) */
	const char *reason;   /**< CLOSE: reason (UTF-8, reason_len bytes) */
	size_t reason_len;
	int was_clean;        /**< CLOSE */
} dobj_ws_event;

/** The event of a DOBJ_CALL_WS_* task (borrowed; NULL for other tasks and
 *  once the task finished). */
DOBJ_API const dobj_ws_event *dobj_task_ws_event(const dobj_task *t);

/* --------------------------------------------------------- the host side */

/**
 * The host's output for the client end.  Called synchronously from inside
 * the object's step (ws.send) or from the dobj_ws_* call that caused it;
 * a callback must not call back into the runtime: it queues the frame on
 * its connection.  `release` (may be NULL) runs once when the core lets go
 * of `payload` (detach, runtime closed, pair freed).
 *
 * The bound on a slow client (DOBJ_WS_MAX_BUFFERED): `queued` (may be NULL:
 * no bound, for hosts that hold nothing, such as a test's) returns the bytes
 * of messages given to `send` that the host has not written to the network
 * yet.  When a message would take them past the bound, the core does not
 * send it: it calls `abort` (NULL: `close`) with DOBJ_WS_CLOSE_SLOW and
 * DOBJ_MSG_WS_SLOW, and the object hears a close with that code (was_clean
 * 0); later output is dropped, as after any close by the peer.  `abort`
 * drops what waits (frees it) and ends the connection without waiting for
 * the client: the close frame goes out if the socket takes it, and the host
 * reports nothing more for this end (dobj_ws_peer_close fails, harmlessly).
 *
 * `resume` (may be NULL) runs when a client the host stopped reading
 * (dobj_ws_receive_paused returned 1) may be read again.
 */
typedef struct dobj_ws_io {
	void (*send)(void *payload, const void *data, size_t len, int text);
	void (*close)(void *payload, int code, const char *reason, size_t reason_len);
	void (*release)(void *payload);
	size_t (*queued)(void *payload);
	void (*abort)(void *payload, int code, const char *reason, size_t reason_len);
	void (*resume)(void *payload);
} dobj_ws_io;

/**
 * The host takes the client end (the one in the 101 response): what the
 * object sent before is delivered to io now, in order.  `io` must stay valid
 * until released.  DOBJ_ESTATE for a server end, an end already attached,
 * a pair whose server end no object accepted.
 */
DOBJ_API int dobj_ws_attach(dobj_ws *client, const dobj_ws_io *io, void *payload);
/** The host lets go of the connection: release runs now, later output is
 *  dropped.  The socket stays registered until dobj_ws_peer_close/_error. */
DOBJ_API void dobj_ws_detach(dobj_ws *client);
/**
 * The payload the host attached to `ws`'s pair (on either end), when the
 * caller's reference to `ws` is the only reference to the pair left; NULL
 * otherwise (no payload, or the object's list, a queued event, output held
 * for a commit, the other end or another reference of the caller's reaches
 * the pair too).  Borrowed.  What a binding's garbage collector needs:
 * such a payload is reachable through that one reference alone, so its
 * wrapper may report it (and, when the wrapper is garbage, detach it); a
 * payload something else reaches is live and must not be reported, or the
 * host's callables of an open socket would be torn down under it.
 */
DOBJ_API void *dobj_ws_sole_payload(const dobj_ws *ws);
/**
 * A pointer the binding keeps with the pair, the same through either end
 * (NULL until set): its one object for the connection, which every wrapper
 * of either end shares and which alone holds the pair.  Then "the caller's
 * reference is the pair's last" (dobj_ws_sole_payload) holds exactly when
 * nothing but the binding's wrappers reaches the pair, however many there
 * are, and the collector sees those wrappers reach the payload through one
 * object.  The core only stores it; the binding sets it back to NULL before
 * that object goes.
 */
DOBJ_API void dobj_ws_set_binding_data(dobj_ws *ws, void *data);
/** What dobj_ws_set_binding_data stored for `ws`'s pair, or NULL. */
DOBJ_API void *dobj_ws_binding_data(const dobj_ws *ws);

/**
 * A message arrived from the network on the client end's connection.  An
 * auto-response match is answered at once through io (no event); a message
 * over DOBJ_WS_MAX_MESSAGE closes the connection with 1009 (through io)
 * and delivers a close event, a text message that is not UTF-8 the same
 * with 1007; anything else queues a WS_MESSAGE event on
 * the object (constructing an instance if it hibernated).  Nothing runs
 * inside this call: the host processes the runtime afterwards (its notify
 * hook fires).  DOBJ_ESTATE after the peer closed.
 */
DOBJ_API int dobj_ws_receive(dobj_ws *client, const void *data, size_t len, int text);
/**
 * 1 when the host should stop reading this client: more than
 * DOBJ_WS_MAX_BACKLOG of its messages wait for the object (then io->resume
 * runs once they are down to half), 0 when it may read.  Backpressure on a
 * client that sends faster than its object handles (one rule for every
 * host); a host that cannot pause a connection may ignore it.
 */
DOBJ_API int dobj_ws_receive_paused(dobj_ws *client);
/**
 * The peer closed (`code`: 1005 when its frame had none, 1006 for a
 * connection lost without a close frame): queues a WS_CLOSE event; the
 * socket leaves the object's list once that event has run.
 */
DOBJ_API int dobj_ws_peer_close(dobj_ws *client, int code, const char *reason,
	size_t reason_len, int was_clean);
/** The connection failed: queues a WS_ERROR event with `message`; the
 *  socket leaves the object's list once it has run. */
DOBJ_API int dobj_ws_peer_error(dobj_ws *client, const char *message, size_t len);

/** The status rule of a Response carrying a WebSocket: 101 and only
 *  with one; otherwise dobj_msg_status_check's.  DOBJ_EARG with a message. */
#define DOBJ_MSG_WS_STATUS "a Response with a WebSocket must have status 101"
DOBJ_API int dobj_ws_response_check(long long status, int has_web_socket);

/** Number of sockets accepted by objects of `ns` still registered (tests,
 *  leak reports). */
DOBJ_API size_t dobj_ns_web_socket_count(const dobj_ns *ns);

#ifdef __cplusplus
}
#endif
#endif
