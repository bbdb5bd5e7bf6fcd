/*
 * WebSockets with the hibernation API (dobj/websocket.h): accepting with
 * tags, events in order under the object's gate, hibernation (eviction and a
 * fresh instance with the same sockets, tags and attachments), auto-response,
 * Cloudflare's limits and workerd's errors, the host's side (buffered output
 * before attach, peer close, errors), and a runtime closed with open sockets.
 */
#include <stdio.h>

#include "testhost.h"

static dobj_ns *room_ns;
static int constructions, destroyed, hook_errors;
static char seen[4096];      /* what the object saw, in order */
static char hook_msg[256];
static dobj_ws *last_client; /* the client end of the last accepted pair */
static struct conn *watched; /* test_output_waits_for_the_commit */

static void see(const char *fmt, ...)
{
	va_list ap;
	size_t n = strlen(seen);
	va_start(ap, fmt);
	vsnprintf(seen + n, sizeof(seen) - n, fmt, ap);
	va_end(ap);
}

/* ------------------------------------------------------- the host's io */

typedef struct conn {
	char out[2048];
	int releases;
	size_t queued;  /* what bounded_io says waits for the client */
	int resumes;
} conn;

static void io_send(void *payload, const void *data, size_t len, int text)
{
	conn *c = payload;
	size_t n = strlen(c->out);
	c->queued += len;
	snprintf(c->out + n, sizeof(c->out) - n, "%s%.*s|", text ? "" : "b:", (int)len,
		(const char *)data);
}

static void io_close(void *payload, int code, const char *reason, size_t len)
{
	conn *c = payload;
	size_t n = strlen(c->out);
	snprintf(c->out + n, sizeof(c->out) - n, "close %d %.*s|", code, (int)len, reason);
}

static void io_release(void *payload)
{
	((conn *)payload)->releases++;
}

static const dobj_ws_io test_io = { io_send, io_close, io_release, NULL, NULL, NULL };

/* A host that holds what it was given (its queue, `queued` bytes) and can
 * be told to give up on the client. */
static size_t io_queued(void *payload)
{
	return ((conn *)payload)->queued;
}

static void io_abort(void *payload, int code, const char *reason, size_t len)
{
	conn *c = payload;
	size_t n = strlen(c->out);
	c->queued = 0;
	snprintf(c->out + n, sizeof(c->out) - n, "abort %d %.*s|", code, (int)len, reason);
}

static void io_resume(void *payload)
{
	((conn *)payload)->resumes++;
}

static const dobj_ws_io bounded_io = {
	io_send, io_close, io_release, io_queued, io_abort, io_resume
};

/* ------------------------------------------------------------ the class */

static int room_construct(dobj_obj *obj, void *data, void **instance, void **error)
{
	(void)obj; (void)data; (void)error;
	constructions++;
	*instance = tv_new(V_INST, NULL, 0);
	return DOBJ_OK;
}

static void room_destroy(void *instance, void *data)
{
	(void)data;
	destroyed++;
	tv_release(NULL, instance);
}

static void broadcast(dobj_obj *obj, const char *tag, const void *msg, size_t len)
{
	dobj_ws **all;
	size_t n, i;
	CHECK_EQ_INT(dobj_obj_web_sockets(obj, tag, tag ? strlen(tag) : 0, &all, &n), DOBJ_OK);
	for (i = 0; i < n; i++) {
		CHECK_EQ_INT(dobj_ws_send(all[i], msg, len, 1), DOBJ_OK);
		dobj_ws_unref(all[i]);
	}
	dobj_free(all);
}

