/*
 * The network thread of a cluster node (see cluster_route.c for the
 * protocol): the sockets, whole frames in, queued frames out, pings, and
 * the wake of the runtime through its own fd.  It never touches the
 * runtime's state: what it receives goes through the lock to the runtime.
 */
#define _GNU_SOURCE
#include <poll.h>

#include "cluster_route.h"

/* Split "host:port" ("[v6]:port" too) into host and port. */
int dobj__route_split_addr(const char *addr, char *host, size_t hcap, char *port, size_t pcap)
{
	const char *colon = strrchr(addr, ':');
	const char *h = addr, *he;
	char *end;
	long p;

	if (!colon || !colon[1] || strlen(colon + 1) >= pcap)
		goto bad;
	p = strtol(colon + 1, &end, 10);
	if (*end || p < 0 || p > 65535)
		goto bad;
	he = colon;
	if (h[0] == '[') {
		if (he - h < 2 || he[-1] != ']')
			goto bad;
		h++;
		he--;
	}
	if (he == h || (size_t)(he - h) >= hcap)
		goto bad;
	memcpy(host, h, (size_t)(he - h));
	host[he - h] = '\0';
	snprintf(port, pcap, "%ld", p);
	return DOBJ_OK;
bad:
	return dobj_error_set(DOBJ_EARG, "cluster: node_addr must be HOST:PORT, such as "
		"127.0.0.1:7001 (got \"%.100s\")", addr);
}

/* ------------------------------------------------------- the network thread */

/* Tell the runtime (after the lock is let go: see net_main). */
static void push_item(struct dobj__route *r, item *it)
{
	it->next = NULL;
	if (r->in_tail)
		r->in_tail->next = it;
	else
		r->in_head = it;
	r->in_tail = it;
	if (!r->rt_kicked) {
		r->rt_kicked = 1;
		r->wake_now = 1;
	}
}

