/*
 * The rules every binding follows, decided by the core: which names RPC may
 * call and the missing-method message, the idle timeout's meaning, which
 * errors are remote, the ctx/storage of a previous instance, background
 * errors (wait_until, alarms) and transaction handles.
 */
#include <math.h>
#include <stdlib.h>

#include "testhost.h"
#include "cases.h"

static dobj_ns *ns;
static int steps;

/* RPC: the method "fail" raises, "ok" returns, "abort" aborts its object,
 * anything else is missing.  BACKGROUND tasks raise at once. */
static int rules_step(dobj_task *t, void *data)
{
	const char *m = dobj_task_method(t);
	(void)data;
	steps++;
	if (dobj_task_call_kind(t) == DOBJ_CALL_ALARM) {
		dobj_task_raise(t, DOBJ_EUSER, "alarm failed", tv_new(V_ERR, "alarm failed", 0));
		return DOBJ_OK;
	}
	if (m && strcmp(m, "ok") == 0) {
		respond(t, 200, "ok");
		return DOBJ_OK;
	}
	if (m && strcmp(m, "fail") == 0) {
		dobj_task_raise(t, DOBJ_EUSER, "boom", tv_new(V_ERR, "boom", 0));
		return DOBJ_OK;
	}
	if (m && strcmp(m, "abort") == 0) {
		dobj_obj_abort(dobj_task_obj(t), DOBJ_EABORTED, "bye", NULL);
		return DOBJ_OK;
	}
	return dobj_rpc_no_method(m, strlen(m));
}

static int rules_construct(dobj_obj *obj, void *data, void **instance, void **error)
{
	(void)obj;
	(void)data;
	(void)error;
	*instance = tv_new(V_INST, NULL, 0);
	return DOBJ_OK;
}

static dobj_task *reported[8];
static int reported_retry[8];
static int nreported;

static void on_error(dobj_task *t, void *data)
{
	CHECK(data == &nreported);
	if (nreported < 8) {
		/* Alarm details are readable in the hook (not after it). */
		reported_retry[nreported] = -1;
		dobj_task_alarm_info(t, NULL, &reported_retry[nreported]);
		dobj_task_ref(t);
		reported[nreported] = t;
	}
	nreported++;
}

static dobj_rt *make_rt(int virtual_time)
{
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_class k = { .name = "Rules", .flags = DOBJ_CLASS_ALARM, .construct = rules_construct,
		.step = rules_step };
	dobj_rt *rt;

	o.virtual_time = virtual_time;
	rt = testhost_rt(&o, &k, "RULES", NULL, &ns);
	dobj_rt_set_error_hook(rt, on_error, &nreported);
	nreported = 0;
	steps = 0;
	return rt;
}

static void drop_reported(void)
{
	int i;
	for (i = 0; i < nreported && i < 8; i++)
		dobj_task_unref(reported[i]);
	nreported = 0;
}

static dobj_stub *named(const char *name)
{
	return testhost_stub(ns, name);
}

/* Call `method`; return the task, finished. */
static dobj_task *call(dobj_rt *rt, dobj_stub *s, const char *method)
{
	dobj_task *t = NULL;
	CHECK_EQ_INT(dobj_stub_call(&t, s, DOBJ_CALL_RPC, method, NULL, 0, NULL, NULL, NULL), DOBJ_OK);
	dobj_rt_run(rt, task_is_done, t);
	CHECK(dobj_task_done(t));
	return t;
}

static void test_rpc_names_reserved_private_and_callable(void)
{
	static const str_case names[] = {
		STR_CASE("get", DOBJ_OK, NULL),
		STR_CASE("newer", DOBJ_OK, NULL),
		STR_CASE("fetch", DOBJ_ENOHANDLER,
			"'fetch' is a reserved method and cannot be called over RPC."),
		STR_CASE("alarm", DOBJ_ENOHANDLER, NULL),
		STR_CASE("constructor", DOBJ_ENOHANDLER, NULL),
		STR_CASE("new", DOBJ_ENOHANDLER, NULL),
		STR_CASE("webSocketMessage", DOBJ_ENOHANDLER, NULL),
		STR_CASE("_private", DOBJ_ENOHANDLER,
			"The RPC receiver does not implement the method \"_private\"."),
		STR_CASE("__init__", DOBJ_ENOHANDLER, NULL),
		STR_CASE("", DOBJ_ENOHANDLER, NULL),
		STR_CASE("a\0b", DOBJ_ENOHANDLER, NULL),
	};

	check_str_cases(dobj_rpc_name_check, names, N_CASES(names));
}

static void test_missing_method_message_keeps_its_end(void)
{
	char name[2001], expect[400];
	const char *msg;
	size_t len;

	memset(name, 'm', 2000);
	name[2000] = 0;
	CHECK_EQ_INT(dobj_rpc_no_method(name, 2000), DOBJ_ENOHANDLER);
	msg = dobj_error_last();
	len = strlen(msg);
	CHECK(len > 2 && strcmp(msg + len - 2, "\".") == 0);
	snprintf(expect, sizeof(expect), "The RPC receiver does not implement the method \"%.256s...\".",
		name);
	CHECK_STR(msg, expect);
	/* Cut at a character boundary: 255 ASCII bytes then "é" (2 bytes). */
	memset(name, 'a', 255);
	memcpy(name + 255, "\xc3\xa9zz", 5);
	CHECK_EQ_INT(dobj_rpc_no_method(name, 259), DOBJ_ENOHANDLER);
	msg = dobj_error_last();
	CHECK(strstr(msg, "a...\".") != NULL);
	CHECK_EQ_INT(dobj_rpc_no_method("x", 1), DOBJ_ENOHANDLER);
	CHECK_STR(dobj_error_last(), "The RPC receiver does not implement the method \"x\".");
}