static int room_step(dobj_task *t, void *data)
{
	dobj_obj *obj = dobj_task_obj(t);
	const dobj_ws_event *ev = dobj_task_ws_event(t);
	tv *req;
	(void)data;

	switch (dobj_task_call_kind(t)) {
	case DOBJ_CALL_WS_MESSAGE: {
		char m[256];
		size_t alen;
		const unsigned char *att = dobj_ws_attachment(ev->ws, &alen);
		snprintf(m, sizeof(m), "%.*s", (int)ev->len, (const char *)ev->data);
		see("msg %s #%d att=%.*s;", m, constructions, (int)alen, att ? (const char *)att : "-");
		if (!strncmp(m, "all ", 4))
			broadcast(obj, NULL, m + 4, strlen(m + 4));
		else if (!strncmp(m, "tag ", 4))
			broadcast(obj, "red", m + 4, strlen(m + 4));
		else if (!strncmp(m, "att ", 4))
			CHECK_EQ_INT(dobj_ws_set_attachment(ev->ws, m + 4, strlen(m + 4)), DOBJ_OK);
		else if (!strcmp(m, "gate")) {
			/* Held until the step's writes are committed (output gate). */
			CHECK_EQ_INT(dobj_ws_send(ev->ws, "held", 4, 1), DOBJ_OK);
			CHECK_STR(watched->out, "");
		} else if (!strcmp(m, "bye"))
			CHECK_EQ_INT(dobj_ws_close(ev->ws, 4000, "done", 4), DOBJ_OK);
		else if (!strcmp(m, "fail")) {
			dobj_task_raise(t, DOBJ_EUSER, "handler failed", NULL);
			return DOBJ_OK;
		} else
			CHECK_EQ_INT(dobj_ws_send(ev->ws, ev->data, ev->len, ev->text), DOBJ_OK);
		dobj_task_return(t, NULL);
		return DOBJ_OK;
	}
	case DOBJ_CALL_WS_CLOSE: {
		dobj_ws **all;
		size_t n;
		CHECK_EQ_INT(dobj_obj_web_sockets(obj, NULL, 0, &all, &n), DOBJ_OK);
		see("close %d %.*s %d state=%d listed=%d;", ev->code, (int)ev->reason_len, ev->reason,
			ev->was_clean, dobj_ws_ready_state(ev->ws), (int)n);
		while (n)
			dobj_ws_unref(all[--n]);
		dobj_free(all);
		/* A send after the peer closed is dropped, not an error (after
		 * the object's own close it is one). */
		CHECK_EQ_INT(dobj_ws_send(ev->ws, "late", 4, 1),
			dobj_ws_ready_state(ev->ws) == DOBJ_WS_CLOSING ? DOBJ_OK : DOBJ_ESTATE);
		dobj_task_return(t, NULL);
		return DOBJ_OK;
	}
	case DOBJ_CALL_WS_ERROR:
		see("error %.*s;", (int)ev->len, (const char *)ev->data);
		dobj_task_return(t, NULL);
		return DOBJ_OK;
	default:
		break;
	}
	/* fetch: "accept TAG..." makes a pair and accepts its server end. */
	req = dobj_task_request(t);
	if (!strncmp(req->s, "accept", 6)) {
		dobj_ws *client, *server;
		const char *tags[12];
		size_t lens[12], n = 0;
		char buf[128], *p, *save = NULL;
		snprintf(buf, sizeof(buf), "%s", req->s + 6);
		for (p = strtok_r(buf, " ", &save); p && n < 12; p = strtok_r(NULL, " ", &save)) {
			tags[n] = p;
			lens[n++] = strlen(p);
		}
		CHECK_EQ_INT(dobj_ws_pair_new(&client, &server), DOBJ_OK);
		if (dobj_ws_accept(obj, server, tags, lens, NULL, n) < 0) {
			respond(t, 500, "%s", dobj_error_last());
			dobj_ws_unref(client);
		} else {
			/* Sent before the host attached: kept until it does. */
			CHECK_EQ_INT(dobj_ws_send(server, "welcome", 7, 1), DOBJ_OK);
			respond(t, 101, "ok");
			dobj_ws_unref(last_client);
			last_client = client;
		}
		dobj_ws_unref(server);
		return DOBJ_OK;
	}
	if (!strncmp(req->s, "auto ", 5)) {
		char r1[32], r2[32];
		sscanf(req->s + 5, "%31s %31s", r1, r2);
		CHECK_EQ_INT(dobj_obj_set_ws_auto_response(obj, r1, strlen(r1), r2, strlen(r2)), DOBJ_OK);
	}
	respond(t, 200, "ok");
	return DOBJ_OK;
}

static void hook(dobj_task *t, void *data)
{
	const char *msg = "";
	(void)data;
	dobj_task_result(t, NULL, &msg, NULL);
	hook_errors++;
	snprintf(hook_msg, sizeof(hook_msg), "%s", msg);
}

/* The Room runtime of most tests (tests/c/testhost.h's fixture), on virtual
 * time, the object's state and the log emptied. */
static dobj_rt *make_rt(double idle_ms, unsigned ws_flags)
{
	dobj_rt *rt;
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_class k = { 0 };
	o.virtual_time = 1;
	o.idle_timeout_ms = idle_ms;
	k.name = "Room";
	k.flags = DOBJ_CLASS_FETCH | ws_flags;
	k.construct = room_construct;
	k.step = room_step;
	k.destroy = room_destroy;
	rt = testhost_rt(&o, &k, "ROOM", "room-key", &room_ns);
	dobj_rt_set_error_hook(rt, hook, NULL);
	constructions = destroyed = hook_errors = 0;
	seen[0] = hook_msg[0] = '\0';
	last_client = NULL;
	return rt;
}

/* A runtime whose one class runs `step` for a fetch: the tests of a step
 * that is not the room's. */
static dobj_rt *step_rt(const char *name, int (*step)(dobj_task *, void *), dobj_ns **ns)
{
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_class k = { 0 };
	o.virtual_time = 1;
	k.name = name;
	k.flags = DOBJ_CLASS_FETCH;
	k.step = step;
	return testhost_rt(&o, &k, name, NULL, ns);
}

