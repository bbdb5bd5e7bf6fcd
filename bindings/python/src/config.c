/*
 * config.c — dobj.ConfigError and the module functions behind
 * dobj.load_config (bindings/python/dobj/config.py): the core reads and
 * resolves the wrangler configuration (dobj/config.h); this file only turns
 * its result into Python values.
 */
#include "module.h"

#include <string.h>

/* A config tree value as Python: objects -> dict, arrays -> list, integers
 * (dobj_config_is_integer) -> int, other numbers -> float. */
static PyObject *from_tree(const dobj_val *v)
{
	PyObject *o, *item;
	size_t i, len;
	const char *s;

	switch (dobj_val_type_of(v)) {
	case DOBJ_VAL_NULL:
		Py_RETURN_NONE;
	case DOBJ_VAL_BOOL:
		return PyBool_FromLong(dobj_val_get_bool(v));
	case DOBJ_VAL_NUMBER:
	case DOBJ_VAL_BIGINT:
		if (dobj_config_is_integer(v)) {
			int64_t i64;
			uint64_t u64;
			if (dobj_val_to_i64(v, &i64) == 0)
				return PyLong_FromLongLong(i64);
			if (dobj_val_to_u64(v, &u64) == 0)
				return PyLong_FromUnsignedLongLong(u64);
			{
				/* Beyond 64 bits (JSON): from the magnitude. */
				int neg;
				const unsigned char *mag = dobj_val_get_bigint(v, &neg, &len);
				PyObject *r;
				char *hex = PyMem_Malloc(len * 2 + 2), *p;
				if (!hex)
					return PyErr_NoMemory();
				p = hex;
				if (neg)
					*p++ = '-';
				for (i = len; i > 0; i--, p += 2)
					sprintf(p, "%02x", mag[i - 1]);
				*p = '\0';
				r = PyLong_FromString(hex, NULL, 16);
				PyMem_Free(hex);
				return r;
			}
		}
		return PyFloat_FromDouble(dobj_val_get_number(v));
	case DOBJ_VAL_STRING:
		s = dobj_val_get_string(v, &len);
		return PyUnicode_DecodeUTF8(s, (Py_ssize_t)len, "strict");
	case DOBJ_VAL_ARRAY:
		if (!(o = PyList_New((Py_ssize_t)dobj_val_len(v))))
			return NULL;
		for (i = 0; i < dobj_val_len(v); i++) {
			if (!(item = from_tree(dobj_val_at(v, i)))) {
				Py_DECREF(o);
				return NULL;
			}
			PyList_SET_ITEM(o, (Py_ssize_t)i, item);
		}
		return o;
	case DOBJ_VAL_OBJECT:
		if (!(o = PyDict_New()))
			return NULL;
		for (i = 0; i < dobj_val_len(v); i++) {
			PyObject *k;
			s = dobj_val_key_at(v, i, &len);
			k = PyUnicode_DecodeUTF8(s, (Py_ssize_t)len, "strict");
			item = k ? from_tree(dobj_val_at(v, i)) : NULL;
			if (!item || PyDict_SetItem(o, k, item) < 0) {
				Py_XDECREF(k);
				Py_XDECREF(item);
				Py_DECREF(o);
				return NULL;
			}
			Py_DECREF(k);
			Py_DECREF(item);
		}
		return o;
	default:
		PyErr_Format(PyExc_TypeError, "unexpected %s in a config tree", dobj_val_type_name(v));
		return NULL;
	}
}

static PyObject *raise_config_error(PyObject *m, int rc)
{
	PyObject *type;

	if (rc == DOBJ_ENOMEM)
		return PyErr_NoMemory();
	type = PyObject_GetAttrString(m, "ConfigError");
	if (!type)
		return NULL;
	{
		PyObject *s = core_message(dobj_error_last());
		if (s) {
			PyErr_SetObject(type, s);
			Py_DECREF(s);
		}
	}
	Py_DECREF(type);
	return NULL;
}

/* A path as the file system's bytes: a str, or bytes (os.fspath's result:
 * config.py ran it, so an os.PathLike arrives as one of the two, as for
 * CPython's own file functions) or None.  A str os.fsencode cannot take
 * (a lone surrogate) goes as its WTF-8 (dobjpy_fs_path), the core then says
 * what it found there; a NUL byte, which would cut the path short, is
 * refused in either; *tmp owns the bytes. */
