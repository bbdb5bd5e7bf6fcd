/*
 * ws_load.c — the WebSocket bench's load client (build/ws_load, run by
 * bench/ws_bench.py as its own process, never inside a server under test),
 * and a bare WebSocket echo server that measures the client's own ceiling.
 *
 *     ws_load client ws://127.0.0.1:PORT/PATH [--connections 32] [--window 8]
 *                    [--size 64] [--seconds 5]
 *     ws_load echo PORT
 *
 * client: opens `connections` WebSockets to the URL; each keeps `window`
 * text messages of `size` bytes in flight (an 8-digit sequence number, then
 * padding): one is sent whenever an echo comes back, and every echo is
 * checked against what was sent, in order.  After `seconds` it stops
 * sending, waits for the echoes still in flight, closes each connection
 * with 1000 and prints one JSON line: echoes counted over the measured
 * time, echoes per second, mismatches, and the CPU time the client itself
 * used over that time (user + system; "client_cpu" is that over the wall
 * time: near 1.0 means the client, not the server, may be the limit).
 *
 * echo: a server on 127.0.0.1:PORT (0: a free one; the port is printed)
 * that answers any WebSocket handshake and sends every data frame back;
 * any other request gets "200 1".  No object, no library: what the machine
 * and this client reach at best.
 *
 * Why C: the Python client (bench/ws/client.py, websockets on uvloop) spent
 * more CPU per message than the servers it measured, so on two cores it set
 * every row's figure.  Here one thread and epoll (level-triggered) drive all
 * connections; a message costs a few hundred nanoseconds of the client's
 * CPU plus its share of one recv and one send per batch.  The framing is
 * RFC 6455's (section 5.2), written here for the bench: client frames are
 * masked with a fresh key each (xorshift: a bench needs no strong random),
 * server frames are not; fragmented messages are not expected from an echo
 * and end the run with an error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define MAX_FRAME (16u << 20)

typedef struct buf {
	unsigned char *p;
	size_t off, len, cap;          /* unread bytes are p[off..len) */
} buf;

typedef struct conn {
	int fd;
	int open;                      /* handshake done */
	int pollout;
	int is_server;                 /* echo mode: frames come masked */
	buf in, out;
	uint64_t sent, got, counted, bad;
} conn;

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 16);
}

static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("ws_load: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_now(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* Room for n more bytes at the end of b (read bytes are dropped first). */
static unsigned char *buf_reserve(buf *b, size_t n)
{
	if (b->off && b->off == b->len)
		b->off = b->len = 0;
	if (b->len + n > b->cap && b->off) {
		memmove(b->p, b->p + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
	}
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n)
			cap *= 2;
		if (!(b->p = realloc(b->p, cap)))
			die("out of memory");
		b->cap = cap;
	}
	return b->p + b->len;
}

static void buf_add(buf *b, const void *data, size_t n)
{
	memcpy(buf_reserve(b, n), data, n);
	b->len += n;
}

/* Appends one frame (FIN set) to c's output: masked from a client. */
static void frame_add(conn *c, int opcode, const unsigned char *data, size_t n)
{
	unsigned char *h = buf_reserve(&c->out, n + 14), *p = h;
	unsigned char mask = c->is_server ? 0 : 0x80;
	size_t i;

	*p++ = (unsigned char)(0x80 | opcode);
	if (n < 126) {
		*p++ = (unsigned char)(mask | n);
	} else if (n <= 0xffff) {
		*p++ = mask | 126;
		*p++ = (unsigned char)(n >> 8);
		*p++ = (unsigned char)n;
	} else {
		*p++ = mask | 127;
		for (i = 0; i < 8; i++)
			*p++ = (unsigned char)((uint64_t)n >> (56 - 8 * i));
	}
	if (mask) {
		uint32_t k = next_rand();
		unsigned char key[4] = { (unsigned char)(k >> 24), (unsigned char)(k >> 16),
		                         (unsigned char)(k >> 8), (unsigned char)k };
		memcpy(p, key, 4);
		p += 4;
		for (i = 0; i < n; i++)
			p[i] = data[i] ^ key[i & 3];
	} else {
		memcpy(p, data, n);
	}
	c->out.len += (size_t)(p - h) + n;
}