/* The end of every test: the sockets, the stub and the runtime let go, and
 * no host value left alive. */
static void finish(dobj_rt *rt, dobj_stub *s, dobj_ws *a, dobj_ws *b)
{
	dobj_ws_unref(a);
	dobj_ws_unref(b);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

#define ALL_WS (DOBJ_CLASS_WS_MESSAGE | DOBJ_CLASS_WS_CLOSE | DOBJ_CLASS_WS_ERROR)

static dobj_stub *room_stub(const char *name)
{
	return testhost_stub(room_ns, name);
}

/* Accept a socket on `s` with `tags` and attach the host's `io`: the client. */
static dobj_ws *connect_io(dobj_rt *rt, dobj_stub *s, const char *tags, conn *c,
	const dobj_ws_io *io)
{
	char cmd[128];
	dobj_ws *client;
	snprintf(cmd, sizeof(cmd), "accept %s", tags);
	CHECK_STR(fetch(rt, s, cmd, NULL), "ok");
	client = last_client;
	last_client = NULL;
	CHECK(client != NULL);
	memset(c, 0, sizeof(*c));
	CHECK_EQ_INT(dobj_ws_attach(client, io, c), DOBJ_OK);
	return client;
}

static dobj_ws *connect_ws(dobj_rt *rt, dobj_stub *s, const char *tags, conn *c)
{
	return connect_io(rt, s, tags, c, &test_io);
}

static void recv_text(dobj_rt *rt, dobj_ws *client, const char *msg)
{
	CHECK_EQ_INT(dobj_ws_receive(client, msg, strlen(msg), 1), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
}

/* ------------------------------------------------------------------ tests */

static void test_messages_in_order_and_broadcast(void)
{
	dobj_rt *rt = make_rt(-1, ALL_WS);
	dobj_stub *s = room_stub("chat");
	conn a, b;
	dobj_ws *ca = connect_ws(rt, s, "red", &a), *cb = connect_ws(rt, s, "blue", &b);
	int i;

	/* What the object sent before the host attached came out at attach. */
	CHECK_STR(a.out, "welcome|");
	a.out[0] = b.out[0] = '\0';
	for (i = 0; i < 5; i++) {
		char m[16];
		snprintf(m, sizeof(m), "m%d", i);
		CHECK_EQ_INT(dobj_ws_receive(ca, m, strlen(m), 1), DOBJ_OK);
	}
	CHECK_EQ_INT(dobj_ws_receive(cb, "\x01\x02", 2, 0), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	CHECK_STR(a.out, "m0|m1|m2|m3|m4|");
	CHECK_STR(b.out, "b:\x01\x02|");
	a.out[0] = b.out[0] = '\0';
	recv_text(rt, cb, "all hi");
	recv_text(rt, ca, "tag reds");
	CHECK_STR(a.out, "hi|reds|");
	CHECK_STR(b.out, "hi|");
	CHECK_EQ_INT(constructions, 1);
	CHECK_EQ_INT(dobj_ns_web_socket_count(room_ns), 2);
	dobj_ws_unref(ca);
	dobj_ws_unref(cb);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	/* The runtime let go of the host's connections. */
	CHECK_EQ_INT(a.releases, 1);
	CHECK_EQ_INT(b.releases, 1);
	CHECK_EQ_INT(live_values, 0);
}

static void test_hibernation_keeps_sockets_tags_and_attachment(void)
{
	dobj_rt *rt = make_rt(1000, ALL_WS);
	dobj_stub *s = room_stub("sleepy");
	conn a, b;
	dobj_ws *ca = connect_ws(rt, s, "red x", &a), *cb = connect_ws(rt, s, "blue", &b);
	size_t n, len;
	const char *tag;

	recv_text(rt, ca, "att alice");
	CHECK_EQ_INT(constructions, 1);
	/* Only open sockets: the object is evicted after the idle timeout. */
	CHECK_EQ_INT(dobj_rt_advance(rt, 1500), DOBJ_OK);
	CHECK_EQ_INT(destroyed, 1);
	CHECK_EQ_INT(dobj_ns_live(room_ns), 0);
	CHECK_EQ_INT(dobj_ns_web_socket_count(room_ns), 2);
	/* The next message makes a fresh instance that sees the same socket. */
	a.out[0] = b.out[0] = '\0';
	recv_text(rt, ca, "tag woke");
	CHECK_EQ_INT(constructions, 2);
	CHECK_STR(a.out, "woke|");
	CHECK_STR(b.out, "");
	CHECK(strstr(seen, "msg tag woke #2 att=alice;") != NULL);
	CHECK_EQ_INT(dobj_ws_tag_count(dobj_ws_peer(ca), &n), DOBJ_OK);
	CHECK_EQ_INT(n, 2);
	tag = dobj_ws_tag_at(dobj_ws_peer(ca), 1, &len);
	CHECK(len == 1 && tag[0] == 'x');
	finish(rt, s, ca, cb);
}

static void test_auto_response_does_not_wake_the_object(void)
{
	dobj_rt *rt = make_rt(1000, ALL_WS);
	dobj_stub *s = room_stub("auto");
	conn a;
	dobj_ws *ca = connect_ws(rt, s, "", &a);
	double ms = 0;

	CHECK_STR(fetch(rt, s, "auto ping pong", NULL), "ok");
	CHECK_EQ_INT(dobj_ws_auto_response_time(dobj_ws_peer(ca), &ms), 0);
	CHECK_EQ_INT(dobj_rt_advance(rt, 1500), DOBJ_OK);
	CHECK_EQ_INT(destroyed, 1);
	a.out[0] = '\0';
	recv_text(rt, ca, "ping");
	CHECK_STR(a.out, "pong|");
	CHECK_EQ_INT(constructions, 1);
	CHECK_EQ_INT(dobj_ws_auto_response_time(dobj_ws_peer(ca), &ms), 1);
	CHECK(ms > 1e12);
	/* Anything else wakes it. */
	recv_text(rt, ca, "pingx");
	CHECK_EQ_INT(constructions, 2);
	finish(rt, s, ca, NULL);
}

static void test_close_from_peer_and_from_object(void)
{
	dobj_rt *rt = make_rt(-1, ALL_WS);
	dobj_stub *s = room_stub("close");
	conn a, b;
	dobj_ws *ca = connect_ws(rt, s, "", &a), *cb = connect_ws(rt, s, "", &b);

	/* The peer closes: the handler sees CLOSING and the socket still listed;
	 * it leaves the list once the event ran. */
	CHECK_EQ_INT(dobj_ws_peer_close(ca, 4001, "gone", 4, 1), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	CHECK_STR(seen, "close 4001 gone 1 state=2 listed=2;");
	CHECK_EQ_INT(dobj_ns_web_socket_count(room_ns), 1);
	CHECK_EQ_INT(dobj_ws_receive(ca, "x", 1, 1), DOBJ_ESTATE);
	/* The object closes: the host is told, and the peer's echo is the event. */
	seen[0] = b.out[0] = '\0';
	recv_text(rt, cb, "bye");
	CHECK_STR(b.out, "close 4000 done|");
	CHECK_EQ_INT(dobj_ws_ready_state(dobj_ws_peer(cb)), DOBJ_WS_CLOSING);
	CHECK_EQ_INT(dobj_ws_send(dobj_ws_peer(cb), "x", 1, 1), DOBJ_ESTATE);
	CHECK_STR(dobj_error_last(), DOBJ_MSG_WS_SEND_CLOSED);
	CHECK_EQ_INT(dobj_ws_close(dobj_ws_peer(cb), 1000, NULL, 0), DOBJ_OK); /* ignored */
	CHECK_EQ_INT(dobj_ws_peer_close(cb, 4000, "done", 4, 1), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	CHECK(strstr(seen, "close 4000 done 1 state=3 listed=1;") != NULL);
	CHECK_EQ_INT(dobj_ns_web_socket_count(room_ns), 0);
	finish(rt, s, ca, cb);
}

/* dobj_ws_sole_payload: the host's payload only once the caller's reference
 * is the pair's last (what a binding's collector may count as reachable
 * through its wrapper alone), never while the object's list holds it. */
static void test_sole_payload_only_when_nothing_else_holds_the_pair(void)
{
	dobj_rt *rt = make_rt(-1, ALL_WS);
	dobj_stub *s = room_stub("sole");
	conn a;
	dobj_ws *ca = connect_ws(rt, s, "", &a), *client, *server;

	CHECK(dobj_ws_sole_payload(ca) == NULL); /* listed: the object may send */
	CHECK_EQ_INT(dobj_ws_peer_close(ca, 1000, "bye", 3, 1), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(dobj_ns_web_socket_count(room_ns), 0);
	CHECK(dobj_ws_sole_payload(ca) == &a);
	CHECK(dobj_ws_sole_payload(dobj_ws_peer(ca)) == &a); /* the same pair */
	dobj_ws_ref(ca);
	CHECK(dobj_ws_sole_payload(ca) == NULL);
	dobj_ws_unref(ca);
	dobj_ws_detach(ca);
	CHECK(dobj_ws_sole_payload(ca) == NULL);
	/* A pair no object accepted has no payload (attach refuses it). */
	CHECK_EQ_INT(dobj_ws_pair_new(&client, &server), DOBJ_OK);
	dobj_ws_unref(server);
	CHECK(dobj_ws_sole_payload(client) == NULL);
	dobj_ws_unref(client);
	finish(rt, s, ca, NULL);
}

/* dobj_ws_binding_data: one pointer per pair, the same through either end
 * (a binding's one holder of the pair for all its wrappers). */
static void test_binding_data_is_the_pairs_through_either_end(void)
{
	dobj_ws *client, *server;
	int mine;

	CHECK_EQ_INT(dobj_ws_pair_new(&client, &server), DOBJ_OK);
	CHECK(dobj_ws_binding_data(client) == NULL);
	dobj_ws_set_binding_data(server, &mine);
	CHECK(dobj_ws_binding_data(client) == &mine);
	CHECK(dobj_ws_binding_data(server) == &mine);
	dobj_ws_set_binding_data(client, NULL);
	CHECK(dobj_ws_binding_data(server) == NULL);
	dobj_ws_unref(server);
	dobj_ws_unref(client);
}

static void test_too_big_message_and_connection_error(void)
{
	dobj_rt *rt = make_rt(-1, ALL_WS);
	dobj_stub *s = room_stub("big");
	conn a, b;
	dobj_ws *ca = connect_ws(rt, s, "", &a), *cb = connect_ws(rt, s, "", &b);
	size_t big = DOBJ_WS_MAX_MESSAGE + 1;
	char *msg = calloc(1, big);

	a.out[0] = '\0';
	CHECK_EQ_INT(dobj_ws_receive(ca, msg, big, 0), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	CHECK_STR(a.out, "close 1009 Message is too large|");
	CHECK_STR(seen, "close 1009 Message is too large 0 state=3 listed=2;");
	free(msg);
	seen[0] = '\0';
	CHECK_EQ_INT(dobj_ws_peer_error(cb, "reset by peer", 13), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	CHECK_STR(seen, "error reset by peer;");
	CHECK_EQ_INT(dobj_ns_web_socket_count(room_ns), 0);
	finish(rt, s, ca, cb);
}

/* A client that does not read: a message that would take what waits for
 * it past DOBJ_WS_MAX_BUFFERED ends its connection (1008, the host told to
 * abort, the object hears a close), and the broadcast goes on to the rest. */
static void test_a_client_that_does_not_read_is_dropped(void)
{
	dobj_rt *rt = make_rt(-1, ALL_WS);
	dobj_stub *s = room_stub("slow");
	conn a, b;
	dobj_ws *ca = connect_io(rt, s, "", &a, &bounded_io);
	dobj_ws *cb = connect_io(rt, s, "", &b, &bounded_io);

	a.out[0] = b.out[0] = '\0';
	a.queued = DOBJ_WS_MAX_BUFFERED - 2;
	recv_text(rt, cb, "all hi");  /* up to the bound: sent */
	CHECK_STR(a.out, "hi|");
	recv_text(rt, cb, "all hey"); /* past it: dropped, with its queue */
	CHECK_STR(a.out, "hi|abort 1008 " DOBJ_MSG_WS_SLOW "|");
	CHECK_STR(b.out, "hi|hey|");
	CHECK_STR(seen, "msg all hi #1 att=;msg all hey #1 att=;"
		"close 1008 " DOBJ_MSG_WS_SLOW " 0 state=2 listed=2;");
	/* Later output to it is dropped; the socket left the object's list. */
	recv_text(rt, cb, "all more");
	CHECK_STR(a.out, "hi|abort 1008 " DOBJ_MSG_WS_SLOW "|");
	CHECK_STR(b.out, "hi|hey|more|");
	CHECK_EQ_INT(dobj_ns_web_socket_count(room_ns), 1);
	/* The host reports the end of the connection: refused, harmlessly. */
	CHECK_EQ_INT(dobj_ws_peer_close(ca, 1006, "", 0, 0), DOBJ_ESTATE);
	/* One message larger than the bound on an empty queue: dropped too. */
	{
		size_t big = DOBJ_WS_MAX_BUFFERED + 1;
		char *msg = calloc(1, big);
		dobj_ws *server = dobj_ws_peer(cb);
		seen[0] = '\0';
		CHECK_EQ_INT(dobj_ws_send(server, msg, big, 0), DOBJ_OK); /* outside a step */
		free(msg);
		CHECK_STR(b.out, "hi|hey|more|abort 1008 " DOBJ_MSG_WS_SLOW "|");
		CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
		CHECK_STR(seen, "close 1008 " DOBJ_MSG_WS_SLOW " 0 state=2 listed=1;");
	}
	CHECK_EQ_INT(dobj_ns_web_socket_count(room_ns), 0);
	finish(rt, s, ca, cb);
}

/* The runtime's answers to "ping" wait for the client under the same bound. */
static void test_auto_responses_are_bounded_too(void)
{
	dobj_rt *rt = make_rt(-1, ALL_WS);
	dobj_stub *s = room_stub("autoslow");
	conn a;
	dobj_ws *ca;

	CHECK_STR(fetch(rt, s, "auto ping pong", NULL), "ok");
	ca = connect_io(rt, s, "", &a, &bounded_io);
	a.out[0] = '\0';
	a.queued = DOBJ_WS_MAX_BUFFERED - 4;
	recv_text(rt, ca, "ping");
	CHECK_STR(a.out, "pong|");
	recv_text(rt, ca, "ping");
	CHECK_STR(a.out, "pong|abort 1008 " DOBJ_MSG_WS_SLOW "|");
	CHECK_STR(seen, "close 1008 " DOBJ_MSG_WS_SLOW " 0 state=2 listed=1;");
	finish(rt, s, ca, NULL);
}

/* A client that sends faster than its object handles: past
 * DOBJ_WS_MAX_BACKLOG of its messages waiting the host is told to stop
 * reading it, and to read again once the object caught up. */
static void test_a_client_ahead_of_its_object_is_paused(void)
{
	dobj_rt *rt = make_rt(-1, ALL_WS);
	dobj_stub *s = room_stub("backlog");
	conn a;
	dobj_ws *ca = connect_io(rt, s, "", &a, &bounded_io);
	size_t half = DOBJ_WS_MAX_BACKLOG / 2;
	char *msg = calloc(1, half);

	CHECK_EQ_INT(dobj_ws_receive_paused(ca), 0);
	CHECK_EQ_INT(dobj_ws_receive(ca, msg, half, 0), DOBJ_OK);
	CHECK_EQ_INT(dobj_ws_receive_paused(ca), 0);
	CHECK_EQ_INT(dobj_ws_receive(ca, msg, half, 0), DOBJ_OK); /* with the bookkeeping: past */
	CHECK_EQ_INT(dobj_ws_receive_paused(ca), 1);
	CHECK_EQ_INT(a.resumes, 0);
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(a.resumes, 1);
	CHECK_EQ_INT(dobj_ws_receive_paused(ca), 0);
	free(msg);
	finish(rt, s, ca, NULL);
}

/* Text is UTF-8 both ways: a client's text that is not closes with 1007
 * (RFC 6455 8.1), the object's is refused with a clear error. */
static void test_text_must_be_utf8(void)
{
	dobj_rt *rt = make_rt(-1, ALL_WS);
	dobj_stub *s = room_stub("utf8");
	conn a, b;
	dobj_ws *ca = connect_ws(rt, s, "", &a), *cb = connect_ws(rt, s, "", &b);
	dobj_ws *server = dobj_ws_peer(cb);

	a.out[0] = b.out[0] = '\0';
	recv_text(rt, cb, "caf\xc3\xa9");
	CHECK_STR(b.out, "caf\xc3\xa9|");
	CHECK_EQ_INT(dobj_ws_receive(ca, "\xc3(", 2, 1), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	CHECK_STR(a.out, "close 1007 " DOBJ_MSG_WS_BAD_UTF8 "|");
	CHECK_STR(seen, "msg caf\xc3\xa9 #1 att=;close 1007 " DOBJ_MSG_WS_BAD_UTF8 " 0 state=3 listed=2;");
	CHECK_EQ_INT(dobj_ws_send(server, "\xc3(", 2, 1), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), DOBJ_MSG_WS_SEND_UTF8);
	/* Surrogates in their WTF-8 form (a Python str's, Lua's utf8.char): as
	 * a JavaScript string goes, a lone one U+FFFD, a pair its character. */
	b.out[0] = '\0';
	CHECK_EQ_INT(dobj_ws_send(server, "a\xed\xa0\x80" "b", 5, 1), DOBJ_OK);
	CHECK_EQ_INT(dobj_ws_send(server, "\xed\xa0\xbd\xed\xb8\x80", 6, 1), DOBJ_OK);
	CHECK_EQ_INT(dobj_ws_send(server, "\xed\xb8\x80\xed\xa0\xbd", 6, 1), DOBJ_OK); /* reversed */
	CHECK_STR(b.out, "a\xef\xbf\xbd" "b|\xf0\x9f\x98\x80|\xef\xbf\xbd\xef\xbf\xbd|");
	CHECK_EQ_INT(dobj_ws_send(server, "\xff", 1, 0), DOBJ_OK); /* bytes are bytes */
	CHECK_EQ_INT(dobj_ws_close(server, 4000, "\xff", 1), DOBJ_EARG);
	b.out[0] = '\0';
	CHECK_EQ_INT(dobj_ws_close(server, 4000, "r\xed\xa0\x80", 4), DOBJ_OK);
	CHECK_STR(b.out, "close 4000 r\xef\xbf\xbd|");
	finish(rt, s, ca, cb);
}

static void test_errors_and_limits(void)
{
	dobj_rt *rt = make_rt(-1, ALL_WS);
	dobj_stub *s = room_stub("errors");
	conn a;
	dobj_ws *ca = connect_ws(rt, s, "t", &a), *client, *server;
	char big[DOBJ_WS_MAX_ATTACHMENT + 1], tag[300];

	CHECK_STR(fetch(rt, s, "accept 1 2 3 4 5 6 7 8 9 10 11", NULL), DOBJ_MSG_WS_TOO_MANY_TAGS);
	memset(tag, 'a', 257);
	tag[257] = '\0';
	{
		char cmd[300];
		snprintf(cmd, sizeof(cmd), "accept %.120s", tag);
		CHECK_STR(fetch(rt, s, cmd, NULL), "ok"); /* 120 is fine */
		dobj_ws_unref(last_client);
		last_client = NULL;
	}
	/* Outside a step, on a pair the object never accepted. */
	CHECK_EQ_INT(dobj_ws_pair_new(&client, &server), DOBJ_OK);
	CHECK_EQ_INT(dobj_ws_send(server, "x", 1, 1), DOBJ_ESTATE);
	CHECK_STR(dobj_error_last(), DOBJ_MSG_WS_NOT_ACCEPTED);
	CHECK_EQ_INT(dobj_ws_attach(client, &test_io, &a), DOBJ_ESTATE);
	CHECK_EQ_INT(dobj_ws_send(client, "x", 1, 1), DOBJ_ESTATE);
	CHECK_STR(dobj_error_last(), DOBJ_MSG_WS_CLIENT_END);
	dobj_ws_unref(client);
	dobj_ws_unref(server);
	server = dobj_ws_peer(ca);
	CHECK_EQ_INT(dobj_ws_close(server, 1005, NULL, 0), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), "Invalid WebSocket close code: 1005.");
	CHECK_EQ_INT(dobj_ws_close(server, 999, NULL, 0), DOBJ_EARG);
	CHECK_EQ_INT(dobj_ws_close(server, -1, "why", 3), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), DOBJ_MSG_WS_REASON_NO_CODE);
	memset(big, 'x', sizeof(big));
	CHECK_EQ_INT(dobj_ws_set_attachment(server, big, sizeof(big)), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), "A WebSocket 'attachment' cannot be larger than 16384 "
		"bytes.'attachment' was 16385 bytes.");
	CHECK_EQ_INT(dobj_ws_set_attachment(server, big, DOBJ_WS_MAX_ATTACHMENT), DOBJ_OK);
	/* Attaching twice, and receiving on the server end. */
	CHECK_EQ_INT(dobj_ws_attach(ca, &test_io, &a), DOBJ_ESTATE);
	CHECK_EQ_INT(dobj_ws_receive(server, "x", 1, 1), DOBJ_ESTATE);
	finish(rt, s, ca, NULL);
}

/* Accepting twice and too long a tag, from inside a step. */
static int twice_step(dobj_task *t, void *data)
{
	dobj_ws *client, *server;
	const char *tags[1];
	size_t lens[1], units[1];
	char tag[300];
	(void)data;
	CHECK_EQ_INT(dobj_ws_pair_new(&client, &server), DOBJ_OK);
	memset(tag, 'a', 257);
	tags[0] = tag;
	lens[0] = units[0] = 257;
	CHECK_EQ_INT(dobj_ws_accept(dobj_task_obj(t), server, tags, lens, units, 1), DOBJ_EARG);
	CHECK(strstr(dobj_error_last(), "is longer than the max tag length (256 characters).") != NULL);
	units[0] = 256;
	CHECK_EQ_INT(dobj_ws_accept(dobj_task_obj(t), server, tags, lens, units, 1), DOBJ_OK);
	CHECK_EQ_INT(dobj_ws_accept(dobj_task_obj(t), server, NULL, NULL, NULL, 0), DOBJ_ESTATE);
	CHECK_STR(dobj_error_last(), DOBJ_MSG_WS_ACCEPTED);
	CHECK_EQ_INT(dobj_ws_accept(dobj_task_obj(t), client, NULL, NULL, NULL, 0), DOBJ_ESTATE);
	dobj_ws_unref(client);
	dobj_ws_unref(server);
	respond(t, 200, "done");
	return DOBJ_OK;
}

static void test_accept_twice_and_tag_length(void)
{
	dobj_ns *ns;
	dobj_rt *rt = step_rt("Twice", twice_step, &ns);
	dobj_stub *s = testhost_stub(ns, "x");

	CHECK_STR(fetch(rt, s, "go", NULL), "done");
	/* The client end was dropped: the socket stays accepted until the
	 * runtime goes (a host reports the close). */
	CHECK_EQ_INT(dobj_ns_web_socket_count(ns), 1);
	finish(rt, s, NULL, NULL);
}

static void test_missing_handlers(void)
{
	dobj_rt *rt = make_rt(-1, 0); /* no webSocket* handler at all */
	dobj_stub *s = room_stub("bare");
	conn a;
	dobj_ws *ca = connect_ws(rt, s, "", &a);

	recv_text(rt, ca, "hello");
	CHECK_EQ_INT(hook_errors, 1);
	CHECK_STR(hook_msg, DOBJ_MSG_WS_NO_MESSAGE);
	/* Close and error without handlers: nothing to report. */
	CHECK_EQ_INT(dobj_ws_peer_close(ca, 1000, "", 0, 1), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(hook_errors, 1);
	CHECK_EQ_INT(dobj_ns_web_socket_count(room_ns), 0);
	finish(rt, s, ca, NULL);
}

static void test_failed_handler_goes_to_the_hook(void)
{
	dobj_rt *rt = make_rt(-1, ALL_WS);
	dobj_stub *s = room_stub("fails");
	conn a;
	dobj_ws *ca = connect_ws(rt, s, "", &a);

	recv_text(rt, ca, "fail");
	CHECK_EQ_INT(hook_errors, 1);
	CHECK_STR(hook_msg, "handler failed");
	a.out[0] = '\0';
	recv_text(rt, ca, "still here");
	CHECK_STR(a.out, "still here|");
	finish(rt, s, ca, NULL);
}

/* What a step sends waits for its writes to commit (the output gate). */
static void test_output_waits_for_the_commit(void)
{
	dobj_rt *rt = make_rt(-1, ALL_WS);
	dobj_stub *s = room_stub("gate");
	conn a;
	dobj_ws *ca = connect_ws(rt, s, "", &a);

	a.out[0] = '\0';
	watched = &a;
	recv_text(rt, ca, "gate");
	watched = NULL;
	CHECK_STR(a.out, "held|");
	finish(rt, s, ca, NULL);
}

/* A client end nobody serves: what the object sends is bounded. */
static int unserved_step(dobj_task *t, void *data)
{
	dobj_ws *client, *server;
	char *mb = calloc(1, 1 << 20);
	int i, rc = DOBJ_OK;
	(void)data;
	CHECK_EQ_INT(dobj_ws_pair_new(&client, &server), DOBJ_OK);
	CHECK_EQ_INT(dobj_ws_accept(dobj_task_obj(t), server, NULL, NULL, NULL, 0), DOBJ_OK);
	for (i = 0; i < 40 && rc == DOBJ_OK; i++)
		rc = dobj_ws_send(server, mb, 1 << 20, 0);
	CHECK_EQ_INT(rc, DOBJ_ESTATE);
	CHECK_EQ_INT(i, 33); /* 32 MiB went in, the 33rd MiB did not */
	CHECK(strstr(dobj_error_last(), "not served yet") != NULL);
	free(mb);
	dobj_ws_unref(client);
	dobj_ws_unref(server);
	respond(t, 200, "done");
	return DOBJ_OK;
}

static void test_unserved_output_is_bounded(void)
{
	dobj_ns *ns;
	dobj_rt *rt = step_rt("Unserved", unserved_step, &ns);
	dobj_stub *s = testhost_stub(ns, "x");

	CHECK_STR(fetch(rt, s, "go", NULL), "done");
	finish(rt, s, NULL, NULL);
}

/* A thousand sockets on one object, all reached by one broadcast. */
static void test_thousand_sockets(void)
{
	dobj_rt *rt = make_rt(-1, ALL_WS);
	dobj_stub *s = room_stub("crowd");
	static conn cs[1000];
	dobj_ws *clients[1000];
	int i, ok = 1;

	for (i = 0; i < 1000; i++)
		clients[i] = connect_ws(rt, s, i % 2 ? "odd" : "even", &cs[i]);
	CHECK_EQ_INT(dobj_ns_web_socket_count(room_ns), 1000);
	recv_text(rt, clients[7], "all ring");
	for (i = 0; i < 1000; i++)
		ok &= !strcmp(cs[i].out, "welcome|ring|");
	CHECK(ok);
	for (i = 0; i < 1000; i++) {
		dobj_ws_detach(clients[i]);
		CHECK_EQ_INT(dobj_ws_peer_close(clients[i], 1001, "", 0, 1), DOBJ_OK);
		dobj_ws_unref(clients[i]);
	}
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(dobj_ns_web_socket_count(room_ns), 0);
	finish(rt, s, NULL, NULL);
}

int main(void)
{
	RUN(test_messages_in_order_and_broadcast);
	RUN(test_hibernation_keeps_sockets_tags_and_attachment);
	RUN(test_auto_response_does_not_wake_the_object);
	RUN(test_close_from_peer_and_from_object);
	RUN(test_sole_payload_only_when_nothing_else_holds_the_pair);
	RUN(test_binding_data_is_the_pairs_through_either_end);
	RUN(test_too_big_message_and_connection_error);
	RUN(test_a_client_that_does_not_read_is_dropped);
	RUN(test_auto_responses_are_bounded_too);
	RUN(test_a_client_ahead_of_its_object_is_paused);
	RUN(test_text_must_be_utf8);
	RUN(test_errors_and_limits);
	RUN(test_accept_twice_and_tag_length);
	RUN(test_missing_handlers);
	RUN(test_failed_handler_goes_to_the_hook);
	RUN(test_output_waits_for_the_commit);
	RUN(test_unserved_output_is_bounded);
	RUN(test_thousand_sockets);
	return DONE();
}