static void test_missing_method_message_shows_the_name_escaped(void)
{
	char name[300];

	/* A NUL ended the message: "add\0x" was shown as "add". */
	CHECK_EQ_INT(dobj_rpc_no_method("add\0x", 5), DOBJ_ENOHANDLER);
	CHECK_STR(dobj_error_last(), "The RPC receiver does not implement the method \"add\\x00x\".");
	/* Control bytes, bytes that are not UTF-8 and a backslash; UTF-8 stays. */
	CHECK_EQ_INT(dobj_rpc_no_method("\t\xff\\\xc3\xa9\x7f", 6), DOBJ_ENOHANDLER);
	CHECK_STR(dobj_error_last(),
		"The RPC receiver does not implement the method \"\\x09\\xff\\\\\xc3\xa9\\x7f\".");
	/* The cut counts what is shown: 64 NULs fill 256 bytes, the 65th is cut. */
	memset(name, 0, sizeof(name));
	CHECK_EQ_INT(dobj_rpc_no_method(name, 65), DOBJ_ENOHANDLER);
	CHECK(strstr(dobj_error_last(), "\\x00\\x00...\".") != NULL);
	CHECK_EQ_INT((int)strlen(dobj_error_last()),
		(int)strlen("The RPC receiver does not implement the method \"...\".") + 256);
}

static void test_a_stub_takes_only_a_name_that_is_text(void)
{
	/* dobj_id_from_name's rule: an object's name is always a string to show. */
	dobj_rt *rt = make_rt(0);
	dobj_stub *s = named("a");
	dobj_stub *t = NULL;

	CHECK_EQ_INT(dobj_stub_new(&t, ns, dobj_stub_id(s), "a\xff", 2), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), "a Durable Object name must be UTF-8 text (byte 2 is not)");
	CHECK(t == NULL);
	CHECK_EQ_INT(dobj_stub_new(&t, ns, dobj_stub_id(s), NULL, 0), DOBJ_OK);
	dobj_stub_free(t);
	dobj_stub_free(s);
	dobj_rt_free(rt);
}

static void test_reserved_names_never_reach_the_step(void)
{
	dobj_rt *rt = make_rt(0);
	dobj_stub *s = named("a");
	dobj_task *t;
	const char *msg;

	t = call(rt, s, "fetch");
	CHECK_EQ_INT(dobj_task_result(t, NULL, &msg, NULL), DOBJ_ENOHANDLER);
	CHECK_STR(msg, "'fetch' is a reserved method and cannot be called over RPC.");
	CHECK(dobj_task_remote(t));
	CHECK_EQ_INT(steps, 0);
	dobj_task_unref(t);
	t = call(rt, s, "_secret");
	CHECK_EQ_INT(dobj_task_result(t, NULL, &msg, NULL), DOBJ_ENOHANDLER);
	CHECK_STR(msg, "The RPC receiver does not implement the method \"_secret\".");
	CHECK_EQ_INT(steps, 0);
	dobj_task_unref(t);
	t = call(rt, s, "nothere");
	CHECK_EQ_INT(dobj_task_result(t, NULL, &msg, NULL), DOBJ_ENOHANDLER);
	CHECK_STR(msg, "The RPC receiver does not implement the method \"nothere\".");
	CHECK_EQ_INT(steps, 1);
	dobj_task_unref(t);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

static void test_sql_one_wants_exactly_one_row(void)
{
	CHECK_EQ_INT(dobj_sql_one_check(1), DOBJ_OK);
	CHECK_EQ_INT(dobj_sql_one_check(0), DOBJ_ESTATE);
	CHECK_STR(dobj_error_last(), "Expected exactly one result from SQL query, but got no results.");
	CHECK_EQ_INT(dobj_sql_one_check(5), DOBJ_ESTATE);
	CHECK_STR(dobj_error_last(), "Expected exactly one result from SQL query, but got multiple results.");
}

static void test_idle_timeout_has_one_meaning(void)
{
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_rt *rt;

	CHECK_EQ_INT(dobj_rt_opts_idle_timeout(&o, 2.5), DOBJ_OK);
	CHECK(o.idle_timeout_ms == 2500);
	CHECK_EQ_INT(dobj_rt_opts_idle_timeout(&o, INFINITY), DOBJ_OK);
	CHECK(o.idle_timeout_ms < 0);
	CHECK_EQ_INT(dobj_rt_opts_idle_timeout(&o, 0), DOBJ_EARG);
	CHECK_STR(dobj_error_last(),
		"idle_timeout must be a positive number of seconds (or infinite: never evict)");
	CHECK_EQ_INT(dobj_rt_opts_idle_timeout(&o, -1), DOBJ_EARG);
	CHECK_EQ_INT(dobj_rt_opts_idle_timeout(&o, NAN), DOBJ_EARG);
	CHECK_EQ_INT(dobj_rt_opts_idle_timeout(&o, -INFINITY), DOBJ_EARG);
	CHECK(o.idle_timeout_ms < 0); /* refused values change nothing */
	o.idle_timeout_ms = NAN;
	CHECK_EQ_INT(dobj_rt_opts_check(&o), DOBJ_EARG);
	CHECK_EQ_INT(dobj_rt_new(&rt, &o), DOBJ_EARG);
	CHECK(rt == NULL);
	o.idle_timeout_ms = 0;
	o.durability = 7;
	CHECK_EQ_INT(dobj_rt_new(&rt, &o), DOBJ_EARG);
	o.durability = DOBJ_DURABLE_POWER;
	o.version = 99;
	CHECK_EQ_INT(dobj_rt_opts_check(&o), DOBJ_EARG);
}

static void test_durability_names_and_delays(void)
{
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;

	CHECK_EQ_INT(dobj_rt_opts_durability(&o, "power", 5), DOBJ_OK);
	CHECK_EQ_INT(o.durability, DOBJ_DURABLE_POWER);
	CHECK_EQ_INT(dobj_rt_opts_durability(&o, "process", 7), DOBJ_OK);
	CHECK_EQ_INT(o.durability, DOBJ_DURABLE_PROCESS);
	CHECK_EQ_INT(dobj_rt_opts_durability(&o, "power\0x", 7), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), "durability must be \"process\" or \"power\"");
	CHECK_EQ_INT(dobj_rt_opts_durability(&o, "Power", 5), DOBJ_EARG);
	CHECK_EQ_INT(dobj_rt_opts_durability(&o, NULL, 0), DOBJ_EARG);
	CHECK_EQ_INT(o.durability, DOBJ_DURABLE_PROCESS); /* refused names change nothing */

	CHECK_EQ_INT(dobj_delay_check(0), DOBJ_OK);
	CHECK_EQ_INT(dobj_delay_check(-5), DOBJ_OK); /* a negative delay is none */
	CHECK_EQ_INT(dobj_delay_check(1e300), DOBJ_OK);
	CHECK_EQ_INT(dobj_delay_check(NAN), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), DOBJ_MSG_DELAY);
	CHECK_EQ_INT(dobj_delay_check(INFINITY), DOBJ_EARG);
	CHECK_EQ_INT(dobj_delay_check(-INFINITY), DOBJ_EARG);
}