/* Writes what c's output holds; 0, or -1 when the connection failed. */
static int flush_out(int epfd, conn *c)
{
	int want;

	while (c->out.off < c->out.len) {
		ssize_t r = send(c->fd, c->out.p + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (r < 0)
			return -1;
		c->out.off += (size_t)r;
	}
	want = c->out.off < c->out.len;
	if (want != c->pollout) {
		struct epoll_event ev = { .events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c };
		epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
		c->pollout = want;
	}
	return 0;
}

/* One read into c's input: bytes read, 0 at end of stream, -1 for none yet. */
static ssize_t fill_in(conn *c)
{
	ssize_t r;

	buf_reserve(&c->in, 65536);
	do
		r = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
	while (r < 0 && errno == EINTR);
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return -1;
	if (r < 0)
		die("recv: %s", strerror(errno));
	c->in.len += (size_t)r;
	return r;
}

typedef struct frame {
	int opcode, fin;
	unsigned char *data;           /* unmasked in place */
	size_t len;
} frame;

/* The next whole frame of c's input: 1 (taken from the buffer), 0 (more
 * bytes needed). */
static int frame_next(conn *c, frame *f)
{
	unsigned char *p = c->in.p + c->in.off;
	size_t have = c->in.len - c->in.off, need = 2, n, i;
	int masked;

	if (have < 2)
		return 0;
	f->fin = p[0] >> 7;
	f->opcode = p[0] & 15;
	masked = p[1] >> 7;
	n = p[1] & 127;
	if (n == 126)
		need += 2;
	else if (n == 127)
		need += 8;
	if (masked)
		need += 4;
	if (have < need)
		return 0;
	if (n == 126) {
		n = (size_t)p[2] << 8 | p[3];
	} else if (n == 127) {
		uint64_t v = 0;
		for (i = 0; i < 8; i++)
			v = v << 8 | p[2 + i];
		if (v > MAX_FRAME)
			die("a frame of %llu bytes", (unsigned long long)v);
		n = (size_t)v;
	}
	if (masked != c->is_server)
		die(masked ? "a masked frame from the server" : "an unmasked frame from a client");
	if (have < need + n)
		return 0;
	f->data = p + need;
	f->len = n;
	if (masked)
		for (i = 0; i < n; i++)
			f->data[i] ^= p[need - 4 + (i & 3)];
	c->in.off += need + n;
	return 1;
}

static void accept_key(const char *key, size_t len, char out[29])
{
	unsigned char sha[SHA_DIGEST_LENGTH];
	char tmp[128];
	int n = snprintf(tmp, sizeof(tmp), "%.*s%s", (int)(len > 60 ? 60 : len), key, GUID);

	SHA1((const unsigned char *)tmp, (size_t)n, sha);
	EVP_EncodeBlock((unsigned char *)out, sha, SHA_DIGEST_LENGTH);
}

/* The value of header `name` in the head [p, end): its start and length. */
static const char *header(const char *p, const char *end, const char *name, size_t *len)
{
	size_t nl = strlen(name);
	const char *line = memchr(p, '\n', (size_t)(end - p));

	while (line && ++line < end) {
		const char *eol = memchr(line, '\n', (size_t)(end - line));
		if (!eol)
			break;
		if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
			const char *v = line + nl + 1;
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			*len = (size_t)(eol - v);
			while (*len && (v[*len - 1] == '\r' || v[*len - 1] == ' '))
				(*len)--;
			return v;
		}
		line = eol;
	}
	return NULL;
}

/* ---- client ---------------------------------------------------------- */

typedef struct opts {
	char host[64];
	int port;
	char path[256];
	int connections, window;
	size_t size;
	double seconds;
} opts;

static void message(const opts *o, uint64_t seq, unsigned char *out)
{
	char num[24];

	snprintf(num, sizeof(num), "%08llu", (unsigned long long)(seq % 100000000ull));
	memset(out, 'x', o->size);
	memcpy(out, num, o->size < 8 ? o->size : 8);
}

