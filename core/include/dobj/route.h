/**
 * dobj/route.h — calls between the nodes of a cluster (docs/cluster.md,
 * "Routing").
 *
 * A stub on any node reaches its object wherever it lives: a call to an
 * object owned by another live node is sent there over TCP (one connection
 * per ordered pair of nodes, so each caller's calls stay in order), run
 * there through the normal dispatch path (input gate, order, errors), and
 * its result completes the caller's task like a local call's.  RPC
 * arguments and results travel in V8's serialization format (dobj_val);
 * fetch requests and responses as dobj_msg, also written in that format.
 *
 * A binding whose fetch requests, responses and errors are host values
 * registers a codec, so that the core can carry them: without one, only
 * core values (native classes, dobj_stub_call_ex) cross nodes, and errors
 * travel as their code and message.
 *
 * Included by dobj.h; do not include directly.
 */
#ifndef DOBJ_ROUTE_H
#define DOBJ_ROUTE_H

/** How host values cross to another node.  Every function runs on the
 *  runtime's thread where a done callback could run inside a pump (never
 *  inside the core's own loops); each may be NULL. */
typedef struct dobj_route_codec {
	unsigned version;   /**< DOBJ_ROUTE_CODEC_VERSION */
	void *data;
	/** A host Request (is_request 1, on the caller's node) or Response (0,
	 *  on the object's node), borrowed, as a new dobj_msg; NULL with
	 *  dobj_error_set when it cannot be carried.  A 101 response's client
	 *  end goes in web_socket (dobj_msg_set_web_socket): the core serves it
	 *  from the caller's node, where the response's dobj_msg comes back
	 *  with a client end of that node for the binding's Response. */
	dobj_msg *(*to_msg)(void *data, void *value, int is_request);
	/** A request that arrived (borrowed) as a new host Request (released
	 *  with host.release); NULL with dobj_error_set on failure. */
	void *(*request_from_msg)(void *data, const dobj_msg *m);
	/** A host error value (borrowed) as a description: an object with at
	 *  least "name" and "message" (strings); NULL: the error travels as the
	 *  task's code and message. */
	dobj_val *(*error_to_val)(void *data, void *error);
	/** The caller's side: a new host error value from a description
	 *  (borrowed) made by error_to_val on the other node (of either
	 *  language).  NULL: the call fails with the code and message only. */
	void *(*error_from_val)(void *data, const dobj_val *desc);
} dobj_route_codec;
#define DOBJ_ROUTE_CODEC_VERSION 1

/** Register the codec of a runtime's binding (copied).  Any time before
 *  the first call; DOBJ_EARG for a wrong version. */
DOBJ_API int dobj_rt_set_route_codec(dobj_rt *rt, const dobj_route_codec *codec);

/**
 * Did a finished CALL fail in a way that cannot tell whether the object
 * ran it?  1 when the call was sent to another node and the connection
 * failed, or the node stopped answering (killed, paused past its lease),
 * before its answer came back: the caller may retry, knowing the call may
 * have run once already.  dobj never retries such a call itself (a call
 * never runs twice because of dobj).  A call that certainly did not run
 * (the connection failed before it was sent, no live node could take it)
 * is retried by the core a bounded number of times, then fails with
 * retryable 1 too and a message saying it did not run.  0 otherwise.
 */
DOBJ_API int dobj_task_retryable(const dobj_task *t);

/** The address this node listens on for calls from other nodes
 *  ("127.0.0.1:7001"; with port 0 in node_addr, the port the system
 *  chose), or NULL when the runtime is not a reachable node. */
DOBJ_API const char *dobj_rt_cluster_addr(const dobj_rt *rt);

#endif
