/*
 * module.h — what the files of the _dobj extension share: the module state,
 * the object layouts, and the functions one file calls in another.
 *
 * One file per concern (as CPython's Modules/_sqlite):
 *   module.c     the module: state, exec, module functions
 *   errors.c     dobj.Error, InvalidIdError, error values handed to the core
 *   runtime.c    dobj.Runtime: pumping the core, the asyncio timer, bind
 *   namespace.c  dobj.Namespace and dobj.DurableObjectId
 *   stub.c       dobj.Stub: fetch and RPC calls to an object
 *   call.c       dobj.Call: the awaitable over a core task
 *   driver.c     the handler driver: constructing instances, stepping
 *                coroutines, waking them (dobj._Waker)
 *   ctx.c        dobj.Context (ctx): abort, block_concurrency_while, wait_until
 *   rpc.c        RPC values (stubs and IDs inside them), the receiving side
 *   http.c       dobj.Request / Response <-> the core's messages (native classes)
 *   route.c      the codec for calls to other nodes of a cluster
 *   values.c     Python values <-> JS values (values.h)
 *   storage.c    ctx.storage (storage.h)
 *   config.c     dobj.ConfigError, the wrangler config (dobj.load_config)
 * Each type file has a *_setup_types(module) that module exec calls.
 */
#ifndef DOBJPY_MODULE_H
#define DOBJPY_MODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#include "dobj.h"
#include "storage.h"
#include "values.h"

typedef struct {
	PyTypeObject *Runtime_T, *Namespace_T, *Id_T, *Stub_T, *Call_T, *Context_T, *Waker_T, *WebSocket_T;
	PyTypeObject *WebSocketConn_T; /* internal: the pair a module's WebSocket wrappers share */
	PyObject *Error, *InvalidIdError, *InvalidInputError, *Aborted;
	/* Set by dobj/__init__.py through _setup(). */
	PyObject *Request, *Response, *Env, *make_request;
	PyObject *get_running_loop;
	/* Calls whose loop future must be completed once the core returns. */
	PyObject *deferred;
	/* _fd_readable(weakref to a Runtime): what the loop calls when a
	 * runtime's fd is readable (add_reader). */
	PyObject *fd_readable;
	PyObject *s_fetch, *s_alarm, *s_blocking, *s_add_done_callback, *s_create_future,
		*s_set_result, *s_done, *s_remote, *s_retryable, *s_durable_object_id, *s_url, *s_await,
		*s_call_soon;
	/* Issue 3: the value mapping and ctx.storage (values.c, storage.c). */
	dobjpy_values values;
	dobjpy_storage_state storage;
	PyObject *drain; /* dobj._drain(rt, timeout), set by _setup_storage */
	PyObject *report_error; /* dobj._report_error(what, exc), set by _setup_reporting */
	PyObject *partial; /* functools.partial: stub.method -> stub._rpc("method", ...) */
} module_state;

typedef struct RuntimeObject RuntimeObject;

typedef struct {
	PyObject_HEAD
	RuntimeObject *rt;
	dobj_ns *ns;
	PyObject *cls;
	PyObject *binding;
	PyObject *unique_key;
	int has_fetch;
	PyObject *weakreflist;
} NamespaceObject;

struct RuntimeObject {
	PyObject_HEAD
	/*
	 * A strong reference to the _dobj module, released last in dealloc and
	 * deliberately not visited: while a runtime lives, the module is never
	 * part of the garbage the GC clears, so `st` and every field in it stay
	 * valid for everything the runtime does (closing objects, cancelling its
	 * timer), also at interpreter exit.  The module references no runtime,
	 * so this keeps no cycle alive.
	 */
	PyObject *module;
	module_state *st;
	dobj_rt *rt;
	PyObject *env;
	PyObject *namespaces; /* dict binding -> Namespace */
	/* The loop that watches the core's fd (add_reader): it calls
	 * dobj_rt_process when work is ready or a timer is due. */
	PyObject *reader_loop;
	int reader_fd;
	PyObject *progress;   /* a loop future drain() waits on; set by each pump */
	int has_seed;
	unsigned long long seed;
	int virtual_time;
	PyObject *weakreflist;
};