static void send_one(const opts *o, conn *c, unsigned char *scratch)
{
	message(o, c->sent++, scratch);
	frame_add(c, 1, scratch, o->size);
}

/* Connects and completes the handshake (blocking, 30 s at most), then
 * leaves the socket non-blocking with what came after the 101 in c->in. */
static void client_connect(const opts *o, conn *c)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)o->port) };
	struct timeval tv = { 30, 0 };
	unsigned char raw[16];
	char key[25], want[29], req[512];
	const char *acc, *end = NULL;
	size_t alen, i;
	int one = 1, n;

	if (inet_pton(AF_INET, o->host, &sa.sin_addr) != 1)
		die("not an IPv4 address: %s", o->host);
	if ((c->fd = socket(AF_INET, SOCK_STREAM, 0)) < 0)
		die("socket: %s", strerror(errno));
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("connect to %s:%d: %s", o->host, o->port, strerror(errno));
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	for (i = 0; i < sizeof(raw); i++)
		raw[i] = (unsigned char)next_rand();
	EVP_EncodeBlock((unsigned char *)key, raw, sizeof(raw));
	accept_key(key, strlen(key), want);
	n = snprintf(req, sizeof(req),
		"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
		o->path, o->host, o->port, key);
	if (send(c->fd, req, (size_t)n, MSG_NOSIGNAL) != n)
		die("sending the handshake: %s", strerror(errno));
	while (!end) {
		unsigned char *b = buf_reserve(&c->in, 4096);
		ssize_t r = recv(c->fd, b, c->in.cap - c->in.len, 0);
		if (r <= 0)
			die("no answer to the handshake: %s", r ? strerror(errno) : "connection closed");
		c->in.len += (size_t)r;
		end = memmem(c->in.p, c->in.len, "\r\n\r\n", 4);
		if (!end && c->in.len > 16384)
			die("the handshake's answer has no end");
	}
	end += 4;
	if (c->in.len < 12 || memcmp(c->in.p + 9, "101", 3) != 0)
		die("the server answered %.12s, not 101", (const char *)c->in.p);
	acc = header((const char *)c->in.p, end, "sec-websocket-accept", &alen);
	if (!acc || alen != 28 || memcmp(acc, want, 28) != 0)
		die("wrong or missing Sec-WebSocket-Accept");
	c->in.off = (size_t)(end - (const char *)c->in.p);
	fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
	c->open = 1;
}

/* Handles the frames c's input holds: checks each echo, sends the next
 * message while `sending`, and writes what is queued. */
static void client_frames(const opts *o, int epfd, conn *c, int sending, int counting,
	unsigned char *scratch)
{
	frame f;

	while (frame_next(c, &f)) {
		if (!f.fin || f.opcode == 0)
			die("a fragmented message (the echo should not fragment)");
		if (f.opcode == 1 || f.opcode == 2) {
			if (c->got == c->sent)
				die("an echo of a message never sent");
			message(o, c->got++, scratch);
			if (f.len != o->size || memcmp(f.data, scratch, o->size) != 0)
				c->bad++;
			if (counting)
				c->counted++;
			if (sending)
				send_one(o, c, scratch);
		} else if (f.opcode == 9) {
			frame_add(c, 10, f.data, f.len);
		} else if (f.opcode == 8) {
			die("the server closed a connection (code %d)",
			    f.len >= 2 ? f.data[0] << 8 | f.data[1] : 1005);
		}
	}
	if (flush_out(epfd, c) < 0)
		die("send: %s", strerror(errno));
}

static void parse_url(const char *url, opts *o)
{
	const char *p, *slash, *colon;

	if (strncmp(url, "ws://", 5) != 0)
		die("the URL must start with ws://");
	p = url + 5;
	slash = strchr(p, '/');
	if (!slash)
		slash = p + strlen(p);
	colon = memchr(p, ':', (size_t)(slash - p));
	if (!colon || (size_t)(colon - p) >= sizeof(o->host))
		die("the URL needs host:port");
	memcpy(o->host, p, (size_t)(colon - p));
	o->host[colon - p] = 0;
	o->port = atoi(colon + 1);
	snprintf(o->path, sizeof(o->path), "%s", *slash ? slash : "/");
}