static void conn_fail(struct dobj__route *r, conn *c, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void conn_fail(struct dobj__route *r, conn *c, const char *fmt, ...)
{
	conn **pp;
	va_list ap;

	if (c->state == C_DEAD)
		return;
	for (pp = &r->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	c->state = C_DEAD;
	if (c->fd >= 0) {
		epoll_ctl(r->ep, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		c->fd = -1;
	}
	if (!c->out_dir)
		r->nincoming--;
	if (!c->quiet && (c->out_dir || c->hello)) { /* a peer's: its WebSockets (cluster_ws.c) */
		/* Its calls fail (or go again, if they were never written). */
		item *it = calloc(1, sizeof(*it));
		if (it) {
			it->cid = c->cid;
			it->written = c->written;
			it->node = c->node;
			it->incoming = !c->out_dir;
			va_start(ap, fmt);
			vsnprintf(it->why, sizeof(it->why), fmt, ap);
			va_end(ap);
			push_item(r, it);
		}
	}
	c->next = r->grave; /* freed after this round: the round's events may name it */
	r->grave = c;
}

static void conn_watch(struct dobj__route *r, conn *c, int out, int paused)
{
	struct epoll_event ev;

	if (c->fd < 0 || (c->want_out == out && c->paused == paused))
		return;
	c->want_out = out;
	c->paused = paused;
	ev.events = (paused ? 0 : EPOLLIN) | (out ? EPOLLOUT : 0);
	ev.data.ptr = c;
	epoll_ctl(r->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_events(struct dobj__route *r, conn *c, int out)
{
	conn_watch(r, c, out, c->paused);
}

/* A peer's connection with enough waiting here: too many of its calls (or
 * their bytes) not answered yet, or its answers not taken.  It is not read
 * until that went down, so what a peer that sends calls and does not read
 * its answers costs this node is bounded: the rest waits in the sockets. */
static int conn_full(const conn *c)
{
	return !c->out_dir && (c->goaway || c->ncalls >= MAX_CALLS_IN || c->call_bytes > MAX_CALL_BYTES ||
		c->out.len - c->out_off > MAX_UNSENT);
}

/* A call read from a peer (the u64 id its RESULT will carry). */
static int call_read(conn *c, const unsigned char *body, size_t n)
{
	if (n < 8)
		return 0; /* no id: never answered (cluster_route.c on_call) */
	if (c->ncalls == c->capcalls) {
		size_t cap = c->capcalls ? c->capcalls * 2 : 16;
		struct call_in *p = realloc(c->calls, cap * sizeof(*p));
		if (!p)
			return -1;
		c->calls = p;
		c->capcalls = cap;
	}
	c->calls[c->ncalls].id = get_be(body, 8);
	c->calls[c->ncalls].len = n;
	c->ncalls++;
	c->call_bytes += n;
	return 0;
}

/* Its answer was queued: answers come about in the calls' order, so the
 * search from the oldest is short. */
static void call_answered(conn *c, uint64_t id)
{
	size_t i;

	for (i = 0; i < c->ncalls; i++)
		if (c->calls[i].id == id) {
			c->call_bytes -= c->calls[i].len;
			memmove(c->calls + i, c->calls + i + 1, (c->ncalls - i - 1) * sizeof(*c->calls));
			c->ncalls--;
			return;
		}
}

/* Send what c has queued (under mu), either thread: 0 when all of it went
 * (the buffer is emptied), else the errno of the send that stopped (EAGAIN:
 * the socket is full), or -1 when the peer closed. */
static int send_queued(conn *c)
{
	while (c->out_off < c->out.len) {
		ssize_t n = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off,
			MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			c->out_off += (size_t)n;
			c->written += (uint64_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else {
			return n < 0 ? errno : -1;
		}
	}
	c->out.len = c->out_off = 0;
	if (c->out.cap > ((size_t)1 << 20))
		buf_free(&c->out); /* a big answer went: do not keep its buffer */
	return 0;
}

/* Write what is queued (under mu). */
static void conn_flush(struct dobj__route *r, conn *c)
{
	int err;

	if (c->state != C_OPEN)
		return;
	err = send_queued(c);
	if (err == EAGAIN || err == EWOULDBLOCK) {
		conn_events(r, c, 1);
	} else if (err) {
		conn_fail(r, c, "the connection failed while sending (%s)",
			err > 0 ? strerror(err) : "closed");
	} else {
		conn_events(r, c, 0);
	}
}

static int frame_put(buf *b, int type, const void *p, size_t n)
{
	if (put_be(b, (uint64_t)n + 1, 4) < 0 || put_be(b, (uint64_t)type, 1) < 0 ||
	    buf_put(b, p, n) < 0)
		return -1;
	return 0;
}

static void conn_queue(conn *c, int type, const void *p, size_t n)
{
	size_t before = c->out.len;

	if (frame_put(&c->out, type, p, n) == 0)
		c->queued += c->out.len - before;
	else
		c->out.len = before;
}

static void conn_connect(struct dobj__route *r, conn *c)
{
	char host[256], port[16];
	struct addrinfo hints, *ai = NULL;
	struct epoll_event ev;
	int fd, one = 1, rc;

	if (dobj__route_split_addr(c->addr, host, sizeof(host), port, sizeof(port)) < 0) {
		conn_fail(r, c, "node %lld has a bad address \"%.100s\"", c->node, c->addr);
		return;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if ((rc = getaddrinfo(host, port, &hints, &ai)) != 0 || !ai) {
		conn_fail(r, c, "cannot resolve %.100s (%s)", c->addr, gai_strerror(rc));
		return;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		freeaddrinfo(ai);
		conn_fail(r, c, "socket: %s", strerror(errno));
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	if (rc < 0 && errno != EINPROGRESS) {
		close(fd);
		conn_fail(r, c, "cannot connect to node %lld at %.100s (%s)", c->node, c->addr,
			strerror(errno));
		return;
	}
	c->fd = fd;
	c->state = C_CONNECTING;
	c->want_out = 1;
	ev.events = EPOLLIN | EPOLLOUT;
	ev.data.ptr = c;
	if (epoll_ctl(r->ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		conn_fail(r, c, "epoll: %s", strerror(errno));
}

/* One whole frame arrived on c. */
static void conn_frame(struct dobj__route *r, conn *c, const unsigned char *p, size_t n)
{
	int type = p[0];
	item *it;

	switch (type) {
	case F_HELLO:
		if (c->out_dir || c->hello || n != 15 || memcmp(p + 1, "DOBJ", 4) ||
		    get_be(p + 5, 2) != PROTO_VERSION) {
			conn_fail(r, c, "not a dobj node, or another protocol version");
			return;
		}
		c->hello = 1;
		return;
	case F_PING:
		if (c->out_dir) {
			conn_queue(c, F_PONG, NULL, 0);
		} else {
			unsigned char idle[PONG_IDLE_BYTES];
			uint64_t ms = (uint64_t)r->idle_in_ms;
			int i;
			for (i = 0; i < PONG_IDLE_BYTES; i++)
				idle[i] = (unsigned char)(ms >> (8 * (PONG_IDLE_BYTES - 1 - i)));
			conn_queue(c, F_PONG, idle, sizeof(idle));
		}
		return;
	case F_PONG:
		/* The called node's idle bound (PONG_IDLE_BYTES); none from an
		 * older node. */
		if (c->out_dir && n == 1 + PONG_IDLE_BYTES)
			c->peer_idle_ms = (double)get_be(p + 1, PONG_IDLE_BYTES);
		return;
	case F_CALL:
	case F_RESULT:
	case F_WS_IN:
	case F_WS_OUT:
		/* Calls and a client's WebSocket input go to the callee, results
		 * and the object's WebSocket output come back to the caller. */
		if ((type == F_CALL || type == F_WS_IN) == (c->out_dir != 0)) {
			conn_fail(r, c, "a %s frame on the wrong connection", type == F_CALL ? "CALL" :
				type == F_RESULT ? "RESULT" : "WebSocket");
			return;
		}
		it = calloc(1, sizeof(*it));
		if (!it || !(it->data = malloc(n - 1 ? n - 1 : 1))) {
			free(it);
			conn_fail(r, c, "out of memory");
			return;
		}
		if (type == F_CALL && call_read(c, p + 1, n - 1) < 0) {
			free(it->data);
			free(it);
			conn_fail(r, c, "out of memory");
			return;
		}
		memcpy(it->data, p + 1, n - 1);
		it->len = n - 1;
		it->cid = c->cid;
		it->type = type;
		push_item(r, it);
		c->last_use = dobj__mono_ms();
		if (type == F_RESULT && c->nout)
			c->nout--;
		return;
	case F_GOAWAY:
		/* The peer leaves: it read this connection up to a position and
		 * will read no more, so the calls written from there never ran. */
		/* Once only (a second could name calls already sent again), and
		 * not past what was written. */
		if (!c->out_dir || c->goaway || n != 9 || get_be(p + 1, 8) > c->written) {
			conn_fail(r, c, "a malformed GOAWAY frame");
			return;
		}
		if (!(it = calloc(1, sizeof(*it)))) {
			conn_fail(r, c, "out of memory");
			return;
		}
		c->goaway = 1;
		it->cid = c->cid;
		it->type = F_GOAWAY;
		it->node = c->node;
		it->written = get_be(p + 1, 8);
		push_item(r, it);
		return;
	default:
		conn_fail(r, c, "unknown frame type %d", type);
	}
}

/* Hand over the whole frames read on c, until it is full (conn_full). */
static void conn_frames(struct dobj__route *r, conn *c)
{
	size_t off = 0;

	while (c->state != C_DEAD && !conn_full(c) && c->in.len - off >= 4) {
		uint64_t len = get_be(c->in.p + off, 4);
		if (len < 1 || len > FRAME_MAX) {
			conn_fail(r, c, "a frame of %llu bytes (the limit is %zu)",
				(unsigned long long)len, (size_t)FRAME_MAX);
			return;
		}
		if (c->in.len - off - 4 < len)
			break;
		if (!c->out_dir && !c->hello && c->in.p[off + 4] != F_HELLO) {
			conn_fail(r, c, "not a dobj node (no hello)");
			return;
		}
		conn_frame(r, c, c->in.p + off + 4, (size_t)len);
		off += 4 + (size_t)len;
		c->consumed += 4 + len;
	}
	if (c->state == C_DEAD)
		return;
	if (off) {
		memmove(c->in.p, c->in.p + off, c->in.len - off);
		c->in.len -= off;
	}
	if (c->in.len == 0 && c->in.cap > ((size_t)1 << 20))
		buf_free(&c->in);
}

/* Read what arrived on c and hand over its whole frames. */
static void conn_read(struct dobj__route *r, conn *c)
{
	int rounds;

	for (rounds = 0; rounds < 16 && c->state != C_DEAD && !conn_full(c); rounds++) {
		ssize_t n;

		if (buf_reserve(&c->in, 65536) < 0) {
			conn_fail(r, c, "out of memory");
			return;
		}
		n = recv(c->fd, c->in.p + c->in.len, 65536, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			conn_fail(r, c, n == 0 ? (c->in.len ? "the peer closed the connection in the "
				"middle of a frame" : "the peer closed the connection") : "%s",
				strerror(errno));
			return;
		}
		c->in.len += (size_t)n;
		c->last_rx = dobj__mono_ms();
		/* Whatever a peer sends first must be a hello: garbage on the port
		 * is refused before it can claim a large frame. */
		if (!c->out_dir && !c->hello && c->in.len >= 5 &&
		    (get_be(c->in.p, 4) != 15 || c->in.p[4] != F_HELLO)) {
			conn_fail(r, c, "not a dobj node (no hello)");
			return;
		}
		conn_frames(r, c);
	}
}

static void net_accept(struct dobj__route *r)
{
	for (;;) {
		struct epoll_event ev;
		conn *c;
		int one = 1, fd = accept4(r->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0)
			return; /* EAGAIN, or a failure of that one connection */
		if (r->nincoming >= MAX_INCOMING || !(c = calloc(1, sizeof(*c)))) {
			close(fd);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->fd = fd;
		c->cid = ++r->next_cid;
		c->state = C_OPEN;
		c->born = c->last_rx = c->last_use = dobj__mono_ms();
		ev.events = EPOLLIN;
		ev.data.ptr = c;
		if (epoll_ctl(r->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
			close(fd);
			free(c);
			continue;
		}
		c->next = r->conns;
		r->conns = c;
		r->nincoming++;
	}
}

/* How long c may sit idle: ours closes first, by half the peer's bound
 * when that is shorter than ours (PONG_IDLE_BYTES). */
static double idle_ms(const struct dobj__route *r, const conn *c)
{
	if (!c->out_dir)
		return r->idle_in_ms;
	if (c->peer_idle_ms > 0 && c->peer_idle_ms / 2 < r->idle_out_ms)
		return c->peer_idle_ms / 2;
	return r->idle_out_ms;
}

/* Each round: connect new peers, write, ping, and give up on silent peers.
 * Returns how long the next wait may be, in ms: until the next ping, or
 * sooner when an idle connection is due to close (a called node's bound may
 * be far shorter than this node's ping interval, a sixth of its TTL: waking
 * only to ping, the caller closed after the called node did, which it took
 * for a failed node). */
static int net_service(struct dobj__route *r)
{
	double now = dobj__mono_ms(), wait = r->ping_ms;
	conn *c, *next;

	for (c = r->conns; c; c = next) {
		next = c->next;
		if (c->state == C_NEW)
			conn_connect(r, c);
		if (c->state == C_DEAD)
			continue;
		if (c->out_dir && now - c->last_rx > r->dead_ms) {
			conn_fail(r, c, "node %lld (%.100s) did not answer for %.1f s", c->node, c->addr,
				(now - c->last_rx) / 1e3);
			continue;
		}
		if (!c->out_dir && !c->hello && now - c->born > r->dead_ms) {
			conn_fail(r, c, "no hello");
			continue;
		}
		if (c->state == C_OPEN && !c->links && c->out_off == c->out.len &&
		    (c->out_dir ? !c->nout : !c->ncalls)) {
			double left = c->last_use + idle_ms(r, c) - now;
			if (left < 0) {
				/* Idle (IDLE_OUT_TTLS): ours goes quietly, a peer's as a
				 * failure (it has no call and no socket on it). */
				c->quiet = c->out_dir;
				conn_fail(r, c, "no call for %.1f s", (now - c->last_use) / 1e3);
				continue;
			}
			if (left < wait)
				wait = left;
		}
		if (c->out_dir && c->state == C_OPEN && now - c->last_ping >= r->ping_ms) {
			c->last_ping = now;
			conn_queue(c, F_PING, NULL, 0);
		}
		if (c->state == C_OPEN && c->out_off < c->out.len && !c->want_out)
			conn_flush(r, c);
		if (c->state == C_OPEN && !c->out_dir) {
			/* Read again once what waited went down (the frames read
			 * before the pause first: no more may arrive). */
			if (c->paused && !conn_full(c))
				conn_frames(r, c);
			if (c->state == C_OPEN)
				conn_watch(r, c, c->want_out, conn_full(c));
			if (c->paused && !c->goaway && now - c->last_ping >= r->ping_ms) {
				c->last_ping = now;
				conn_queue(c, F_PING, NULL, 0);
			}
		}
	}
	/* Past the deadline by a millisecond: the idle test is strict. */
	return wait < 0 ? 1 : (int)wait + 1;
}

void *dobj__net_main(void *arg)
{
	struct dobj__route *r = arg;
	struct epoll_event ev[64];
	int wait_ms = (int)r->ping_ms;

	for (;;) {
		int i, n = epoll_wait(r->ep, ev, 64, wait_ms);

		pthread_mutex_lock(&r->mu);
		if (r->stop) {
			pthread_mutex_unlock(&r->mu);
			break;
		}
		for (i = 0; i < n; i++) {
			void *tag = ev[i].data.ptr;
			if (tag == &r->efd) {
				uint64_t x;
				ssize_t got = read(r->efd, &x, sizeof(x));
				(void)got;
				r->net_kicked = 0;
			} else if (tag == &r->lfd) {
				net_accept(r);
			} else {
				conn *c = tag;
				if (c->state == C_DEAD)
					continue;
				if (c->state == C_CONNECTING && (ev[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
					int err = 0;
					socklen_t len = sizeof(err);
					getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
					if (err) {
						conn_fail(r, c, "cannot connect to node %lld at %.100s (%s)", c->node,
							c->addr, strerror(err));
						continue;
					}
					c->state = C_OPEN;
					c->last_rx = c->last_ping = dobj__mono_ms();
				}
				if (c->paused && (ev[i].events & (EPOLLHUP | EPOLLERR)))
					/* not read now: a hang-up would be reported again and again */
					conn_fail(r, c, "the peer closed the connection");
				else if (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
					conn_read(r, c);
				if (c->state == C_OPEN && (ev[i].events & EPOLLOUT))
					conn_flush(r, c);
			}
		}
		wait_ms = net_service(r);
		while (r->grave) {
			conn *c = r->grave;
			r->grave = c->next;
			dobj__net_conn_free(c);
		}
		pthread_mutex_unlock(&r->mu);
		if (r->wake_now) {
			/* Make the runtime's fd readable (the flag first: the runtime
			 * reads the signal, then drains what the flag says). */
			r->wake_now = 0;
			atomic_store(&r->wake, 1);
			dobj__fd_signal(r->rtfd, &r->rt->efd_armed);
		}
	}
	return NULL;
}

/* --------------------------------------------- the runtime: sending frames */

/* Whether the network thread needs waking for what was just queued (under
 * mu); then kick_net, after the lock is let go, so that the thread does not
 * wake only to wait for the lock.  The flag is set first: a round of the
 * thread in between writes the frame already, and the kick only costs it
 * one more round. */
static int want_kick(struct dobj__route *r)
{
	if (r->net_kicked)
		return 0;
	r->net_kicked = 1;
	return 1;
}

static void kick_net(struct dobj__route *r)
{
	uint64_t one = 1;
	ssize_t n = write(r->efd, &one, sizeof(one));

	(void)n;
}

/* Write what c has queued from the runtime's thread (under mu), when the
 * network thread is not already waiting for the socket to take more: a call
 * or an answer then reaches the peer without waking the network thread, one
 * thread hand-off less each way (routed calls cost the nodes 2.7 times the
 * CPU of local ones with four).  Returns 1 when all of it went; else the
 * network thread goes on from where this stopped (a full socket, or an
 * error it reports). */
static int send_now(conn *c)
{
	return c->state == C_OPEN && !c->want_out && send_queued(c) == 0;
}

/* A frame was queued on c (under mu): whether the network thread must be
 * woken for it.  Inside a round of the runtime's tasks the frame waits for
 * the round's end (dobj__route_flush), so that the calls and answers of one
 * round go in one write: one per frame made 64 calls in flight half as fast
 * as the network thread's batched writes. */
static int sent_or_due(struct dobj__route *r, conn *c)
{
	if (r->rt->in_round) {
		c->flush_due = 1;
		r->flush_due = 1;
		return 0;
	}
	return !send_now(c);
}

void dobj__route_flush(dobj_rt *rt)
{
	struct dobj__route *r = rt->route;
	int kick = 0;
	conn *c;

	if (!r->flush_due)
		return;
	r->flush_due = 0;
	pthread_mutex_lock(&r->mu);
	for (c = r->conns; c; c = c->next)
		if (c->flush_due) {
			c->flush_due = 0;
			if (!send_now(c) && want_kick(r))
				kick = 1;
		}
	pthread_mutex_unlock(&r->mu);
	if (kick)
		kick_net(r);
}

/* Queue a CALL for node (its connection made if needed): *cid and *start
 * say where it went. */
int dobj__net_send_node(struct dobj__route *r, long long node, const char *addr, const buf *f,
	uint64_t *cid, uint64_t *start)
{
	conn *c;
	int rc = DOBJ_OK, kick = 0;

	pthread_mutex_lock(&r->mu);
	for (c = r->conns; c; c = c->next)
		if (c->out_dir && c->node == node && !c->goaway && !strcmp(c->addr, addr))
			break;
	if (!c) {
		unsigned char hello[14];
		c = calloc(1, sizeof(*c));
		if (!c || !(c->addr = strdup(addr))) {
			free(c);
			rc = dobj_error_set(DOBJ_ENOMEM, "out of memory");
			goto done;
		}
		c->fd = -1;
		c->cid = ++r->next_cid;
		c->out_dir = 1;
		c->state = C_NEW;
		c->node = node;
		c->born = c->last_rx = c->last_ping = c->last_use = dobj__mono_ms();
		memcpy(hello, "DOBJ", 4);
		hello[4] = 0;
		hello[5] = PROTO_VERSION;
		{
			uint64_t self = (uint64_t)(r->rt->cluster ? r->rt->cluster->node_id : 0);
			int i;
			for (i = 0; i < 8; i++)
				hello[6 + i] = (unsigned char)(self >> (56 - 8 * i));
		}
		conn_queue(c, F_HELLO, hello, sizeof(hello));
		conn_queue(c, F_PING, NULL, 0); /* its PONG has the peer's idle bound */
		c->next = r->conns;
		r->conns = c;
	}
	if (buf_put(&c->out, f->p, f->len) < 0) {
		rc = dobj_error_set(DOBJ_ENOMEM, "out of memory");
		goto done;
	}
	*cid = c->cid;
	*start = c->queued;
	c->queued += f->len;
	c->nout++;
	c->last_use = dobj__mono_ms();
	if (sent_or_due(r, c))
		kick = want_kick(r);
done:
	pthread_mutex_unlock(&r->mu);
	if (kick)
		kick_net(r);
	return rc;
}

/* Queue an answer on the connection its call came in on (gone: dropped). */
int dobj__net_send_conn(struct dobj__route *r, uint64_t cid, const buf *f)
{
	conn *c;
	int kick = 0, queued = 0;

	pthread_mutex_lock(&r->mu);
	for (c = r->conns; c; c = c->next)
		if (c->cid == cid)
			break;
	if (c && buf_put(&c->out, f->p, f->len) == 0) {
		queued = 1;
		c->queued += f->len;
		c->last_use = dobj__mono_ms();
		if (!c->out_dir && f->len >= 13 && f->p[4] == F_RESULT)
			call_answered(c, get_be(f->p + 5, 8));
		/* A paused connection is read again by the network thread once
		 * this answer took it under its bounds (net_service). */
		if (sent_or_due(r, c) || c->paused)
			kick = want_kick(r);
	}
	pthread_mutex_unlock(&r->mu);
	if (kick)
		kick_net(r);
	return queued;
}

void dobj__net_conn_links(struct dobj__route *r, uint64_t cid, int delta)
{
	conn *c;

	pthread_mutex_lock(&r->mu);
	for (c = r->conns; c; c = c->next)
		if (c->cid == cid) {
			if (delta > 0)
				c->links++;
			else if (c->links) {
				c->links--;
				c->last_use = dobj__mono_ms();
			}
			break;
		}
	pthread_mutex_unlock(&r->mu);
}

/*
 * The node leaves (cluster_route.c dobj__route_leave): from here no call is
 * read.  Each connection a peer opened is told how far it was read (its
 * whole frames handed to the runtime, which answers them all before the
 * connection closes); the calls its peer wrote from there on were never
 * read, so the peer sends them again wherever the object goes next instead
 * of hearing "it may or may not have run" when the connection closes.  New
 * connections are refused (the listener closes), which a caller also takes
 * for "never sent".  Under mu, the network thread is between rounds: every
 * frame it read is in the runtime's queue already.
 */
void dobj__net_goaway(struct dobj__route *r)
{
	int kick = 0;
	conn *c;

	pthread_mutex_lock(&r->mu);
	if (r->lfd >= 0) {
		epoll_ctl(r->ep, EPOLL_CTL_DEL, r->lfd, NULL);
		close(r->lfd);
		r->lfd = -1;
	}
	for (c = r->conns; c; c = c->next) {
		unsigned char pos[8];
		int i;
		if (c->out_dir || c->goaway || c->state != C_OPEN)
			continue;
		c->goaway = 1;
		conn_watch(r, c, c->want_out, 1);
		for (i = 0; i < 8; i++)
			pos[i] = (unsigned char)(c->consumed >> (56 - 8 * i));
		conn_queue(c, F_GOAWAY, pos, sizeof(pos));
		kick |= !send_now(c) && want_kick(r);
	}
	pthread_mutex_unlock(&r->mu);
	if (kick)
		kick_net(r);
}

/*
 * A connection closed with unread bytes in it is reset, and a reset drops
 * what the kernel had not delivered yet: the GOAWAY and the last answers
 * (the calls after the GOAWAY are unread by design).  So, once a peer's
 * connection sent everything, it is half-closed (the peer reads our last
 * frames, then the end), and what the peer still sends is read and dropped
 * until it closes its side, or until `until`.  Under mu, in turns of a
 * millisecond: the network thread does not read these connections
 * (conn_full), but may fail one meanwhile.
 */
void dobj__net_linger(struct dobj__route *r, double until)
{
	for (;;) {
		int waiting = 0;
		conn *c;

		pthread_mutex_lock(&r->mu);
		for (c = r->conns; c; c = c->next) {
			unsigned char sink[16384];
			ssize_t n = -1;
			int rounds;
			if (c->out_dir || !c->goaway || c->state != C_OPEN || c->peer_closed)
				continue;
			if (c->out_off < c->out.len) {
				waiting = 1; /* still sending (the network thread goes on) */
				continue;
			}
			if (!c->half_closed) {
				shutdown(c->fd, SHUT_WR);
				c->half_closed = 1;
			}
			/* A bounded read each turn: a peer that keeps sending is
			 * cut at `until`. */
			for (rounds = 0; rounds < 64; rounds++)
				if ((n = recv(c->fd, sink, sizeof(sink), MSG_DONTWAIT)) <= 0)
					break;
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
				c->peer_closed = 1;
			else
				waiting = 1;
		}
		pthread_mutex_unlock(&r->mu);
		if (!waiting || dobj__mono_ms() >= until)
			return;
		poll(NULL, 0, 1);
	}
}

int dobj__net_unsent(struct dobj__route *r)
{
	int unsent = 0, kick = 0;
	conn *c;

	pthread_mutex_lock(&r->mu);
	for (c = r->conns; c; c = c->next)
		unsent |= c->state == C_OPEN && c->out_off < c->out.len;
	if (unsent)
		kick = want_kick(r);
	pthread_mutex_unlock(&r->mu);
	if (kick)
		kick_net(r);
	return unsent;
}

void dobj__net_conn_free(conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	buf_free(&c->in);
	buf_free(&c->out);
	free(c->calls);
	free(c->addr);
	free(c);
}