typedef struct {
	PyObject_HEAD
	dobj_id id;
	PyObject *name;            /* str or NULL */
	NamespaceObject *ns;
	PyObject *weakreflist;
} IdObject;

typedef struct {
	PyObject_HEAD
	NamespaceObject *ns;
	dobj_stub *stub;
	IdObject *id;
	PyObject *weakreflist;
} StubObject;

/* An awaitable over a core task (a call, a block), or over a value. */
typedef struct {
	PyObject_HEAD
	RuntimeObject *rt;
	dobj_task *task;      /* NULL once settled into value/error */
	PyObject *future;     /* loop future for awaiting outside handlers */
	PyObject *value;      /* immediate result */
	PyObject *error;      /* immediate exception */
	IdObject *target;     /* for remote error attributes */
	int is_fetch;
} CallObject;

typedef struct {
	PyObject_HEAD
	RuntimeObject *rt;
	dobj_obj *obj;
	IdObject *id;
	PyObject *dict;
	PyObject *storage; /* ctx.storage, made on first use */
} ContextObject;

/* A done callback for an asyncio future that wakes a task. */
typedef struct {
	PyObject_HEAD
	RuntimeObject *rt;
	dobj_task *task;
} WakerObject;

/* The _dobj module definition (module.c). */
extern PyModuleDef dobjpy_module_def;

/*
 * The _dobj module that defined `t` or one of its bases (a subclass of
 * dobj.Runtime has no module of its own): a borrowed reference, or NULL with
 * an exception.  Its state, or NULL with an exception.
 */
PyObject *module_of_type(PyTypeObject *t);
module_state *module_state_of_type(PyTypeObject *t);

/* Keyword arguments of an RPC call travel in an object next to the
 * positional ones. */
#define RPC_ARGS "__dobj_args__"
#define RPC_KWARGS "__dobj_kwargs__"

/* The heap type of `spec`, kept in *slot (a strong reference, the module
 * state's) and added to the module under its name.  -1 with an exception. */
int module_add_type(PyObject *module, PyType_Spec *spec, PyTypeObject **slot);

/* Each makes its types, keeps them in the module state and adds the public
 * ones to the module.  -1 with an exception. */
int errors_setup_types(PyObject *module);
int runtime_setup_types(PyObject *module);
int namespace_setup_types(PyObject *module);
int stub_setup_types(PyObject *module);
int call_setup_types(PyObject *module);
int driver_setup_types(PyObject *module);
int ctx_setup_types(PyObject *module);
int config_setup_types(PyObject *module);
int websocket_setup_types(PyObject *module);
int server_setup_types(PyObject *module);

/* websocket.c */
PyObject *websocket_wrap(module_state *st, dobj_ws *ws);
/* The dobj_ws of a dobj.WebSocket (TypeError for anything else). */
dobj_ws *websocket_arg(module_state *st, PyObject *o);
PyObject *websocket_dispatch(dobj_task *t, RuntimeObject *rt, PyObject *inst);
unsigned websocket_class_flags(PyObject *cls);
PyObject *websocket_check_response(PyObject *m, PyObject *const *args, Py_ssize_t nargs);
PyObject *ctx_accept_web_socket(ContextObject *self, PyObject *args, PyObject *kw);
PyObject *ctx_get_web_sockets(ContextObject *self, PyObject *args, PyObject *kw);
PyObject *ctx_get_tags(ContextObject *self, PyObject *ws);
PyObject *ctx_set_web_socket_auto_response(ContextObject *self, PyObject *const *args,
	Py_ssize_t nargs);