static int run_client(int argc, char **argv)
{
	opts o = { .connections = 32, .window = 8, .size = 64, .seconds = 5 };
	struct epoll_event evs[256];
	conn *conns;
	unsigned char *scratch;
	double t0, t1, cpu0, cpu1, deadline;
	uint64_t counted = 0, bad = 0, inflight;
	int epfd, i;

	if (argc < 1)
		die("usage: ws_load client URL [--connections N] [--window N] [--size B] [--seconds S]");
	parse_url(argv[0], &o);
	for (i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--connections"))
			o.connections = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--window"))
			o.window = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--size"))
			o.size = (size_t)atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--seconds"))
			o.seconds = atof(argv[i + 1]);
		else
			die("unknown option %s", argv[i]);
	}
	if (i != argc || o.connections < 1 || o.window < 1 || o.size < 8 || o.size > MAX_FRAME ||
	    !(o.seconds > 0))
		die("bad options (connections, window >= 1; 8 <= size <= 16 MiB; seconds > 0)");
	rng ^= (uint64_t)getpid() << 32 ^ (uint64_t)time(NULL);
	if (!(conns = calloc((size_t)o.connections, sizeof(*conns))) || !(scratch = malloc(o.size)))
		die("out of memory");
	if ((epfd = epoll_create1(0)) < 0)
		die("epoll_create1: %s", strerror(errno));
	for (i = 0; i < o.connections; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &conns[i] };
		client_connect(&o, &conns[i]);
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0)
			die("epoll_ctl: %s", strerror(errno));
	}
	t0 = now();
	cpu0 = cpu_now();
	deadline = t0 + o.seconds;
	for (i = 0; i < o.connections; i++) {
		int k;
		for (k = 0; k < o.window; k++)
			send_one(&o, &conns[i], scratch);
		client_frames(&o, epfd, &conns[i], 1, 1, scratch); /* bytes after the 101 too */
	}
	/* Measured part: until the deadline. */
	for (;;) {
		double left = deadline - now();
		int n, ms;
		if (left <= 0)
			break;
		ms = (int)(left * 1000) + 1;
		n = epoll_wait(epfd, evs, 256, ms);
		if (n < 0 && errno != EINTR)
			die("epoll_wait: %s", strerror(errno));
		for (i = 0; i < n; i++) {
			conn *c = evs[i].data.ptr;
			if ((evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && fill_in(c) == 0)
				die("the server closed a connection");
			client_frames(&o, epfd, c, 1, 1, scratch);
		}
	}
	t1 = now();
	cpu1 = cpu_now();
	/* Drain: no more sends, every echo still in flight must come back. */
	deadline = t1 + 60;
	for (;;) {
		int n;
		inflight = 0;
		for (i = 0; i < o.connections; i++)
			inflight += conns[i].sent - conns[i].got;
		if (!inflight)
			break;
		if (now() > deadline)
			die("%llu echoes missing 60 s after the end", (unsigned long long)inflight);
		n = epoll_wait(epfd, evs, 256, 1000);
		for (i = 0; i < n; i++) {
			conn *c = evs[i].data.ptr;
			if ((evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && fill_in(c) == 0)
				die("the server closed a connection");
			client_frames(&o, epfd, c, 0, 0, scratch);
		}
	}
	for (i = 0; i < o.connections; i++) {
		static const unsigned char bye[2] = { 1000 >> 8, 1000 & 255 };
		conn *c = &conns[i];
		counted += c->counted;
		bad += c->bad;
		frame_add(c, 8, bye, 2);
		flush_out(epfd, c);
		shutdown(c->fd, SHUT_WR);
	}
	for (i = 0; i < o.connections; i++) {
		close(conns[i].fd);
		free(conns[i].in.p);
		free(conns[i].out.p);
	}
	printf("{\"echoes\": %llu, \"per_second\": %.1f, \"mismatched\": %llu, "
	       "\"seconds\": %.3f, \"client_cpu_seconds\": %.3f, \"client_cpu\": %.3f}\n",
	       (unsigned long long)counted, (double)counted / (t1 - t0), (unsigned long long)bad,
	       t1 - t0, cpu1 - cpu0, (cpu1 - cpu0) / (t1 - t0));
	free(conns);
	free(scratch);
	close(epfd);
	return bad ? 2 : 0;
}

/* ---- echo server ----------------------------------------------------- */

static void echo_close(int epfd, conn *c)
{
	epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->in.p);
	free(c->out.p);
	free(c);
}

