/* Private declarations of the routing between nodes, shared by
 * cluster_route.c (the runtime's side) and cluster_net.c (the network
 * thread).  The protocol is described at the top of cluster_route.c. */
#ifndef DOBJ_CLUSTER_ROUTE_H
#define DOBJ_CLUSTER_ROUTE_H

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "cluster_int.h"

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

/* The largest frame read: a fetch body at DOBJ_MSG_BODY_MAX plus its head. */
#define FRAME_MAX (DOBJ_MSG_BODY_MAX + ((size_t)1 << 20))
#define PROTO_VERSION 1
/* Times a call is sent before it fails: NOT_OWNER, connection refused. */
#define ROUTE_TRIES 4
/* Incoming connections accepted at once. */
#define MAX_INCOMING 1024
/* A connection with nothing on it (no call or answer waiting, no WebSocket
 * link) for this many TTLs is closed: by the calling node after IDLE_OUT_TTLS,
 * quietly (it knows none of its calls is on it, so none is lost), by the
 * called node after IDLE_IN_TTLS (a peer that only pings, or says hello and
 * nothing more, would hold one of its MAX_INCOMING slots for ever; a dobj
 * caller has closed it by then).  Each call made since moves it on. */
#define IDLE_OUT_TTLS 10
#define IDLE_IN_TTLS 20
/* Nodes of one cluster may have different TTLs: a called node answers a
 * ping with its own idle bound (a PONG of 8 bytes, its milliseconds; an
 * older node's PONG is empty, and an older node ignores these bytes), and
 * the calling node closes the connection by half that bound when it is the
 * shorter one, first as with equal TTLs.  (A called node that closed it
 * first made the caller take the close for a failed node: calls to it were
 * refused for a TTL.)  The caller pings right after its hello, so it knows
 * the bound long before it matters. */
#define PONG_IDLE_BYTES 8
/* An incoming connection is not read while this many of its calls, or
 * their bytes, wait for their answers, or its answers wait unsent beyond
 * MAX_UNSENT: its next calls wait in the sockets (conn_full), and this node
 * pings the peer meanwhile (it hears from us though its calls wait). */
#define MAX_CALLS_IN 65536
#define MAX_CALL_BYTES ((size_t)16 << 20)
#define MAX_UNSENT ((size_t)16 << 20)
/* Owner cache entries before the cache starts afresh. */
#define CACHE_MAX 65536
#define NO_NAME 0xffffffffu

enum { F_HELLO = 1, F_CALL = 2, F_RESULT = 3, F_PING = 4, F_PONG = 5, F_WS_OUT = 6, F_WS_IN = 7,
	F_GOAWAY = 8 };
enum { ST_OK = 0, ST_ERROR = 1, ST_NOT_OWNER = 2 };
enum { FL_REMOTE = 1, FL_RETRYABLE = 2 };
enum { C_NEW, C_CONNECTING, C_OPEN, C_DEAD };

/* ------------------------------------------------------------- byte buffers */

typedef struct buf {
	unsigned char *p;
	size_t len, cap;
} buf;

static inline int buf_reserve(buf *b, size_t more)
{
	size_t cap;
	unsigned char *p;

	if (more <= b->cap - b->len)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap - b->len < more)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p)
		return -1;
	b->p = p;
	b->cap = cap;
	return 0;
}

static inline int buf_put(buf *b, const void *p, size_t n)
{
	if (buf_reserve(b, n) < 0)
		return -1;
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	return 0;
}

static inline int put_be(buf *b, uint64_t v, int n)
{
	unsigned char x[8];
	int i;

	for (i = 0; i < n; i++)
		x[i] = (unsigned char)(v >> (8 * (n - 1 - i)));
	return buf_put(b, x, (size_t)n);
}

static inline uint64_t get_be(const unsigned char *p, int n)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