PyObject *ctx_web_socket_auto_response(ContextObject *self, PyObject *unused);
PyObject *ctx_web_socket_auto_response_ms(ContextObject *self, PyObject *ws);

/* errors.c */
PyObject *raise_core_error(module_state *st, int code);
PyObject *core_message(const char *msg);
PyObject *take_exception(char *msg, size_t cap);
PyObject *error_box(PyObject *exc);
PyObject *error_box_shared(PyObject *exc);
PyObject *copy_exception(PyObject *exc);
PyObject *error_unbox(PyObject *err);
void fail_task_with_exception(dobj_task *t);

/* runtime.c */
void retain_python_value(void *data, void *v);
void release_python_value(void *data, void *v);
void runtime_pump(RuntimeObject *self);
void runtime_watch(RuntimeObject *self);
void runtime_unwatch(RuntimeObject *self);
PyObject *runtime_fd_readable(PyObject *module, PyObject *weakref);

/* namespace.c */
IdObject *id_object_new(module_state *st, NamespaceObject *ns, const dobj_id *id, PyObject *name);
PyObject *Id_str(IdObject *self);
PyObject *Id_get_name(IdObject *self, void *closure);

/* stub.c */
StubObject *stub_object_new(NamespaceObject *self, IdObject *id);

/* call.c */
CallObject *call_object_new(RuntimeObject *rt, dobj_task *task, IdObject *target, int is_fetch);
int call_is_done(CallObject *self);
void complete_deferred_futures(module_state *st);

/* testkit.c: dobj.testing's functions (_tk_*), added to the module. */
extern PyMethodDef testkit_methods[];

/* driver.c */
int python_class_construct(dobj_obj *obj, void *data, void **instance, void **error);
int python_class_step(dobj_task *t, void *data);
int coroutine_step(dobj_task *t, void *data);
PyObject *awaitable_iterator(PyObject *v);

/* ctx.c */
void context_alarm_changed(PyObject *ctx);
/* The exception an abort with `reason` raises (ctx.abort, the test kit's
 * abort_all): `reason` itself when it is an exception, else dobj.Error of
 * str(reason), or of workerd's default message for None (or NULL).  A new
 * reference, or NULL with an exception. */
PyObject *abort_reason_exception(module_state *st, PyObject *reason);

/* config.c: the four cluster times (cluster_ttl, cluster_grace,
 * cluster_timeout, cluster_call_timeout), each seconds as a float or None
 * (not given), into co by the core's rule (dobj_cluster_opts_seconds): 0;
 * 1 with a Python exception (not a number); or a negative core code, the
 * message in dobj_error_last, for the caller to raise as its kind. */
int cluster_times(PyObject *const times[4], dobj_cluster_opts *co);
/* A size argument (an int, or None: not given) into co by the core's rule
 * (dobj_cluster_opts_bytes), `name` in the message: as cluster_times. */
int cluster_bytes(PyObject *v, dobj_cluster_size which, const char *name,
	dobj_cluster_opts *co);

/* rpc.c */
void core_val_free(void *v);
dobj_val *rpc_value_to_core(RuntimeObject *rt, PyObject *o);
PyObject *rpc_value_from_core(RuntimeObject *rt, const dobj_val *v);
PyObject *rpc_invoke_method(dobj_task *t, RuntimeObject *rt, PyObject *inst);

/* http.c */
dobj_msg *http_request_to_msg(PyObject *req, const char *url);
/* The (name, value) pairs of obj.headers.items() added to m: 0; -1 with a
 * Python exception, or without one when a pair is not two str or the core
 * refused it (each caller says which error that is). */
int http_headers_to_msg(dobj_msg *m, PyObject *obj);
PyObject *http_response_from_msg(module_state *st, const dobj_msg *m);
/* route.c: carry requests, responses and errors to other nodes (cluster mode). */
void route_codec_install(RuntimeObject *rt);
int http_setup(PyObject *m); /* the core's message rules as _dobj functions */

#endif