static int opt_path(PyObject *o, const char *what, const char **out, PyObject **tmp)
{
	int nul;

	*out = NULL;
	*tmp = NULL;
	if (o == Py_None)
		return 0;
	if (PyUnicode_Check(o))
		nul = PyUnicode_FindChar(o, 0, 0, PyUnicode_GET_LENGTH(o), 1) != -1;
	else if (PyBytes_Check(o))
		nul = memchr(PyBytes_AS_STRING(o), 0, (size_t)PyBytes_GET_SIZE(o)) != NULL;
	else {
		PyErr_Format(PyExc_TypeError, "%s must be a str, bytes or None, not %.100s", what,
			Py_TYPE(o)->tp_name);
		return -1;
	}
	if (nul) {
		if (!PyErr_Occurred())
			PyErr_Format(PyExc_ValueError, "%s contains a NUL character", what);
		return -1;
	}
	if (!dobjpy_fs_path(o, tmp))
		return -1;
	*out = PyBytes_AS_STRING(*tmp);
	return 0;
}

/* A str (or None) setting the core judges as text: its UTF-8, lone
 * surrogates as WTF-8 (dobjpy_str_arg: the core refuses them with its
 * message), without NUL bytes; *tmp owns the bytes when one was made. */
static int opt_text(PyObject *o, const char *what, const char **out, PyObject **tmp)
{
	Py_ssize_t len;

	*out = NULL;
	*tmp = NULL;
	if (o == Py_None)
		return 0;
	if (!(*out = dobjpy_str_arg(o, what, &len, tmp)))
		return -1;
	if ((size_t)len != strlen(*out)) {
		Py_CLEAR(*tmp);
		PyErr_Format(PyExc_ValueError, "%s contains a NUL character", what);
		return -1;
	}
	return 0;
}

#define SET(d, key, value) do { PyObject *_v = (value); \
	if (!_v || PyDict_SetItemString(d, key, _v) < 0) { Py_XDECREF(_v); goto error; } \
	Py_DECREF(_v); } while (0)

static PyObject *str_or_none(const char *s)
{
	if (!s)
		Py_RETURN_NONE;
	return dobjpy_text_str(s, strlen(s)); /* an env name as given, a path's bytes */
}

int cluster_times(PyObject *const times[4], dobj_cluster_opts *co)
{
	static const char *const names[4] = { "cluster_ttl", "cluster_grace", "cluster_timeout",
		"cluster_call_timeout" };
	static const dobj_cluster_time which[4] = { DOBJ_CLUSTER_TTL, DOBJ_CLUSTER_GRACE,
		DOBJ_CLUSTER_TIMEOUT, DOBJ_CLUSTER_CALL_TIMEOUT };
	int i, rc;

	for (i = 0; i < 4; i++) {
		double s;
		if (times[i] == Py_None)
			continue;
		s = PyFloat_AsDouble(times[i]);
		if (s == -1 && PyErr_Occurred())
			return 1;
		if ((rc = dobj_cluster_opts_seconds(co, which[i], s, names[i])) < 0)
			return rc;
	}
	return 0;
}

/* A size argument (None: not given) into co by the core's rule: 0, a core
 * error (< 0), or 1 with a Python exception set (not an int). */
int cluster_bytes(PyObject *v, dobj_cluster_size which, const char *name,
	dobj_cluster_opts *co)
{
	long long n;

	if (v == Py_None)
		return 0;
	n = PyLong_AsLongLong(v);
	if (n == -1 && PyErr_Occurred())
		return 1;
	return dobj_cluster_opts_bytes(co, which, n, name);
}

/* The resolved cluster settings: None, or a dict in seconds (None for a
 * setting left at the core's default). */
static PyObject *cluster_dict(const dobj_cluster_opts *o)
{
	PyObject *d;
	const double ms[4] = { o->ttl_ms, o->grace_ms, o->timeout_ms, o->call_timeout_ms };
	static const char *const names[4] = { "ttl", "grace", "timeout", "call_timeout" };
	int i;

	if (!(d = PyDict_New()))
		return NULL;
	SET(d, "url", str_or_none(o->url));
	SET(d, "node_addr", str_or_none(o->node_addr));
	for (i = 0; i < 4; i++)
		SET(d, names[i], ms[i] == 0 ? Py_NewRef(Py_None) : PyFloat_FromDouble(ms[i] < 0 ? 0 : ms[i] / 1e3));
	/* Bytes (the C field's < 0, "never", is the user's 0). */
	SET(d, "snapshot_bytes", o->snapshot_bytes == 0 ? Py_NewRef(Py_None)
		: PyLong_FromLongLong(o->snapshot_bytes < 0 ? 0 : o->snapshot_bytes));
	SET(d, "snapshot_part_bytes", o->snapshot_part_bytes == 0 ? Py_NewRef(Py_None)
		: PyLong_FromLongLong(o->snapshot_part_bytes));
	return d;
error:
	Py_DECREF(d);
	return NULL;
}

