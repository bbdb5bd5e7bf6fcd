/* server_ws.c: the WebSocket connections of dobj.http_listen (private). */
#ifndef DOBJ_LUA_SERVER_WS_H
#define DOBJ_LUA_SERVER_WS_H
#include <poll.h>
#include <microhttpd.h>

typedef struct ws_srv ws_srv;

ws_srv *ws_srv_new(void);
/* Close every connection (1001) and free. */
void ws_srv_free(ws_srv *w);
/* The 101 response upgrading `conn` to a WebSocket served for `client`, or
 * NULL with *error (not an upgrade request, out of memory). */
struct MHD_Response *ws_srv_upgrade(ws_srv *w, struct MHD_Connection *conn, dobj_ws *client,
	const char **error);
/* Connections (an upper bound of the pollfds ws_srv_poll_fill writes). */
size_t ws_srv_count(const ws_srv *w);
/* Write what is queued, drop finished connections, fill `p`: how many. */
size_t ws_srv_poll_fill(ws_srv *w, struct pollfd *p);
/* Read and write what poll() said is ready; how many were. */
size_t ws_srv_poll_done(ws_srv *w, const struct pollfd *p, size_t n);
void ws_srv_close_all(ws_srv *w, int code, const char *reason);
#endif