static void test_list_limit_from_a_user_number(void)
{
	dobj_kv_list_opts o = DOBJ_KV_LIST_OPTS_INIT;

	CHECK_EQ_INT(dobj_kv_list_limit(&o, 3), DOBJ_OK);
	CHECK(o.limit == 3);
	CHECK_EQ_INT(dobj_kv_list_limit(&o, 2.9), DOBJ_OK);
	CHECK(o.limit == 2);
	CHECK_EQ_INT(dobj_kv_list_limit(&o, INFINITY), DOBJ_OK);
	CHECK(o.limit == -1); /* no limit */
	CHECK_EQ_INT(dobj_kv_list_limit(&o, 1e300), DOBJ_OK);
	CHECK(o.limit == -1);
	o.limit = 5;
	CHECK_EQ_INT(dobj_kv_list_limit(&o, 0), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), DOBJ_MSG_LIST_LIMIT);
	CHECK_EQ_INT(dobj_kv_list_limit(&o, -1), DOBJ_EARG); /* not "not given" */
	CHECK_EQ_INT(dobj_kv_list_limit(&o, 0.5), DOBJ_EARG);
	CHECK_EQ_INT(dobj_kv_list_limit(&o, NAN), DOBJ_EARG);
	CHECK_EQ_INT(dobj_kv_list_limit(&o, -INFINITY), DOBJ_EARG);
	CHECK(o.limit == 5); /* refused numbers change nothing */
}

static void test_response_status_range(void)
{
	CHECK_EQ_INT(dobj_msg_status_check(200), DOBJ_OK);
	CHECK_EQ_INT(dobj_msg_status_check(599), DOBJ_OK);
	CHECK_EQ_INT(dobj_msg_status_check(199), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), DOBJ_MSG_STATUS_RANGE);
	CHECK_EQ_INT(dobj_msg_status_check(600), DOBJ_EARG);
	CHECK_EQ_INT(dobj_msg_status_check(-1), DOBJ_EARG);
}

/* What an HTTP server builds a request with: repeated headers joined as
 * Fetch's Headers.append does, a bounded body, framing headers its own. */