/* _config_load(path, env, persist_to, starting=False, cluster=None) -> dict
 * of the resolved config.  `starting`: the project is about to start, so
 * its state folder takes the migrations' renames first
 * (dobj_config_move_renamed).  `cluster`: the caller's cluster settings, a
 * tuple (url, node_addr, ttl, grace, timeout[, call_timeout, snapshot_bytes,
 * snapshot_part_bytes]) of str / seconds / bytes / None; they
 * win over the environment and the file (the core's rule). */
static PyObject *mod_config_load(PyObject *m, PyObject *args)
{
	PyObject *path_o, *env_o, *persist_o, *d = NULL, *list, *cl = Py_None;
	PyObject *url_o = Py_None, *addr_o = Py_None, *ttl_o = Py_None, *grace_o = Py_None,
		*timeout_o = Py_None, *call_o = Py_None, *snap_o = Py_None, *part_o = Py_None;
	PyObject *url_tmp = NULL, *addr_tmp = NULL, *path_tmp = NULL, *env_tmp = NULL,
		*persist_tmp = NULL;
	dobj_config_opts opts = DOBJ_CONFIG_OPTS_INIT;
	dobj_config *c = NULL;
	size_t i;
	int rc = 0, starting = 0;

	if (!PyArg_ParseTuple(args, "OOO|pO:_config_load", &path_o, &env_o, &persist_o, &starting, &cl))
		return NULL;
	if (cl != Py_None && !PyArg_ParseTuple(cl, "OOOOO|OOO:cluster", &url_o, &addr_o, &ttl_o,
			&grace_o, &timeout_o, &call_o, &snap_o, &part_o))
		return NULL;
	/* The environment's name is text (a lone surrogate names none). */
	if (opt_path(path_o, "path", &opts.path, &path_tmp) < 0 ||
	    opt_text(env_o, "env", &opts.env, &env_tmp) < 0 ||
	    opt_path(persist_o, "persist_to", &opts.persist_to, &persist_tmp) < 0 ||
	    opt_text(url_o, "cluster", &opts.cluster.url, &url_tmp) < 0 ||
	    opt_text(addr_o, "node_addr", &opts.cluster.node_addr, &addr_tmp) < 0 ||
	    (rc = cluster_times((PyObject *const[]){ ttl_o, grace_o, timeout_o, call_o },
		&opts.cluster)) > 0)
		goto args_error;
	if (rc == 0 && ((rc = cluster_bytes(snap_o, DOBJ_CLUSTER_SNAPSHOT_EVERY,
		"cluster_snapshot_bytes", &opts.cluster)) != 0 || (rc = cluster_bytes(part_o,
		DOBJ_CLUSTER_SNAPSHOT_PART, "cluster_snapshot_part_bytes", &opts.cluster)) != 0) && rc > 0)
		goto args_error;
	/* File reads of a few kilobytes: no GIL release. */
	if (rc == 0)
		rc = dobj_config_load(&c, &opts);
	Py_XDECREF(url_tmp);
	Py_XDECREF(addr_tmp);
	Py_XDECREF(path_tmp);
	Py_XDECREF(env_tmp);
	Py_XDECREF(persist_tmp);
	if (rc < 0)
		return raise_config_error(m, rc);
	if (starting && (rc = dobj_config_move_renamed(c)) < 0) {
		dobj_config_free(c);
		return raise_config_error(m, rc);
	}
	if (!(d = PyDict_New()))
		goto error;
	SET(d, "config_path", str_or_none(c->path));
	SET(d, "env", str_or_none(c->env));
	SET(d, "name", str_or_none(c->name));
	SET(d, "worker_name", str_or_none(c->worker_name));
	SET(d, "main", str_or_none(c->main));
	SET(d, "compatibility_date", str_or_none(c->compatibility_date));
	SET(d, "dev_vars_path", str_or_none(c->dev_vars_path));
	SET(d, "state_dir", str_or_none(c->state_dir));
	SET(d, "cluster", c->cluster ? cluster_dict(c->cluster) : Py_NewRef(Py_None));
	SET(d, "vars", from_tree(c->vars));
	SET(d, "migrations", from_tree(c->migrations));
	SET(d, "compatibility_flags", PyList_New(0));
	list = PyDict_GetItemString(d, "compatibility_flags");
	for (i = 0; i < c->compatibility_flags_len; i++) {
		PyObject *s = str_or_none(c->compatibility_flags[i]);
		if (!s || PyList_Append(list, s) < 0) {
			Py_XDECREF(s);
			goto error;
		}
		Py_DECREF(s);
	}
	SET(d, "warnings", PyList_New(0));
	list = PyDict_GetItemString(d, "warnings");
	for (i = 0; i < c->warnings_len; i++) {
		PyObject *s = str_or_none(c->warnings[i]);
		if (!s || PyList_Append(list, s) < 0) {
			Py_XDECREF(s);
			goto error;
		}
		Py_DECREF(s);
	}
	SET(d, "bindings", PyList_New(0));
	list = PyDict_GetItemString(d, "bindings");
	for (i = 0; i < c->bindings_len; i++) {
		const dobj_config_binding *b = &c->bindings[i];
		PyObject *bd = PyDict_New();
		if (!bd)
			goto error;
		if (PyList_Append(list, bd) < 0) {
			Py_DECREF(bd);
			goto error;
		}
		Py_DECREF(bd); /* the list holds it */
		SET(bd, "binding", str_or_none(b->binding));
		SET(bd, "class_name", str_or_none(b->class_name));
		SET(bd, "unique_key", str_or_none(b->unique_key));
		SET(bd, "id_key", str_or_none(b->id_key));
		SET(bd, "storage_dir", str_or_none(b->storage_dir));
		SET(bd, "sqlite", PyBool_FromLong(b->sqlite));
	}
	dobj_config_free(c);
	return d;
error:
	dobj_config_free(c);
	Py_XDECREF(d);
	return NULL;
args_error:
	Py_XDECREF(url_tmp);
	Py_XDECREF(addr_tmp);
	Py_XDECREF(path_tmp);
	Py_XDECREF(env_tmp);
	Py_XDECREF(persist_tmp);
	return NULL;
}

