/*
 * dobj/wire.h — the rules for a request read off the wire by a server.
 *
 * A server's HTTP parser (libmicrohttpd in the core's server, uvicorn's
 * httptools for `dobj dev --server uvicorn`) splits the bytes into a method,
 * a request target and header lines; these functions decide what the Worker
 * gets from them, and which requests are refused with which status, so that
 * every server dobj has answers the same hostile request the same way.
 * Included by dobj.h.
 */
#ifndef DOBJ_WIRE_H
#define DOBJ_WIRE_H

#include <stddef.h>

/** The longest request target a server takes (16 KiB, Cloudflare's limit on
 *  a URL): past it, 414. */
#define DOBJ_MSG_URL_MAX ((size_t)16 << 10)

/**
 * Begin a request read off the wire: check its method and target and return
 * (`*out`, the caller's, dobj_msg_free) the request the entry gets, its
 * headers still to come (dobj_msg_add_header each, in order; a header the
 * core refuses is a 400), then dobj_msg_wire_finish.
 *
 * The method: DELETE, GET, HEAD, OPTIONS, POST and PUT in any case are
 * normalized to upper case (Fetch); any other method of HTTP's registry that
 * workerd's server knows (PATCH, PURGE, PROPFIND...) is kept as sent;
 * anything else, and CONNECT (a tunnel: no server of dobj makes one), is
 * refused with 501.  The target: origin-form ("/path?query") or
 * absolute-form ("http://host/path", RFC 9112 3.2.2: its authority replaces
 * the Host header); asterisk-form ("OPTIONS *") and authority-form are 501;
 * anything else 400; longer than DOBJ_MSG_URL_MAX, 414.
 *
 * Returns DOBJ_OK, or DOBJ_EARG with `*status` the status a server answers
 * (400, 414, 501) and the reason in dobj_error_last() (its body), or
 * DOBJ_ENOMEM.  It then answers without calling the entry, and closes.
 */
DOBJ_API int dobj_msg_wire_begin(const char *method, size_t method_len, const char *target,
	size_t target_len, dobj_msg **out, int *status);

/**
 * Finish the head of a request begun by dobj_msg_wire_begin: check what its
 * headers say and build its URL, "http://" + the Host header (or
 * `default_host`, the server's "addr:port", when there is none) + the
 * target.  Refused (DOBJ_EARG, `*status` and the reason as above):
 * - a head (target and header lines) over DOBJ_MSG_HEAD_MAX: 431;
 * - a Content-Length over DOBJ_MSG_BODY_MAX: 413 (before the body is read);
 * - a Host header that is not host[:port] (dobj_msg_host_check), or more
 *   than one Host header (RFC 9112 3.2): 400;
 * - more than one Content-Length, a Content-Length that is not digits, both
 *   Content-Length and Transfer-Encoding, or a Transfer-Encoding whose last
 *   coding is not chunked (RFC 9112 6.1, 6.3: what request smuggling is made
 *   of): 400.
 * (A repeated Host or Content-Length is joined with ", " by
 * dobj_msg_add_header: neither rule lets such a value through.)
 */
DOBJ_API int dobj_msg_wire_finish(dobj_msg *m, const char *default_host, int *status);

#endif