static void test_http_request_headers_body_and_framing(void)
{
	dobj_msg *m = dobj_msg_new_request("http://h/", "POST");
	static const char chunk[4096];
	size_t i;

	CHECK(m != NULL);
	CHECK_EQ_INT(dobj_msg_add_header(m, "X-Rep", "a"), DOBJ_OK);
	CHECK_EQ_INT(dobj_msg_add_header(m, "Host", "h"), DOBJ_OK);
	CHECK_EQ_INT(dobj_msg_add_header(m, "x-rep", "b"), DOBJ_OK);
	CHECK_EQ_INT(dobj_msg_add_header(m, "X-REP", ""), DOBJ_OK);
	CHECK((int)m->nheaders == 2);
	CHECK_STR(m->header_names[0], "x-rep");
	CHECK_STR(dobj_msg_header(m, "x-rep"), "a, b, ");
	CHECK_EQ_INT(dobj_msg_add_header(m, "", "v"), DOBJ_ETYPE);

	CHECK_EQ_INT(dobj_msg_append_body(m, "ab\0c", 4), DOBJ_OK);
	CHECK_EQ_INT(dobj_msg_append_body(m, "de", 2), DOBJ_OK);
	CHECK((int)m->body_len == 6);
	CHECK(memcmp(m->body, "ab\0cde", 6) == 0);
	for (i = 0; i < 64; i++) /* past a few powers of two */
		CHECK_EQ_INT(dobj_msg_append_body(m, chunk, sizeof(chunk)), DOBJ_OK);
	CHECK(m->body_len == 6 + 64 * sizeof(chunk));
	CHECK(memcmp(m->body, "ab\0cde", 6) == 0);
	/* The limit is checked before any allocation: a body that claims to be
	 * near it (without the bytes) shows the refusal without 100 MiB. */
	i = m->body_len;
	m->body_len = DOBJ_MSG_BODY_MAX - 3;
	CHECK_EQ_INT(dobj_msg_append_body(m, chunk, 4), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), "request body larger than 100 MiB");
	CHECK(m->body_len == DOBJ_MSG_BODY_MAX - 3); /* unchanged by the refused chunk */
	m->body_len = i;
	dobj_msg_free(m);

	/* The same rule for a server that gathers a body itself. */
	CHECK_EQ_INT(dobj_msg_body_check(0), DOBJ_OK);
	CHECK_EQ_INT(dobj_msg_body_check(DOBJ_MSG_BODY_MAX), DOBJ_OK);
	CHECK_EQ_INT(dobj_msg_body_check(DOBJ_MSG_BODY_MAX + 1), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), "request body larger than 100 MiB");
	CHECK_EQ_INT(dobj_msg_body_check(SIZE_MAX), DOBJ_EARG);

	CHECK(dobj_msg_header_is_framing("Content-Length"));
	CHECK(dobj_msg_header_is_framing("transfer-encoding"));
	CHECK(dobj_msg_header_is_framing("Connection"));
	CHECK(!dobj_msg_header_is_framing("content-type"));
	CHECK(!dobj_msg_header_is_framing("set-cookie"));
	CHECK(!dobj_msg_header_is_framing(NULL));

	CHECK_EQ_INT(dobj_msg_header_check("x-ok", 4, "a, b; c=\"d\"", 11), DOBJ_OK);
	CHECK_EQ_INT(dobj_msg_header_check("x-empty", 7, "", 0), DOBJ_OK);
	CHECK_EQ_INT(dobj_msg_header_check("bad name", 8, "v", 1), DOBJ_EARG);
	CHECK_STR(dobj_error_last(),
		"invalid header name: \"bad name\" (letters, digits and !#$%&'*+-.^_`|~ only)");
	CHECK_EQ_INT(dobj_msg_header_check("", 0, "v", 1), DOBJ_EARG);
	CHECK_EQ_INT(dobj_msg_header_check("x:y", 3, "v", 1), DOBJ_EARG);
	CHECK_EQ_INT(dobj_msg_header_check("x-bad", 5, "a\r\nInjected: yes", 17), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), "invalid value for header x-bad: it holds a CR, LF or NUL byte");
	CHECK_EQ_INT(dobj_msg_header_check("x-nul", 5, "a\0b", 3), DOBJ_EARG);
	CHECK_EQ_INT(dobj_msg_header_check("x-lf", 4, "a\nb", 3), DOBJ_EARG);
}

static void test_a_released_incarnation_is_gone(void)
{
	dobj_storage *st = (dobj_storage *)&st;

	/* A binding's wrapper that let go of its incarnation asks with NULL. */
	CHECK_EQ_INT(dobj_obj_check(NULL), DOBJ_EABORTED);
	CHECK_STR(dobj_error_last(), DOBJ_MSG_GONE);
	CHECK_EQ_INT(dobj_obj_storage(NULL, &st), DOBJ_EABORTED);
	CHECK(st == NULL);
	CHECK_STR(dobj_error_last(), DOBJ_MSG_GONE);
}