/* _config_parse(text: str|bytes, format: "toml"|"jsonc"|"dotenv", filename)
 * -> the tree (tests compare it with tomllib / json). */
static PyObject *mod_config_parse(PyObject *m, PyObject *args)
{
	PyObject *text_o, *res;
	const char *format, *filename = NULL, *text;
	Py_ssize_t len;
	dobj_val *v = NULL;
	int rc;

	if (!PyArg_ParseTuple(args, "Os|z:_config_parse", &text_o, &format, &filename))
		return NULL;
	if (PyBytes_Check(text_o)) {
		text = PyBytes_AS_STRING(text_o);
		len = PyBytes_GET_SIZE(text_o);
	} else if (PyUnicode_Check(text_o)) {
		if (!(text = PyUnicode_AsUTF8AndSize(text_o, &len)))
			return NULL;
	} else {
		PyErr_SetString(PyExc_TypeError, "_config_parse(text: str | bytes, format, filename=None)");
		return NULL;
	}
	if (strcmp(format, "toml") == 0)
		rc = dobj_config_parse(&v, text, (size_t)len, DOBJ_CONFIG_TOML, filename);
	else if (strcmp(format, "jsonc") == 0 || strcmp(format, "json") == 0)
		rc = dobj_config_parse(&v, text, (size_t)len, DOBJ_CONFIG_JSONC, filename);
	else if (strcmp(format, "dotenv") == 0)
		rc = dobj_config_parse_dotenv(&v, text, (size_t)len, filename);
	else {
		PyErr_Format(PyExc_ValueError, "unknown format %.40s (toml, jsonc, dotenv)", format);
		return NULL;
	}
	if (rc < 0)
		return raise_config_error(m, rc);
	res = from_tree(v);
	dobj_val_free(v);
	return res;
}

static PyMethodDef config_methods[] = {
	{ "_config_load", mod_config_load, METH_VARARGS, NULL },
	{ "_config_parse", mod_config_parse, METH_VARARGS, NULL },
	{ NULL }
};

int config_setup_types(PyObject *m)
{
	module_state *st = PyModule_GetState(m);
	PyObject *bases, *err;

	bases = PyTuple_Pack(2, st->Error, PyExc_ValueError);
	if (!bases)
		return -1;
	err = PyErr_NewExceptionWithDoc("dobj.ConfigError",
		"A wrangler configuration that cannot be read: the message names the file, "
		"the key and, for syntax errors, the line.", bases, NULL);
	Py_DECREF(bases);
	if (!err)
		return -1;
	if (PyModule_AddObjectRef(m, "ConfigError", err) < 0) {
		Py_DECREF(err);
		return -1;
	}
	Py_DECREF(err);
	return PyModule_AddFunctions(m, config_methods);
}
