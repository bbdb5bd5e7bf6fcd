/* What server.c and server_ws.c share (dobj/server.h's implementation). */
#ifndef DOBJ_SERVER_INT_H
#define DOBJ_SERVER_INT_H

#if defined(DOBJ_HAVE_MHD) && defined(DOBJ_HAVE_WSLAY)
#include <microhttpd.h>
#include <stdint.h>

typedef struct ws_srv ws_srv;
typedef struct wsc wsc;

ws_srv *dobj__ws_srv_new(dobj_server *s, int epfd);
/* The 101 answering the upgrade request on `conn` for the client end
 * `client`, or NULL with *error (not a WebSocket request, out of memory).
 * *link is the connection, for dobj__ws_srv_forget. */
struct MHD_Response *dobj__ws_srv_upgrade(ws_srv *w, struct MHD_Connection *conn,
	dobj_ws *client, wsc **link, const char **error);
/* libmicrohttpd is done with the request whose upgrade `c` answers: if the
 * upgrade never happened (the client left first), the connection goes and
 * the object hears a 1006 close. */
void dobj__ws_srv_forget(wsc *c);
/* epoll said c's socket is ready (events: EPOLLIN, EPOLLOUT...). */
void dobj__ws_srv_ready(ws_srv *w, wsc *c, uint32_t events);
/* Write what the objects queued (dobj_server_process's end). */
void dobj__ws_srv_flush(ws_srv *w);
size_t dobj__ws_srv_count(const ws_srv *w);
/* Drop the connections whose close went out more than CLOSE_WAIT_MS ago
 * without the client's answer. */
void dobj__ws_srv_expire(ws_srv *w);
/* Milliseconds until the next of those is due (-1: none waits). */
int dobj__ws_srv_timeout(const ws_srv *w);
void dobj__ws_srv_close_all(ws_srv *w, int code, const char *reason);
void dobj__ws_srv_free(ws_srv *w);
/* server.c: make the server's fd readable (work for dobj_server_process). */
void dobj__server_wake(dobj_server *s);
#endif

#endif
