/*
 * A Durable Object class written in C, called from C.
 *
 * Build: cmake -S . -B build && cmake --build build --target example_counter
 * Run:   ./build/examples/c/example_counter
 *
 * The class keeps a count per object.  Requests and responses are dobj_msg
 * values, so the runtime uses dobj_host_msg() to release them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dobj.h"

typedef struct counter {
	long n;
} counter;

static int counter_construct(dobj_obj *obj, void *data, void **instance, void **error)
{
	counter *c = calloc(1, sizeof(*c));

	(void)obj;
	(void)data;
	(void)error;
	if (!c)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	*instance = c;
	return DOBJ_OK;
}

static void counter_destroy(void *instance, void *data)
{
	(void)data;
	free(instance);
}

/* The fetch handler: it never suspends, so one step finishes it. */
static int counter_fetch(dobj_task *task, void *data)
{
	counter *c = dobj_obj_instance(dobj_task_obj(task));
	const dobj_msg *req = dobj_task_request(task);
	char body[64];
	dobj_msg *res;
	int len;

	(void)data;
	if (strcmp(req->method, "POST") == 0)
		c->n++;
	len = snprintf(body, sizeof(body), "%ld", c->n);
	res = dobj_msg_new_response(200, body, (size_t)len);
	if (!res || dobj_msg_set_header(res, "content-type", "text/plain") < 0) {
		dobj_msg_free(res);
		return dobj_error_last_code();
	}
	dobj_task_return(task, res);
	return DOBJ_OK;
}

static int is_done(void *task)
{
	return dobj_task_done(task);
}

/* Send one request and wait for the response body (printed). */
static int call(dobj_rt *rt, dobj_stub *stub, const char *method, const char *url)
{
	dobj_msg *req = dobj_msg_new_request(url, method);
	dobj_task *task;
	void *res;
	const char *msg;
	int rc;

	if (!req)
		return -1;
	rc = dobj_stub_call(&task, stub, DOBJ_CALL_FETCH, NULL, url, strlen(url), req, NULL, NULL);
	if (rc < 0) {
		printf("%s %s -> refused: %s\n", method, url, dobj_error_last());
		return rc;
	}
	dobj_rt_run(rt, is_done, task);
	rc = dobj_task_result(task, &res, &msg, NULL);
	if (rc == DOBJ_OK) {
		const dobj_msg *r = res;
		printf("%s %s -> %d %.*s (%s)\n", method, url, r->status, (int)r->body_len,
			(const char *)r->body, dobj_msg_header(r, "Content-Type"));
	} else {
		printf("%s %s -> error: %s\n", method, url, msg);
	}
	dobj_task_unref(task);
	return rc;
}

int main(void)
{
	dobj_rt_opts opts = DOBJ_RT_OPTS_INIT;
	dobj_class klass = { 0 };
	dobj_rt *rt;
	dobj_ns *ns;
	dobj_stub *stub;
	dobj_id id;
	char hex[DOBJ_ID_HEX_LEN + 1] = { 0 };
	int rc = 1;

	opts.host = dobj_host_msg();
	if (dobj_rt_new(&rt, &opts) < 0)
		return 1;
	klass.name = "Counter";
	klass.flags = DOBJ_CLASS_FETCH;
	klass.construct = counter_construct;
	klass.step = counter_fetch;
	klass.destroy = counter_destroy;
	if (dobj_ns_new(&ns, rt, "COUNTER", 7, "counter", 7, &klass) < 0)
		goto done;

	dobj_id_from_name(dobj_ns_idkey(ns), "foo", 3, &id);
	dobj_id_to_hex(&id, hex);
	printf("id_from_name(\"foo\") = %s\n", hex);
	if (dobj_stub_new(&stub, ns, &id, "foo", 3) < 0)
		goto done;
	call(rt, stub, "POST", "https://counter/inc");
	call(rt, stub, "POST", "https://counter/inc");
	call(rt, stub, "GET", "https://counter/");
	call(rt, stub, "GET", "/relative");
	dobj_stub_free(stub);
	rc = 0;
done:
	if (rc)
		fprintf(stderr, "error: %s\n", dobj_error_last());
	dobj_rt_free(rt);
	return rc;
}