static inline void buf_free(buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

/* Reading a frame: every read is bounds-checked; `bad` sticks. */
typedef struct rd {
	const unsigned char *p;
	size_t len, off;
	int bad;
} rd;

static inline uint64_t rd_be(rd *r, int n)
{
	uint64_t v;

	if (r->bad || r->len - r->off < (size_t)n) {
		r->bad = 1;
		return 0;
	}
	v = get_be(r->p + r->off, n);
	r->off += (size_t)n;
	return v;
}

static inline const unsigned char *rd_bytes(rd *r, size_t n)
{
	const unsigned char *p;

	if (r->bad || r->len - r->off < n) {
		r->bad = 1;
		return NULL;
	}
	p = r->p + r->off;
	r->off += n;
	return p;
}

/* --------------------------------------------------------------- the state */

typedef struct conn {
	struct conn *next;
	uint64_t cid;          /* never reused: the runtime names connections by it */
	int fd;                /* -1 until the network thread connects */
	int out_dir;           /* 1: ours (calls out, answers in); 0: a peer's */
	int state;
	int hello;             /* incoming: the peer said hello */
	int want_out;          /* EPOLLOUT is on */
	long long node;        /* outgoing: the peer's node id */
	char *addr;            /* outgoing: where it listens */
	buf out;               /* queued by either thread (under mu) */
	size_t out_off;
	uint64_t queued, written; /* stream positions, bytes */
	buf in;                /* the network thread's */
	double last_rx, last_ping, born;
	double last_use;       /* a call, answer or WebSocket frame went either way */
	size_t nout;           /* outgoing: calls sent and not answered yet */
	size_t links;          /* WebSocket links on it (cluster_ws.c) */
	int quiet;             /* closed as idle: nothing to tell the runtime */
	double peer_idle_ms;   /* outgoing: the peer's idle bound (PONG_IDLE_BYTES; 0: unknown) */
	/* incoming: the calls read and not answered yet (under mu) */
	struct call_in { uint64_t id; size_t len; } *calls;
	size_t ncalls, capcalls, call_bytes;
	int paused;            /* incoming: not read now (conn_full) */
	uint64_t consumed;     /* stream position: the bytes of the whole frames handed over */
	int goaway;            /* incoming: this node leaves, nothing more is read (GOAWAY
	                        * sent); outgoing: the peer said so, no call goes on it */
	int half_closed;       /* incoming, leaving: our side is shut (dobj__net_linger) */
	int peer_closed;       /* incoming, leaving: the peer closed its side too */
	int flush_due;         /* queued in the runtime's round: written at its end */
} conn;

typedef struct item {      /* the network thread -> the runtime */
	struct item *next;
	uint64_t cid;
	int type;              /* F_CALL, F_RESULT, F_GOAWAY, F_WS_*, or 0: the connection failed */
	unsigned char *data;
	size_t len;
	uint64_t written;      /* failure: what the connection had written; F_GOAWAY:
	                        * how far the peer read it */
	long long node;        /* failure: the peer node */
	int incoming;          /* failure: a peer's connection (its WebSockets go) */
	char why[240];
} item;

typedef struct pend {      /* a call sent to another node */
	struct pend *next;
	uint64_t id, cid, start;
	double deadline;       /* mono ms: past it the caller stops waiting */
	long long node;
	dobj_task *t;
} pend;

typedef struct owner {     /* the owner cache: where an object was found */
	dobj_id id;
	dobj_ns *ns;
	long long node;
	char addr[];
} owner;

typedef struct inreq {     /* a call another node sent here */
	struct inreq *next;    /* deferred answers */
	dobj_rt *rt;
	uint64_t cid, id;
	dobj_task *t;          /* deferred answers: a reference */
} inreq;

struct dobj__route {
	dobj_rt *rt;
	pthread_mutex_t mu;
	/* under mu */
	conn *conns;
	item *in_head, *in_tail;
	int rt_kicked, net_kicked, stop;
	uint64_t next_cid;
	size_t nincoming;
	/* the network thread's */
	pthread_t thread;
	int started, lfd, efd, ep, wake_now;
	int rtfd;              /* the runtime's eventfd (rt->efd): wakes it */
	conn *grave;
	double ping_ms, dead_ms;
	double idle_out_ms, idle_in_ms; /* see IDLE_OUT_TTLS */
	atomic_int wake;       /* the runtime has something to drain */
	/* the runtime's */
	uint64_t next_id;
	pend **tab;
	size_t tcap, npend;
	dobj__idmap cache;
	size_t ncache;
	inreq *replies;
	dobj__watch watch;     /* while calls are in flight (cluster_route.c) */
	struct { long long node; double until; } suspects[16]; /* stopped answering lately */
	struct dobj__route_ws *ws; /* WebSockets between nodes (cluster_ws.c) */
	int flush_due;         /* a connection has frames of this round to write */
};

/* The network thread (cluster_net.c). */
void *dobj__net_main(void *arg);
/** Queue a CALL for `node` (its connection made if needed): *cid and
 *  *start say where it went (runtime thread). */
int dobj__net_send_node(struct dobj__route *r, long long node, const char *addr, const buf *f,
	uint64_t *cid, uint64_t *start);
/** Queue an answer on connection `cid`: 1, or 0 when it is gone (dropped). */
int dobj__net_send_conn(struct dobj__route *r, uint64_t cid, const buf *f);
/** A WebSocket link on connection `cid` began (+1) or ended (-1): a
 *  connection with links is never closed as idle (runtime thread). */
void dobj__net_conn_links(struct dobj__route *r, uint64_t cid, int delta);
/* WebSockets between nodes (cluster_ws.c), runtime thread. */
/** The object's node: a link for the client end of a routed 101 (a
 *  reference taken); DOBJ_ESTATE when its server end was not accepted. */
int dobj__route_ws_offer(struct dobj__route *r, uint64_t cid, dobj_ws *client, uint64_t *link);
/** After the RESULT was queued (sent 1) or not (0): serve the link, or drop it. */
void dobj__route_ws_start(struct dobj__route *r, uint64_t cid, uint64_t link, int sent);
/** The entry node: m's client end becomes a relay of link on cid. */
int dobj__route_ws_relay(struct dobj__route *r, uint64_t cid, uint64_t link, dobj_msg *m);
/** The entry node cannot take link: the object hears a close. */
void dobj__route_ws_refuse(struct dobj__route *r, uint64_t cid, uint64_t link);
void dobj__route_ws_frame(struct dobj__route *r, uint64_t cid, int type, const unsigned char *p,
	size_t n);
void dobj__route_ws_conn_failed(struct dobj__route *r, uint64_t cid);
void dobj__route_ws_stop(struct dobj__route *r);

/** Free a connection the network thread no longer uses. */
void dobj__net_conn_free(conn *c);
/* This node leaves: its listener closes, its peers' connections are read no
 * more, and each peer hears how far its calls were read (GOAWAY). */
void dobj__net_goaway(struct dobj__route *r);
/* After the last answers: the peers' connections are half-closed, and
 * what the peers still send is dropped until they close theirs, up to
 * `until` (mono ms). */
void dobj__net_linger(struct dobj__route *r, double until);
/* Whether an open connection still has frames its socket did not take
 * (the network thread is woken to go on with them). */
int dobj__net_unsent(struct dobj__route *r);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif
#endif