static void test_remote_is_the_objects_side(void)
{
	dobj_rt *rt = make_rt(0);
	dobj_stub *s = named("r");
	dobj_task *t, *pending;
	void *err;

	t = call(rt, s, "ok");
	CHECK(!dobj_task_remote(t));
	dobj_task_unref(t);
	t = call(rt, s, "fail");
	CHECK(dobj_task_remote(t));
	/* The host error can be taken out, like the result. */
	err = dobj_task_take_error(t);
	CHECK(err != NULL && strcmp(((tv *)err)->s, "boom") == 0);
	CHECK(dobj_task_take_error(t) == NULL);
	tv_release(NULL, err);
	dobj_task_unref(t);
	t = call(rt, s, "abort");
	CHECK_EQ_INT(dobj_task_result(t, NULL, NULL, NULL), DOBJ_EABORTED);
	CHECK(dobj_task_remote(t));
	dobj_task_unref(t);
	/* Closing the runtime under a queued call is the caller's side. */
	dobj_stub_free(s);
	s = named("r2");
	CHECK_EQ_INT(dobj_stub_call(&pending, s, DOBJ_CALL_RPC, "ok", NULL, 0, NULL, NULL, NULL), DOBJ_OK);
	CHECK(!dobj_task_remote(pending)); /* unfinished */
	dobj_rt_clear(rt);
	CHECK_EQ_INT(dobj_task_result(pending, NULL, NULL, NULL), DOBJ_ECLOSED);
	CHECK(!dobj_task_remote(pending));
	dobj_task_unref(pending);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

/* Background task: fails with a host error on its first step. */
static int bg_fail(dobj_task *t, void *data)
{
	(void)data;
	dobj_task_raise(t, DOBJ_EUSER, "background boom", tv_new(V_ERR, "background boom", 0));
	return DOBJ_OK;
}

static int bg_ok(dobj_task *t, void *data)
{
	(void)data;
	dobj_task_return(t, NULL);
	return DOBJ_OK;
}

/* Spawns a failing and a succeeding background task, then answers. */
static int spawner_step(dobj_task *t, void *data)
{
	dobj_obj *obj = dobj_task_obj(t);
	(void)data;
	CHECK_EQ_INT(dobj_task_spawn(NULL, dobj_task_rt(t), obj, DOBJ_TASK_BACKGROUND, bg_fail, NULL,
		NULL, NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(dobj_task_spawn(NULL, dobj_task_rt(t), obj, DOBJ_TASK_BACKGROUND, bg_ok, NULL,
		NULL, NULL, NULL), DOBJ_OK);
	if (strcmp(dobj_task_method(t), "spawn_and_abort") == 0)
		CHECK_EQ_INT(dobj_task_spawn(NULL, dobj_task_rt(t), obj, DOBJ_TASK_BACKGROUND,
			rules_step, NULL, NULL, NULL, NULL), DOBJ_OK);
	return rules_step(t, data);
}

static void test_background_failures_reach_the_error_hook(void)
{
	dobj_rt *rt = make_rt(0);
	dobj_ns *sns;
	dobj_class k = { 0 };
	dobj_stub *s;
	dobj_id id;
	dobj_task *t;
	const char *msg;
	void *err;

	k.name = "Spawner";
	k.construct = rules_construct;
	k.step = spawner_step;
	CHECK_EQ_INT(dobj_ns_new(&sns, rt, "SPAWNER", 7, NULL, 0, &k), DOBJ_OK);
	dobj_id_from_name(dobj_ns_idkey(sns), "s", 1, &id);
	CHECK_EQ_INT(dobj_stub_new(&s, sns, &id, "s", 1), DOBJ_OK);
	t = call(rt, s, "ok");
	CHECK_EQ_INT(dobj_task_result(t, NULL, NULL, NULL), DOBJ_OK);
	dobj_task_unref(t);
	dobj_rt_run(rt, NULL, NULL);
	/* Only the failed one, once, with its message and host error. */
	CHECK_EQ_INT(nreported, 1);
	if (nreported == 1) {
		CHECK_EQ_INT(dobj_task_kind_of(reported[0]), DOBJ_TASK_BACKGROUND);
		CHECK_EQ_INT(dobj_task_result(reported[0], NULL, &msg, &err), DOBJ_EUSER);
		CHECK_STR(msg, "background boom");
		CHECK(err && strcmp(((tv *)err)->s, "background boom") == 0);
		CHECK(dobj_id_equal(dobj_obj_id(dobj_task_obj(reported[0])), &id));
	}
	drop_reported();
	dobj_stub_free(s);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

/* Background work sleeping `data` ms (virtual time), then failing or not. */
static int bg_sleep(dobj_task *t, void *data)
{
	tv *st = dobj_task_host(t);

	if (st->pc++ == 0) {
		sleep_then_wake(t, (double)(intptr_t)data);
		return DOBJ_PENDING;
	}
	if (st->n)
		dobj_task_raise(t, DOBJ_EUSER, "entry boom", tv_new(V_ERR, "entry boom", 0));
	else
		dobj_task_return(t, NULL);
	return DOBJ_OK;
}

/* The entry's ctx.wait_until: background work without an object.  A failure
 * goes to the error hook once (dobj_task_obj NULL), never out of
 * dobj_rt_run; drain waits for it within its limit. */
static void test_background_work_without_an_object(void)
{
	dobj_rt *rt = make_rt(1);
	dobj_task *t = NULL;
	const char *msg;
	void *err;

	CHECK_EQ_INT(dobj_rt_background(&t, rt, bg_sleep, (void *)(intptr_t)100,
		tv_new(V_STATE, NULL, 1)), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_background(NULL, rt, bg_sleep, (void *)(intptr_t)50,
		tv_new(V_STATE, NULL, 0)), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_background_count(rt), 2);
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_background_count(rt), 0);
	CHECK_EQ_INT(nreported, 1);
	if (nreported == 1) {
		CHECK(reported[0] == t);
		CHECK(dobj_task_obj(reported[0]) == NULL);
		CHECK_EQ_INT(dobj_task_kind_of(reported[0]), DOBJ_TASK_BACKGROUND);
		CHECK_EQ_INT(dobj_task_result(reported[0], NULL, &msg, &err), DOBJ_EUSER);
		CHECK_STR(msg, "entry boom");
	}
	drop_reported();
	dobj_task_unref(t);

	/* Drain: within the limit it waits for the work; past it, the work
	 * stays (and ends if the runtime runs on). */
	CHECK_EQ_INT(dobj_rt_background(NULL, rt, bg_sleep, (void *)(intptr_t)1000,
		tv_new(V_STATE, NULL, 0)), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_background_drain(rt, 500), 1);
	CHECK(dobj_rt_now_ms(rt) < 1000);
	CHECK_EQ_INT(dobj_rt_background_drain(rt, 10000), 0);
	CHECK(dobj_rt_now_ms(rt) >= 1000 && dobj_rt_now_ms(rt) < 2000);
	CHECK_EQ_INT(dobj_rt_background_drain(rt, 0), 0);
	CHECK_EQ_INT(dobj_rt_background_drain(rt, -1), DOBJ_EARG);
	CHECK_EQ_INT(nreported, 0);

	/* Closing the runtime fails what is left, unreported. */
	CHECK_EQ_INT(dobj_rt_background(&t, rt, bg_sleep, (void *)(intptr_t)1000,
		tv_new(V_STATE, NULL, 1)), DOBJ_OK);
	dobj_rt_free(rt);
	CHECK_EQ_INT(dobj_task_result(t, NULL, NULL, NULL), DOBJ_ECLOSED);
	CHECK_EQ_INT(nreported, 0);
	dobj_task_unref(t);
	CHECK_EQ_INT(live_values, 0);
}

static int ms_passed(void *arg)
{
	(void)arg;
	return 0;
}

static void test_each_failed_alarm_run_is_reported(void)
{
	dobj_rt *rt = make_rt(1);
	dobj_stub *s = named("alarm");
	dobj_task *t = call(rt, s, "ok");
	dobj_obj *obj;
	dobj_storage *st;
	int i;

	/* Set the alarm from outside a step, through the live incarnation. */
	dobj_task_unref(t);
	{
		dobj_task *c;
		CHECK_EQ_INT(dobj_stub_call(&c, s, DOBJ_CALL_RPC, "ok", NULL, 0, NULL, NULL, NULL), DOBJ_OK);
		obj = dobj_task_obj(c);
		dobj_obj_ref(obj);
		dobj_rt_run(rt, task_is_done, c);
		dobj_task_unref(c);
	}
	CHECK_EQ_INT(dobj_obj_storage(obj, &st), DOBJ_OK);
	CHECK_EQ_INT(dobj_alarm_set(st, dobj_rt_wall_ms(rt) + 10), DOBJ_OK);
	dobj_obj_unref(obj);
	/* 1 run + 6 retries, every one reported with its retry count. */
	dobj_rt_run(rt, ms_passed, NULL);
	CHECK_EQ_INT(nreported, 1 + DOBJ_ALARM_MAX_RETRIES);
	for (i = 0; i < nreported && i < 8; i++) {
		CHECK_EQ_INT(dobj_task_call_kind(reported[i]), DOBJ_CALL_ALARM);
		CHECK_EQ_INT(dobj_task_result(reported[i], NULL, NULL, NULL), DOBJ_EUSER);
		CHECK_EQ_INT(reported_retry[i], i);
	}
	drop_reported();
	dobj_stub_free(s);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

static void test_ctx_and_storage_of_a_previous_instance(void)
{
	dobj_rt *rt = make_rt(1);
	dobj_stub *s = named("gone");
	dobj_task *c;
	dobj_obj *obj;
	dobj_storage *st;

	CHECK_EQ_INT(dobj_stub_call(&c, s, DOBJ_CALL_RPC, "ok", NULL, 0, NULL, NULL, NULL), DOBJ_OK);
	obj = dobj_task_obj(c);
	dobj_obj_ref(obj);
	dobj_rt_run(rt, task_is_done, c);
	dobj_task_unref(c);
	CHECK_EQ_INT(dobj_obj_check(obj), DOBJ_OK);
	CHECK_EQ_INT(dobj_obj_storage(obj, &st), DOBJ_OK);
	/* Evicted (idle for the default 10 s of virtual time). */
	dobj_rt_advance(rt, DOBJ_IDLE_TIMEOUT_MS + 1);
	CHECK_EQ_INT(dobj_ns_live(ns), 0);
	CHECK_EQ_INT(dobj_obj_check(obj), DOBJ_EABORTED);
	CHECK_STR(dobj_error_last(), DOBJ_MSG_GONE);
	CHECK_EQ_INT(dobj_obj_storage(obj, &st), DOBJ_EABORTED);
	CHECK_STR(dobj_error_last(), DOBJ_MSG_GONE);
	dobj_obj_unref(obj);
	/* Aborted: the same message, whatever the abort's reason was. */
	CHECK_EQ_INT(dobj_stub_call(&c, s, DOBJ_CALL_RPC, "ok", NULL, 0, NULL, NULL, NULL), DOBJ_OK);
	obj = dobj_task_obj(c);
	dobj_obj_ref(obj);
	dobj_rt_run(rt, task_is_done, c);
	dobj_task_unref(c);
	dobj_obj_abort(obj, DOBJ_EABORTED, "some reason", NULL);
	CHECK_EQ_INT(dobj_obj_storage(obj, &st), DOBJ_EABORTED);
	CHECK_STR(dobj_error_last(), DOBJ_MSG_GONE);
	dobj_rt_clear(rt);
	CHECK_EQ_INT(dobj_obj_check(obj), DOBJ_ECLOSED);
	dobj_obj_unref(obj);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

static int count_row(void *arg, const char *k, size_t kl, const void *v, size_t vl)
{
	(void)k; (void)kl; (void)v; (void)vl;
	++*(int *)arg;
	return 0;
}

static int keys_in(dobj_storage *st)
{
	dobj_kv_list_opts lo = DOBJ_KV_LIST_OPTS_INIT;
	int n = 0;
	CHECK_EQ_INT(dobj_kv_list(st, &lo, count_row, &n), DOBJ_OK);
	return n;
}

static void test_transaction_handles_and_innermost_rollback(void)
{
	dobj_rt *rt = make_rt(0);
	dobj_stub *s = named("txn");
	dobj_task *c;
	dobj_obj *obj;
	dobj_storage *st;
	dobj_txn outer, inner, third;

	CHECK_EQ_INT(dobj_stub_call(&c, s, DOBJ_CALL_RPC, "ok", NULL, 0, NULL, NULL, NULL), DOBJ_OK);
	obj = dobj_task_obj(c);
	dobj_obj_ref(obj);
	dobj_rt_run(rt, task_is_done, c);
	dobj_task_unref(c);
	CHECK_EQ_INT(dobj_obj_storage(obj, &st), DOBJ_OK);

	CHECK_EQ_INT(dobj_txn_open(st, &outer), DOBJ_OK);
	CHECK_EQ_INT(outer.level, 1);
	CHECK_EQ_INT(dobj_kv_put(st, "a", 1, "\xff\x0f\x49\x02", 4), DOBJ_OK);
	CHECK_EQ_INT(dobj_txn_open(st, &inner), DOBJ_OK);
	CHECK_EQ_INT(inner.level, 2);
	CHECK_EQ_INT(dobj_kv_put(st, "b", 1, "\xff\x0f\x49\x02", 4), DOBJ_OK);
	/* Only the innermost open transaction can be rolled back. */
	CHECK_EQ_INT(dobj_txn_rollback_handle(st, &outer), DOBJ_ESTATE);
	CHECK_STR(dobj_error_last(), "only the innermost open transaction can be rolled back");
	CHECK_EQ_INT(dobj_txn_rollback_handle(st, &inner), DOBJ_OK);
	CHECK_EQ_INT(inner.state, DOBJ_TXN_ROLLED_BACK);
	CHECK_EQ_INT(dobj_txn_rollback_handle(st, &inner), DOBJ_ESTATE);
	CHECK_STR(dobj_error_last(), "the transaction was rolled back");
	CHECK_EQ_INT(dobj_txn_check(&inner), DOBJ_ESTATE);
	CHECK_EQ_INT(dobj_txn_check(&outer), DOBJ_OK);
	/* Ending a rolled-back handle does nothing (its function returned). */
	CHECK_EQ_INT(dobj_txn_end(st, &inner, 1), DOBJ_OK);
	CHECK_EQ_INT(dobj_txn_depth(st), 1);
	CHECK_EQ_INT(keys_in(st), 1);
	/* A function that leaves an inner transaction open: ending the outer
	 * one ends both. */
	CHECK_EQ_INT(dobj_txn_open(st, &third), DOBJ_OK);
	CHECK_EQ_INT(dobj_kv_put(st, "c", 1, "\xff\x0f\x49\x02", 4), DOBJ_OK);
	CHECK_EQ_INT(dobj_txn_end(st, &outer, 1), DOBJ_OK);
	CHECK_EQ_INT(dobj_txn_depth(st), 0);
	CHECK_EQ_INT(keys_in(st), 2);
	CHECK_EQ_INT(dobj_txn_end(st, &third, 0), DOBJ_OK); /* already ended with outer */
	CHECK_EQ_INT(keys_in(st), 2);
	/* A failed function rolls back, inner ones included. */
	CHECK_EQ_INT(dobj_txn_open(st, &outer), DOBJ_OK);
	CHECK_EQ_INT(dobj_kv_put(st, "d", 1, "\xff\x0f\x49\x02", 4), DOBJ_OK);
	CHECK_EQ_INT(dobj_txn_open(st, &inner), DOBJ_OK);
	CHECK_EQ_INT(dobj_kv_put(st, "e", 1, "\xff\x0f\x49\x02", 4), DOBJ_OK);
	CHECK_EQ_INT(dobj_txn_end(st, &outer, 0), DOBJ_OK);
	CHECK_EQ_INT(keys_in(st), 2);
	/* The object is gone: ending does nothing and succeeds. */
	CHECK_EQ_INT(dobj_txn_open(st, &outer), DOBJ_OK);
	dobj_obj_abort(obj, DOBJ_EABORTED, "x", NULL);
	CHECK_EQ_INT(dobj_txn_end(NULL, &outer, 1), DOBJ_OK);
	CHECK_EQ_INT(outer.state, DOBJ_TXN_ENDED);
	CHECK_EQ_INT(dobj_txn_check(&outer), DOBJ_ESTATE);
	CHECK_STR(dobj_error_last(), "the transaction has finished");
	dobj_obj_unref(obj);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

/* Aborts its object with a host error. */
static int abort_with_error_step(dobj_task *t, void *data)
{
	(void)data;
	dobj_obj_abort(dobj_task_obj(t), DOBJ_EABORTED, "bye", tv_new(V_ERR, "bye", 0));
	return DOBJ_OK;
}

/* Each stub bound to an aborted incarnation keeps its own reference to the
 * abort error (one owner per reference, for a GC binding to visit); the dead
 * incarnation keeps none; closing the runtime releases them all. */
static void test_broken_stubs_keep_the_abort_error_each(void)
{
	dobj_rt *rt;
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_class k = { 0 };
	dobj_ns *dns;
	dobj_stub *s, *s2, *fresh;
	dobj_id id;
	dobj_task *t, *t2;
	dobj_obj *obj;
	void *err, *err2;
	tv *e;

	o.host.retain = tv_retain;
	o.host.release = tv_release;
	CHECK_EQ_INT(dobj_rt_new(&rt, &o), DOBJ_OK);
	k.name = "Dying";
	k.construct = rules_construct;
	k.step = abort_with_error_step;
	CHECK_EQ_INT(dobj_ns_new(&dns, rt, "DYING", 5, NULL, 0, &k), DOBJ_OK);
	dobj_id_from_name(dobj_ns_idkey(dns), "d", 1, &id);
	CHECK_EQ_INT(dobj_stub_new(&s, dns, &id, "d", 1), DOBJ_OK);
	CHECK_EQ_INT(dobj_stub_new(&s2, dns, &id, "d", 1), DOBJ_OK);
	/* Both stubs bind; s's call aborts the object, s2's call queued behind it fails. */
	CHECK_EQ_INT(dobj_stub_call(&t, s, DOBJ_CALL_RPC, "go", NULL, 0, NULL, NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(dobj_stub_call(&t2, s2, DOBJ_CALL_RPC, "go", NULL, 0, NULL, NULL, NULL), DOBJ_OK);
	CHECK(dobj_stub_error(s) == NULL && dobj_stub_error(s2) == NULL);
	dobj_rt_run(rt, task_is_done, t2);
	CHECK(dobj_task_done(t) && dobj_task_done(t2));
	obj = dobj_task_obj(t);
	dobj_obj_ref(obj);
	CHECK(dobj_obj_dead(obj));
	err = dobj_stub_error(s);
	CHECK(err != NULL && strcmp(((tv *)err)->s, "bye") == 0);
	CHECK(dobj_stub_error(s2) == err);
	e = err;
	CHECK_EQ_INT(dobj_task_result(t2, NULL, NULL, &err2), DOBJ_EABORTED);
	CHECK(err2 == err);
	CHECK_EQ_INT(dobj_task_result(t, NULL, NULL, &err2), DOBJ_EABORTED);
	CHECK(err2 == err);
	CHECK_EQ_INT(e->refs, 4); /* the two stubs and the two calls; the incarnation none */
	dobj_task_unref(t2);
	dobj_task_unref(t);
	CHECK_EQ_INT(e->refs, 2);
	/* A later call on the broken stub fails with the stub's error. */
	t = call(rt, s, "go");
	CHECK_EQ_INT(dobj_task_result(t, NULL, NULL, &err2), DOBJ_EABORTED);
	CHECK(err2 == err);
	dobj_task_unref(t);
	/* A GC's tp_clear drops one stub's reference; its calls still fail. */
	dobj_stub_drop_error(s2);
	CHECK(dobj_stub_error(s2) == NULL);
	CHECK_EQ_INT(e->refs, 1);
	t = call(rt, s2, "go");
	CHECK_EQ_INT(dobj_task_result(t, NULL, NULL, &err2), DOBJ_EABORTED);
	CHECK(err2 == NULL);
	dobj_task_unref(t);
	/* A new stub reaches a fresh incarnation and holds no error. */
	CHECK_EQ_INT(dobj_stub_new(&fresh, dns, &id, "d", 1), DOBJ_OK);
	CHECK(dobj_stub_error(fresh) == NULL);
	dobj_stub_free(fresh);
	CHECK_EQ_INT(live_values, 1);
	dobj_rt_clear(rt);
	CHECK(dobj_stub_error(s) == NULL);
	CHECK_EQ_INT(live_values, 0);
	dobj_obj_unref(obj);
	dobj_stub_free(s);
	dobj_stub_free(s2);
	dobj_rt_free(rt);
}

int main(void)
{
	RUN(test_rpc_names_reserved_private_and_callable);
	RUN(test_missing_method_message_keeps_its_end);
	RUN(test_missing_method_message_shows_the_name_escaped);
	RUN(test_a_stub_takes_only_a_name_that_is_text);
	RUN(test_reserved_names_never_reach_the_step);
	RUN(test_idle_timeout_has_one_meaning);
	RUN(test_durability_names_and_delays);
	RUN(test_list_limit_from_a_user_number);
	RUN(test_response_status_range);
	RUN(test_http_request_headers_body_and_framing);
	RUN(test_a_released_incarnation_is_gone);
	RUN(test_sql_one_wants_exactly_one_row);
	RUN(test_remote_is_the_objects_side);
	RUN(test_background_failures_reach_the_error_hook);
	RUN(test_background_work_without_an_object);
	RUN(test_each_failed_alarm_run_is_reported);
	RUN(test_ctx_and_storage_of_a_previous_instance);
	RUN(test_transaction_handles_and_innermost_rollback);
	RUN(test_broken_stubs_keep_the_abort_error_each);
	return DONE();
}