/* Handles what c's input holds; -1 when c is to be closed. */
static int echo_input(int epfd, conn *c)
{
	frame f;

	if (!c->open) {
		const char *head = (const char *)c->in.p + c->in.off;
		const char *end = memmem(head, c->in.len - c->in.off, "\r\n\r\n", 4);
		const char *key;
		char acc[29], ans[256];
		size_t klen;
		int n;
		if (!end)
			return c->in.len - c->in.off > 16384 ? -1 : 0;
		end += 4;
		key = header(head, end, "sec-websocket-key", &klen);
		if (!key) {
			static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
			                         "Connection: close\r\n\r\n1";
			buf_add(&c->out, ok, sizeof(ok) - 1);
			flush_out(epfd, c);
			return -1;
		}
		accept_key(key, klen, acc);
		n = snprintf(ans, sizeof(ans), "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
		             "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", acc);
		buf_add(&c->out, ans, (size_t)n);
		c->in.off += (size_t)(end - head);
		c->open = 1;
	}
	while (frame_next(c, &f)) {
		if (f.opcode == 8) {
			frame_add(c, 8, f.data, f.len >= 2 ? 2 : 0);
			flush_out(epfd, c);
			return -1;
		}
		if (f.opcode == 9)
			frame_add(c, 10, f.data, f.len);
		else if (f.opcode != 10) /* data and continuation frames go back as they came */
			frame_add(c, f.opcode, f.data, f.len);
	}
	return flush_out(epfd, c);
}

static volatile sig_atomic_t stopping;

static void on_term(int sig)
{
	(void)sig;
	stopping = 1;
}

static int run_echo(int argc, char **argv)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct epoll_event ev = { .events = EPOLLIN }, evs[256];
	int lfd, epfd, one = 1, i;

	if (argc != 1)
		die("usage: ws_load echo PORT");
	sa.sin_port = htons((uint16_t)atoi(argv[0]));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	if ((lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)) < 0)
		die("socket: %s", strerror(errno));
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 512) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &(socklen_t){ sizeof(sa) }) < 0)
		die("listen on port %s: %s", argv[0], strerror(errno));
	/* The port it got (PORT 0: a free one), in the dobj servers' words. */
	printf("ws_load echo: Ready on http://127.0.0.1:%d\n", ntohs(sa.sin_port));
	fflush(stdout);
	if ((epfd = epoll_create1(0)) < 0)
		die("epoll_create1: %s", strerror(errno));
	ev.data.ptr = NULL; /* the listening socket */
	epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
	while (!stopping) {
		int n = epoll_wait(epfd, evs, 256, -1);
		for (i = 0; i < n; i++) {
			conn *c = evs[i].data.ptr;
			if (!c) {
				int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
				struct epoll_event cev = { .events = EPOLLIN };
				if (fd < 0)
					continue;
				setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
				if (!(c = calloc(1, sizeof(*c))))
					die("out of memory");
				c->fd = fd;
				c->is_server = 1;
				cev.data.ptr = c;
				epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &cev);
				continue;
			}
			if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
				ssize_t r;
				buf_reserve(&c->in, 65536);
				do
					r = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
				while (r < 0 && errno == EINTR);
				if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
					echo_close(epfd, c);
					continue;
				}
				if (r > 0)
					c->in.len += (size_t)r;
			}
			if (echo_input(epfd, c) < 0)
				echo_close(epfd, c);
		}
	}
	close(epfd);
	close(lfd);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "client"))
		return run_client(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "echo"))
		return run_echo(argc - 2, argv + 2);
	die("usage: ws_load client URL [options] | ws_load echo PORT");
	return 2;
}
