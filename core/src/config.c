/* config.c — a Workers project's configuration, resolved as wrangler does:
 * which file, which environment, what is inherited, where state lives.
 *
 * wrangler's rules, kept here once for every binding:
 * - files: `wrangler.json`, then `wrangler.jsonc`, then `wrangler.toml`,
 *   each looked for from the folder upwards (wrangler's findWranglerConfig);
 * - `[env.NAME]`: `name`, `main`, `compatibility_*` and `migrations` are
 *   inherited from the top level; `vars` and `durable_objects` are not (a
 *   warning when the top level has them and the environment does not); the
 *   Worker's name in an environment is "<name>-<NAME>" unless it sets one;
 * - secrets: `.dev.vars.<env>` or else `.dev.vars`; when neither exists,
 *   `.env`, `.env.<env>`, `.env.local`, `.env.<env>.local` (later ones win);
 *   they override `vars`;
 * - state: Miniflare's unique key "<worker name>-<class_name>" under
 *   ".wrangler/state/v3/do" next to the config (or "<persist_to>/v3/do").
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "config_cluster.h"

static const char *const config_names[] = { "wrangler.json", "wrangler.jsonc", "wrangler.toml" };

typedef struct strvec {
	char **p;
	size_t n, cap;
} strvec;

/* The public struct and everything it points to. */
typedef struct config_impl {
	dobj_config pub;
	strvec owned;     /* strings the public fields point into */
	strvec flags;     /* compatibility_flags (pointers into owned) */
	strvec warnings;  /* owned */
	dobj_config_binding *bindings;
	dobj_val *vars, *migrations;
	dobj_val *root;   /* the parsed file: binding names and flags point into it */
	dobj_cluster_opts *cluster; /* one block (config_cluster.c) */
	const char *base; /* config file name, for messages */
} config_impl;

static int vec_push(strvec *v, char *s)
{
	if (!s)
		return DOBJ_ENOMEM;
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 8;
		char **p = realloc(v->p, cap * sizeof(*p));
		if (!p) {
			free(s);
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		}
		v->p = p;
		v->cap = cap;
	}
	v->p[v->n++] = s;
	return 0;
}

static void vec_free(strvec *v, int owns)
{
	size_t i;

	if (owns)
		for (i = 0; i < v->n; i++)
			free(v->p[i]);
	free(v->p);
	v->p = NULL;
	v->n = v->cap = 0;
}

static char *vfmt(const char *fmt, va_list ap)
{
	va_list cp;
	int n;
	char *s;

	va_copy(cp, ap);
	n = vsnprintf(NULL, 0, fmt, cp);
	va_end(cp);
	if (n < 0 || !(s = malloc((size_t)n + 1))) {
		dobj_error_set(DOBJ_ENOMEM, "out of memory");
		return NULL;
	}
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	return s;
}

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static char *fmt(const char *f, ...)
{
	va_list ap;
	char *s;

	va_start(ap, f);
	s = vfmt(f, ap);
	va_end(ap);
	return s;
}

/* A string the config keeps (NULL on out-of-memory). */
static const char *keep(config_impl *c, char *s)
{
	/* On failure vec_push frees s: the kept copy is read back from the
	 * vector so that no path reads s after that. */
	if (vec_push(&c->owned, s) < 0)
		return NULL;
	return c->owned.p[c->owned.n - 1];
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int warn(config_impl *c, const char *f, ...)
{
	va_list ap;
	char *s;

	va_start(ap, f);
	s = vfmt(f, ap);
	va_end(ap);
	return vec_push(&c->warnings, s);
}

/* ---------------------------------------------------------------- files */

static int is_file(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* An absolute form of path (the caller's), normalized as Node's
 * path.resolve does (wrangler's): "." and empty parts dropped, ".." taking
 * the part before it away, symbolic links left as they are. */
static char *absolute(const char *path)
{
	char cwd[PATH_MAX];
	char *joined, *out;
	size_t i = 0, o = 0, n;

	if (path[0] == '/') {
		joined = dobj__strndup(path, strlen(path));
	} else {
		if (!getcwd(cwd, sizeof(cwd))) {
			dobj_error_set(DOBJ_ERROR, "cannot read the current folder: %s", strerror(errno));
			return NULL;
		}
		joined = fmt("%s/%s", cwd, path);
	}
	if (!joined)
		return NULL;
	n = strlen(joined);
	if (!(out = malloc(n + 2))) {
		free(joined);
		dobj_error_set(DOBJ_ENOMEM, "out of memory");
		return NULL;
	}
	while (i < n) {
		size_t start, len;
		while (i < n && joined[i] == '/')
			i++;
		start = i;
		while (i < n && joined[i] != '/')
			i++;
		len = i - start;
		if (len == 0 || (len == 1 && joined[start] == '.'))
			continue;
		if (len == 2 && joined[start] == '.' && joined[start + 1] == '.') {
			while (o > 0 && out[o - 1] != '/')
				o--;
			if (o > 0)
				o--; /* the slash before the dropped part */
			continue;
		}
		out[o++] = '/';
		memcpy(out + o, joined + start, len);
		o += len;
	}
	if (o == 0)
		out[o++] = '/';
	out[o] = '\0';
	free(joined);
	return out;
}

static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash || slash == path)
		return dobj__strndup("/", 1);
	return dobj__strndup(path, (size_t)(slash - path));
}

/* wrangler's lookup: each name from `dir` upwards, in config_names order. */
static char *find_config(const char *dir)
{
	size_t i;

	for (i = 0; i < sizeof(config_names) / sizeof(config_names[0]); i++) {
		char *d = dobj__strndup(dir, strlen(dir));
		if (!d)
			return NULL;
		for (;;) {
			char *cand = fmt("%s/%s", strcmp(d, "/") == 0 ? "" : d, config_names[i]);
			char *up;
			if (!cand) {
				free(d);
				return NULL;
			}
			if (is_file(cand)) {
				free(d);
				return cand;
			}
			free(cand);
			if (strcmp(d, "/") == 0)
				break;
			up = dir_of(d);
			free(d);
			if (!(d = up))
				return NULL;
		}
		free(d);
	}
	dobj_error_set(DOBJ_EARG, "no wrangler.json, wrangler.jsonc or wrangler.toml in %s or a folder above it", dir);
	return NULL;
}

/* Reads a whole file (bounded); 1 with *data, 0 if it does not exist. */
static int read_file(const char *path, char **data, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	size_t n;

	*data = NULL;
	*len = 0;
	if (!f) {
		if (errno == ENOENT)
			return 0;
		return dobj_error_set(DOBJ_EARG, "%s: cannot read: %s", path, strerror(errno));
	}
	if (!(buf = malloc(DOBJ_CONFIG_MAX_BYTES + 1))) {
		fclose(f);
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	}
	n = fread(buf, 1, DOBJ_CONFIG_MAX_BYTES + 1, f);
	if (ferror(f)) {
		int e = errno;
		fclose(f);
		free(buf);
		return dobj_error_set(DOBJ_EARG, "%s: cannot read: %s", path, strerror(e));
	}
	fclose(f);
	if (n > DOBJ_CONFIG_MAX_BYTES) {
		free(buf);
		return dobj_error_set(DOBJ_EARG, "%s: the file is larger than %u bytes", path, DOBJ_CONFIG_MAX_BYTES);
	}
	*data = buf;
	*len = n;
	return 1;
}

/* -------------------------------------------------------- value checks */

#define BAD(c, ...) bad(c, __VA_ARGS__)

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int bad(const config_impl *c, const char *f, ...)
{
	char msg[400];
	va_list ap;

	va_start(ap, f);
	vsnprintf(msg, sizeof(msg), f, ap);
	va_end(ap);
	return dobj_error_set(DOBJ_EINVALID, "%s: %s", c->pub.path, msg);
}

/* obj[key] if it is a string (NULL if absent); an error if another type. */
static int get_str(const config_impl *c, const dobj_val *obj, const char *key, const char *where,
	const char **out)
{
	const dobj_val *v = dobj_val_get(obj, key, strlen(key));
	size_t len;

	*out = NULL;
	if (!v)
		return 0;
	if (dobj_val_type_of(v) != DOBJ_VAL_STRING)
		return BAD(c, "%s%s must be a string, not %s", where, key, dobj_val_type_name(v));
	*out = dobj_val_get_string(v, &len);
	if (strlen(*out) != len)
		return BAD(c, "%s%s contains a NUL character", where, key);
	return 0;
}

static int check_type(const config_impl *c, const dobj_val *v, dobj_val_type type, const char *what,
	const char *where, const char *key)
{
	if (v && dobj_val_type_of(v) != type)
		return BAD(c, "%s%s must be %s, not %s", where, key, what, dobj_val_type_name(v));
	return 0;
}

/* An array of strings (absent: an empty array) into *out (a new reference). */
static int str_array(const config_impl *c, const dobj_val *obj, const char *key, const char *where,
	dobj_val **out)
{
	const dobj_val *v = dobj_val_get(obj, key, strlen(key));
	size_t i;
	int rc;

	*out = NULL;
	if ((rc = check_type(c, v, DOBJ_VAL_ARRAY, "an array of strings", where, key)) < 0)
		return rc;
	for (i = 0; v && i < dobj_val_len(v); i++)
		if (dobj_val_type_of(dobj_val_at(v, i)) != DOBJ_VAL_STRING)
			return BAD(c, "%s%s[%zu] must be a string, not %s", where, key, i,
				dobj_val_type_name(dobj_val_at(v, i)));
	*out = v ? dobj_val_ref((dobj_val *)v) : dobj_val_array();
	return *out ? 0 : DOBJ_ENOMEM;
}

/* ------------------------------------------------------------ migrations */

/* A class as the migrations leave it.  A rename retires the old entry
 * (name NULL, `was` kept) and links the new one to it (`from`, index + 1),
 * so a binding can find the class's first name (its objects' ID key) and
 * the folders it had under earlier names. */
typedef struct classinfo {
	const char *name;
	const char *was;
	size_t from;
	int sqlite;
} classinfo;

typedef struct classes {
	classinfo *p;
	size_t n, cap;
} classes;

static classinfo *class_find(classes *cl, const char *name)
{
	size_t i;

	for (i = 0; i < cl->n; i++)
		if (cl->p[i].name && strcmp(cl->p[i].name, name) == 0)
			return &cl->p[i];
	return NULL;
}

static int class_add(classes *cl, const char *name, int sqlite)
{
	classinfo *ci = class_find(cl, name);

	if (ci) {
		ci->sqlite = sqlite;
		return 0;
	}
	if (cl->n == cl->cap) {
		size_t cap = cl->cap ? cl->cap * 2 : 8;
		classinfo *p = realloc(cl->p, cap * sizeof(*p));
		if (!p)
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		cl->p = p;
		cl->cap = cap;
	}
	cl->p[cl->n].name = cl->p[cl->n].was = name;
	cl->p[cl->n].from = 0;
	cl->p[cl->n++].sqlite = sqlite;
	return 0;
}

/* Checks and normalizes the migrations; records the classes they create
 * (following renames and deletions) in cl. */
static int read_migrations(config_impl *c, const dobj_val *raw, const char *where, classes *cl)
{
	static const char *const lists[] = { "new_classes", "new_sqlite_classes", "deleted_classes" };
	char at[256];
	size_t i, j, k;
	int rc;

	if (!(c->migrations = dobj_val_array()))
		return DOBJ_ENOMEM;
	if (!raw)
		return 0;
	if ((rc = check_type(c, raw, DOBJ_VAL_ARRAY, "an array of tables", where, "migrations")) < 0)
		return rc;
	for (i = 0; i < dobj_val_len(raw); i++) {
		const dobj_val *m = dobj_val_at(raw, i);
		dobj_val *out, *arr[3], *renames = NULL, *ren_raw;
		const char *tag;

		snprintf(at, sizeof(at), "%.160smigrations[%zu].", where, i);
		if (dobj_val_type_of(m) != DOBJ_VAL_OBJECT)
			return BAD(c, "%smigrations[%zu] must be a table, not %s", where, i, dobj_val_type_name(m));
		if ((rc = get_str(c, m, "tag", at, &tag)) < 0)
			return rc;
		if (!tag)
			return BAD(c, "%stag is required", at);
		if (!(out = dobj_val_object()))
			return DOBJ_ENOMEM;
		if ((rc = dobj_val_put(out, "tag", 3, dobj_val_string(tag, strlen(tag)))) < 0) {
			dobj_val_free(out);
			return rc;
		}
		memset(arr, 0, sizeof(arr));
		for (k = 0; k < 3; k++) {
			if ((rc = str_array(c, m, lists[k], at, &arr[k])) < 0) {
				while (k--)
					dobj_val_free(arr[k]);
				dobj_val_free(out);
				return rc;
			}
		}
		ren_raw = dobj_val_get(m, "renamed_classes", 15);
		rc = check_type(c, ren_raw, DOBJ_VAL_ARRAY, "an array of {from, to} tables", at, "renamed_classes");
		if (rc == 0 && !(renames = dobj_val_array()))
			rc = DOBJ_ENOMEM;
		for (j = 0; rc == 0 && ren_raw && j < dobj_val_len(ren_raw); j++) {
			const dobj_val *r = dobj_val_at(ren_raw, j);
			const char *from, *to;
			char rat[400];
			dobj_val *pair;
			snprintf(rat, sizeof(rat), "%.200srenamed_classes[%zu].", at, j);
			if (dobj_val_type_of(r) != DOBJ_VAL_OBJECT) {
				rc = BAD(c, "%srenamed_classes[%zu] must be a {from, to} table", at, j);
				break;
			}
			if ((rc = get_str(c, r, "from", rat, &from)) < 0 || (rc = get_str(c, r, "to", rat, &to)) < 0)
				break;
			if (!from || !to) {
				rc = BAD(c, "%s%s is required", rat, from ? "to" : "from");
				break;
			}
			if (!(pair = dobj_val_object())) {
				rc = DOBJ_ENOMEM;
				break;
			}
			if ((rc = dobj_val_put(pair, "from", 4, dobj_val_string(from, strlen(from)))) < 0 ||
			    (rc = dobj_val_put(pair, "to", 2, dobj_val_string(to, strlen(to)))) < 0) {
				dobj_val_free(pair);
				break;
			}
			if ((rc = dobj_val_push(renames, pair)) < 0) /* frees pair */
				break;
		}
		if (rc == 0)
			rc = dobj_val_put(out, "new_classes", 11, arr[0]);
		else
			dobj_val_free(arr[0]);
		if (rc == 0)
			rc = dobj_val_put(out, "new_sqlite_classes", 18, arr[1]);
		else
			dobj_val_free(arr[1]);
		if (rc == 0)
			rc = dobj_val_put(out, "renamed_classes", 15, renames);
		else
			dobj_val_free(renames);
		if (rc == 0)
			rc = dobj_val_put(out, "deleted_classes", 15, arr[2]);
		else
			dobj_val_free(arr[2]);
		if (rc == 0)
			rc = dobj_val_push(c->migrations, out);
		else
			dobj_val_free(out);
		if (rc < 0)
			return rc;
	}
	/* What each migration does to the set of classes, in order. */
	for (i = 0; i < dobj_val_len(c->migrations); i++) {
		const dobj_val *m = dobj_val_at(c->migrations, i);
		const dobj_val *v;
		size_t len;
		v = dobj_val_get(m, "new_classes", 11);
		for (j = 0; j < dobj_val_len(v); j++)
			if ((rc = class_add(cl, dobj_val_get_string(dobj_val_at(v, j), &len), 0)) < 0)
				return rc;
		v = dobj_val_get(m, "new_sqlite_classes", 18);
		for (j = 0; j < dobj_val_len(v); j++)
			if ((rc = class_add(cl, dobj_val_get_string(dobj_val_at(v, j), &len), 1)) < 0)
				return rc;
		v = dobj_val_get(m, "renamed_classes", 15);
		for (j = 0; j < dobj_val_len(v); j++) {
			const dobj_val *r = dobj_val_at(v, j);
			classinfo *ci = class_find(cl, dobj_val_get_string(dobj_val_get(r, "from", 4), &len));
			const char *to = dobj_val_get_string(dobj_val_get(r, "to", 2), &len);
			int sqlite = ci ? ci->sqlite : 0;
			size_t from = ci ? (size_t)(ci - cl->p) + 1 : 0;
			if (ci)
				ci->name = NULL;
			if (class_find(cl, to))
				return BAD(c, "%smigrations[%zu].renamed_classes[%zu]: class \"%s\" already exists",
					where, i, j, to);
			if ((rc = class_add(cl, to, sqlite)) < 0)
				return rc;
			cl->p[cl->n - 1].from = from;
		}
		v = dobj_val_get(m, "deleted_classes", 15);
		for (j = 0; j < dobj_val_len(v); j++) {
			classinfo *ci = class_find(cl, dobj_val_get_string(dobj_val_at(v, j), &len));
			if (ci)
				ci->name = NULL;
		}
	}
	return 0;
}

/* -------------------------------------------------------------- bindings */

/* A class renamed by the migrations keeps its objects, as on Cloudflare:
 * their IDs still derive from the class's first name, and its storage
 * moves (dobj_config_move_renamed) from the folders of its earlier names,
 * newest first, to the folder of its current one. */
static int renamed_binding(config_impl *c, classes *cl, const classinfo *ci, dobj_config_binding *out)
{
	const classinfo *p;
	size_t n = 0, k = 0;
	const char **dirs;

	for (p = ci; p->from; p = &cl->p[p->from - 1])
		n++;
	if (!(out->id_key = keep(c, fmt("%s-%s", c->pub.worker_name, p->was))))
		return DOBJ_ENOMEM;
	if (!(dirs = calloc(n + 1, sizeof(*dirs))))
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	if (vec_push(&c->owned, (char *)dirs) < 0)
		return DOBJ_ENOMEM;
	for (p = &cl->p[ci->from - 1]; ; p = &cl->p[p->from - 1]) {
		char *key = fmt("%s-%s", c->pub.worker_name, p->was);
		if (!key)
			return DOBJ_ENOMEM;
		size_t d;
		/* A name that cannot name a folder had none; the current name (a
		 * class renamed back, or to itself) is not an earlier folder; a
		 * name taken twice is one folder. */
		int skip = dobj__storage_check_unique_key(key, strlen(key)) < 0 ||
			strcmp(key, out->unique_key) == 0;
		for (d = 0; !skip && d < k; d++)
			skip = strcmp(dirs[d] + strlen(c->pub.state_dir) + 1, key) == 0;
		if (skip) {
			free(key);
			if (!p->from)
				break;
			continue;
		}
		if (!(dirs[k++] = keep(c, fmt("%s/%s", c->pub.state_dir, key)))) {
			free(key);
			return DOBJ_ENOMEM;
		}
		free(key);
		if (!p->from)
			break;
	}
	out->former_dirs = dirs;
	out->former_dirs_len = k;
	return 0;
}

static int read_bindings(config_impl *c, const dobj_val *dobjs, const char *where, classes *cl)
{
	const dobj_val *list;
	char at[256];
	size_t i, j, n;
	int rc;
	strvec missing = { 0 };

	if (!dobjs)
		return 0;
	if ((rc = check_type(c, dobjs, DOBJ_VAL_OBJECT, "a table", where, "durable_objects")) < 0)
		return rc;
	list = dobj_val_get(dobjs, "bindings", 8);
	snprintf(at, sizeof(at), "%.160sdurable_objects.", where);
	if (!list)
		return 0;
	if ((rc = check_type(c, list, DOBJ_VAL_ARRAY, "an array of tables", at, "bindings")) < 0)
		return rc;
	n = dobj_val_len(list);
	if (n && !(c->bindings = calloc(n, sizeof(*c->bindings))))
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	for (i = 0; i < n; i++) {
		const dobj_val *b = dobj_val_at(list, i);
		dobj_config_binding *out = &c->bindings[i];
		const char *name, *cls, *other;
		char bat[256];
		classinfo *ci;

		snprintf(bat, sizeof(bat), "%.160sdurable_objects.bindings[%zu].", where, i);
		if (dobj_val_type_of(b) != DOBJ_VAL_OBJECT)
			{ rc = BAD(c, "%sdurable_objects.bindings[%zu] must be a table, not %s", where, i,
				dobj_val_type_name(b)); goto out; }
		if ((rc = get_str(c, b, "name", bat, &name)) < 0 || (rc = get_str(c, b, "class_name", bat, &cls)) < 0)
			goto out;
		if (!name || !*name)
			{ rc = BAD(c, "%sname is required (the binding's name in env)", bat); goto out; }
		if (!cls || !*cls)
			{ rc = BAD(c, "%sclass_name is required (binding \"%s\")", bat, name); goto out; }
		if (dobj_val_get(b, "script_name", 11) || dobj_val_get(b, "environment", 11)) {
			const char *key = dobj_val_get(b, "script_name", 11) ? "script_name" : "environment";
			(void)get_str(c, b, key, bat, &other);
			{ rc = BAD(c, "%s%s is not supported (binding \"%s\": dobj runs the classes of this "
				"Worker only, not those of another Worker)", bat, key, name); goto out; }
		}
		for (j = 0; j < i; j++)
			if (strcmp(c->bindings[j].binding, name) == 0)
				{ rc = BAD(c, "%sname \"%s\" is bound twice (also durable_objects.bindings[%zu])", bat, name, j); goto out; }
		out->binding = name;
		out->class_name = cls;
		if (!(out->unique_key = keep(c, fmt("%s-%s", c->pub.worker_name, cls))))
			{ rc = DOBJ_ENOMEM; goto out; }
		if (dobj__storage_check_unique_key(out->unique_key, strlen(out->unique_key)) < 0)
			{ rc = BAD(c, "%sclass_name \"%s\": the namespace's key \"%s\" cannot name a folder "
				"(no '/', '.' or '..')", bat, cls, out->unique_key); goto out; }
		if (!(out->storage_dir = keep(c, fmt("%s/%s", c->pub.state_dir, out->unique_key))))
			{ rc = DOBJ_ENOMEM; goto out; }
		ci = class_find(cl, cls);
		out->sqlite = ci ? ci->sqlite : 0;
		out->id_key = out->unique_key;
		if (ci && ci->from && (rc = renamed_binding(c, cl, ci, out)) < 0)
			goto out;
		if (!ci) {
			for (j = 0; j < missing.n && strcmp(missing.p[j], cls) != 0; j++)
				;
			if (j == missing.n && (rc = vec_push(&missing, dobj__strndup(cls, strlen(cls)))) < 0)
				goto out;
		}
		c->pub.bindings_len = i + 1;
	}
	c->pub.bindings = c->bindings;
	if (missing.n) {
		/* wrangler's warning, with its suggested migration. */
		size_t cap = 1, o = 0;
		char *names, *quoted;
		int toml;
		for (j = 0; j < missing.n; j++)
			cap += strlen(missing.p[j]) + 12;
		names = malloc(cap);
		quoted = malloc(cap);
		if (!names || !quoted) {
			free(names);
			free(quoted);
			rc = dobj_error_set(DOBJ_ENOMEM, "out of memory");
			goto out;
		}
		names[0] = quoted[0] = '\0';
		toml = strlen(c->base) >= 5 && strcmp(c->base + strlen(c->base) - 5, ".toml") == 0;
		for (j = 0; j < missing.n; j++) {
			o += (size_t)sprintf(names + strlen(names), "%s%s", j ? ", " : "", missing.p[j]);
			/* TOML.stringify writes [ "A", "B" ]; JSON.stringify(_, null, 2)
			 * one name a line. */
			sprintf(quoted + strlen(quoted), "%s\"%s\"", j ? (toml ? ", " : ",\n        ") : "", missing.p[j]);
		}
		(void)o;
		if (toml)
			rc = warn(c, "In your %s file, you have configured `durable_objects` exported by this Worker "
				"(%s), but no `migrations` for them. This may not work as expected until you add a "
				"`migrations` section to your %s file. Add the following configuration:\n\n```\n"
				"[[migrations]]\ntag = \"v1\"\nnew_classes = [ %s ]\n\n```\n\nRefer to "
				"https://developers.cloudflare.com/durable-objects/reference/durable-objects-migrations/ "
				"for more details.", c->base, names, c->base, quoted);
		else
			rc = warn(c, "In your %s file, you have configured `durable_objects` exported by this Worker "
				"(%s), but no `migrations` for them. This may not work as expected until you add a "
				"`migrations` section to your %s file. Add the following configuration:\n\n```\n"
				"{\n  \"migrations\": [\n    {\n      \"tag\": \"v1\",\n      \"new_classes\": [\n        %s\n"
				"      ]\n    }\n  ]\n}\n```\n\nRefer to "
				"https://developers.cloudflare.com/durable-objects/reference/durable-objects-migrations/ "
				"for more details.", c->base, names, c->base, quoted);
		free(names);
		free(quoted);
	}
out:
	vec_free(&missing, 1);
	return rc;
}

/* ---------------------------------------------------------------- vars */

static int read_vars(config_impl *c, const dobj_val *vars, const char *where)
{
	size_t i, len;
	int rc;

	if (!(c->vars = dobj_val_object()))
		return DOBJ_ENOMEM;
	if (!vars)
		return 0;
	if ((rc = check_type(c, vars, DOBJ_VAL_OBJECT, "a table", where, "vars")) < 0)
		return rc;
	for (i = 0; i < dobj_val_len(vars); i++) {
		const char *k = dobj_val_key_at(vars, i, &len);
		if ((rc = dobj_val_put(c->vars, k, len, dobj_val_ref(dobj_val_at(vars, i)))) < 0)
			return rc;
	}
	return 0;
}

/* Merges a dotenv file into vars; 1 if it existed. */
static int merge_dotenv(config_impl *c, const char *path)
{
	char *data;
	size_t len, i, klen;
	dobj_val *kv = NULL;
	int rc = read_file(path, &data, &len);

	if (rc <= 0)
		return rc;
	rc = dobj_config_parse_dotenv(&kv, data, len, path);
	free(data);
	for (i = 0; rc == 0 && i < dobj_val_len(kv); i++) {
		const char *k = dobj_val_key_at(kv, i, &klen);
		rc = dobj_val_put(c->vars, k, klen, dobj_val_ref(dobj_val_at(kv, i)));
	}
	dobj_val_free(kv);
	if (rc == 0 && !c->pub.dev_vars_path && !(c->pub.dev_vars_path = keep(c, dobj__strndup(path, strlen(path)))))
		rc = DOBJ_ENOMEM;
	return rc < 0 ? rc : 1;
}

static int read_dev_vars(config_impl *c, const char *env)
{
	const char *d = c->pub.dir;
	char *p;
	int rc;

	if (env) {
		if (!(p = fmt("%s/.dev.vars.%s", d, env)))
			return DOBJ_ENOMEM;
		rc = merge_dotenv(c, p);
		free(p);
		if (rc != 0)
			return rc < 0 ? rc : 0;
	}
	if (!(p = fmt("%s/.dev.vars", d)))
		return DOBJ_ENOMEM;
	rc = merge_dotenv(c, p);
	free(p);
	if (rc != 0)
		return rc < 0 ? rc : 0;
	{
		/* No .dev.vars: the .env files, the more specific winning. */
		size_t i;
		for (i = 0; i < 4; i++) {
			int with_env = i == 1 || i == 3;
			if (with_env && !env)
				continue;
			p = with_env ? (i == 1 ? fmt("%s/.env.%s", d, env) : fmt("%s/.env.%s.local", d, env)) :
				(i == 0 ? fmt("%s/.env", d) : fmt("%s/.env.local", d));
			if (!p)
				return DOBJ_ENOMEM;
			rc = merge_dotenv(c, p);
			free(p);
			if (rc < 0)
				return rc;
		}
		return 0;
	}
}

/* ------------------------------------------------------------------ load */

static int folder_exists(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

int dobj_config_move_renamed(const dobj_config *cfg)
{
	size_t i, j;
	int rc;

	if (!cfg)
		return dobj_error_set(DOBJ_EARG, "no configuration");
	if ((rc = dobj__cluster_move_renamed(cfg)) < 0)
		return rc;
	for (i = 0; i < cfg->bindings_len; i++) {
		const dobj_config_binding *b = &cfg->bindings[i];
		const char *found = NULL;

		if (!b->former_dirs_len)
			continue;
		for (j = 0; j < b->former_dirs_len; j++) {
			if (!folder_exists(b->former_dirs[j]))
				continue;
			if (found)
				return dobj_error_set(DOBJ_ESTATE, "class %s (binding %s) was renamed, and the "
					"folders of two of its earlier names exist: %s and %s; move the one to keep "
					"to %s", b->class_name, b->binding, found, b->former_dirs[j], b->storage_dir);
			found = b->former_dirs[j];
		}
		if (!found)
			continue;
		if (folder_exists(b->storage_dir))
			return dobj_error_set(DOBJ_ESTATE, "class %s (binding %s) was renamed, and both its "
				"folder %s and the folder of its earlier name %s exist; remove or merge one",
				b->class_name, b->binding, b->storage_dir, found);
		if ((rc = dobj__folder_move(found, b->storage_dir)) < 0)
			return rc;
	}
	return DOBJ_OK;
}

void dobj_config_free(dobj_config *cfg)
{
	config_impl *c = (config_impl *)cfg;

	if (!c)
		return;
	vec_free(&c->owned, 1);
	vec_free(&c->flags, 0);
	vec_free(&c->warnings, 1);
	free(c->bindings);
	dobj_val_free(c->vars);
	dobj_val_free(c->migrations);
	dobj_val_free(c->root);
	free(c->cluster);
	free(c);
}

/* A top-level value, or the environment's (*where says which). */
static const dobj_val *pick(const dobj_val *root, const dobj_val *envobj, const char *key,
	const char **where, const char *env_where)
{
	const dobj_val *v = envobj ? dobj_val_get(envobj, key, strlen(key)) : NULL;

	if (v) {
		*where = env_where;
		return v;
	}
	*where = "";
	return dobj_val_get(root, key, strlen(key));
}

int dobj_config_load(dobj_config **out, const dobj_config_opts *opts)
{
	static const dobj_config_opts defaults = DOBJ_CONFIG_OPTS_INIT;
	config_impl *c;
	dobj_val *root = NULL;
	const dobj_val *envs = NULL, *envobj = NULL, *v;
	const char *env, *where, *s, *top_name;
	char *start = NULL, *data = NULL, env_where[160];
	classes cl = { 0 };
	size_t len, i;
	int rc, json;

	if (!out)
		return dobj_error_set(DOBJ_EARG, "dobj_config_load needs an out pointer");
	*out = NULL;
	if (!opts)
		opts = &defaults;
	if (opts->version != 1 && opts->version != DOBJ_CONFIG_OPTS_VERSION)
		return dobj_error_set(DOBJ_EARG, "dobj_config_opts: unknown version %u", opts->version);
	if (!(c = calloc(1, sizeof(*c))))
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");

	/* Which file. */
	if (!(start = absolute(opts->path && *opts->path ? opts->path : "."))) {
		rc = dobj_error_last_code() ? dobj_error_last_code() : DOBJ_ENOMEM;
		goto error;
	}
	if (is_dir(start)) {
		char *found = find_config(start);
		if (!found) {
			rc = dobj_error_last_code();
			goto error;
		}
		c->pub.path = keep(c, found);
	} else if (is_file(start)) {
		c->pub.path = keep(c, start);
		start = NULL;
	} else {
		rc = dobj_error_set(DOBJ_EARG, "%s: no such file or folder", start);
		goto error;
	}
	if (!c->pub.path || !(c->pub.dir = keep(c, dir_of(c->pub.path)))) {
		rc = DOBJ_ENOMEM;
		goto error;
	}
	c->base = strrchr(c->pub.path, '/') + 1;
	len = strlen(c->base);
	if (len >= 5 && strcmp(c->base + len - 5, ".toml") == 0) {
		json = 0;
	} else if ((len >= 5 && strcmp(c->base + len - 5, ".json") == 0) ||
		   (len >= 6 && strcmp(c->base + len - 6, ".jsonc") == 0)) {
		json = 1;
	} else {
		rc = dobj_error_set(DOBJ_EARG, "%s: a config file's name ends in .toml, .json or .jsonc", c->pub.path);
		goto error;
	}
	if ((rc = read_file(c->pub.path, &data, &len)) <= 0) {
		if (rc == 0)
			rc = dobj_error_set(DOBJ_EARG, "%s: no such file", c->pub.path);
		goto error;
	}
	if ((rc = dobj_config_parse(&root, data, len, json ? DOBJ_CONFIG_JSONC : DOBJ_CONFIG_TOML,
			c->pub.path)) < 0)
		goto error;
	c->root = root;
	if (dobj_val_type_of(root) != DOBJ_VAL_OBJECT) {
		rc = BAD(c, "the configuration must be a%s, not %s", json ? "n object" : " table",
			dobj_val_type_name(root));
		goto error;
	}

	/* Which environment. */
	env = opts->env ? opts->env : getenv("CLOUDFLARE_ENV");
	if (env && !*env)
		env = NULL;
	envs = dobj_val_get(root, "env", 3);
	if ((rc = check_type(c, envs, DOBJ_VAL_OBJECT, "a table of environments", "", "env")) < 0)
		goto error;
	if (env) {
		if (!(c->pub.env = keep(c, dobj__strndup(env, strlen(env))))) {
			rc = DOBJ_ENOMEM;
			goto error;
		}
		envobj = dobj_val_get(envs, env, strlen(env));
		snprintf(env_where, sizeof(env_where), "env.%.100s.", env);
		if (envobj && dobj_val_type_of(envobj) != DOBJ_VAL_OBJECT) {
			rc = BAD(c, "env.%s must be a table, not %s", env, dobj_val_type_name(envobj));
			goto error;
		}
		if (!envobj) {
			/* wrangler: an error when the config names other
			 * environments, else a warning and the top level. */
			size_t cap = 2;
			char *names;
			for (i = 0; envs && i < dobj_val_len(envs); i++)
				cap += strlen(dobj_val_key_at(envs, i, &len)) + 3;
			if (!(names = malloc(cap))) {
				rc = DOBJ_ENOMEM;
				goto error;
			}
			names[0] = '\0';
			for (i = 0; envs && i < dobj_val_len(envs); i++)
				sprintf(names + strlen(names), "%s\"%s\"", i ? "," : "", dobj_val_key_at(envs, i, &len));
			if (envs && dobj_val_len(envs)) {
				rc = dobj_error_set(DOBJ_EARG, "%s: No environment found in configuration with name \"%s\".\n"
					"Before using `--env=%s` there should be an equivalent environment section in the "
					"configuration.\nThe available configured environment names are: [%s]\n",
					c->pub.path, env, env, names);
				free(names);
				goto error;
			}
			free(names);
			if ((rc = warn(c, "No environment found in configuration with name \"%s\".\n"
					"Before using `--env=%s` there should be an equivalent environment section in the "
					"configuration.\n\nConsider adding an environment configuration section to the %s "
					"file:\n```\n[env.%s]\n```\n", env, env, c->base, env)) < 0)
				goto error;
		}
	}

	/* Inherited keys. */
	if ((rc = get_str(c, root, "name", "", &top_name)) < 0)
		goto error;
	if (envobj && dobj_val_get(envobj, "name", 4)) {
		if ((rc = get_str(c, envobj, "name", env_where, &s)) < 0)
			goto error;
		c->pub.name = s;
	} else if (env && top_name) {
		if (!(c->pub.name = keep(c, fmt("%s-%s", top_name, env)))) {
			rc = DOBJ_ENOMEM;
			goto error;
		}
	} else {
		c->pub.name = top_name;
	}
	c->pub.worker_name = c->pub.name && *c->pub.name ? c->pub.name : "worker";
	v = pick(root, envobj, "main", &where, env_where);
	if (v) {
		if ((rc = get_str(c, *where ? envobj : root, "main", where, &s)) < 0)
			goto error;
		if (s && *s) {
			char *joined = s[0] == '/' ? dobj__strndup(s, strlen(s)) : fmt("%s/%s", c->pub.dir, s);
			char *m = joined ? absolute(joined) : NULL;
			free(joined);
			if (!(c->pub.main = keep(c, m))) {
				rc = DOBJ_ENOMEM;
				goto error;
			}
		}
	}
	v = pick(root, envobj, "compatibility_date", &where, env_where);
	if (v && (rc = get_str(c, *where ? envobj : root, "compatibility_date", where, &c->pub.compatibility_date)) < 0)
		goto error;
	v = pick(root, envobj, "compatibility_flags", &where, env_where);
	if (v) {
		dobj_val *flags;
		if ((rc = str_array(c, *where ? envobj : root, "compatibility_flags", where, &flags)) < 0)
			goto error;
		for (i = 0; i < dobj_val_len(flags) && rc == 0; i++) {
			rc = vec_push(&c->flags, (char *)dobj_val_get_string(dobj_val_at(flags, i), &len));
		}
		/* The strings live in root, which the config keeps below. */
		dobj_val_free(flags);
		if (rc < 0)
			goto error;
		c->pub.compatibility_flags = (const char *const *)c->flags.p;
		c->pub.compatibility_flags_len = c->flags.n;
	}
	v = pick(root, envobj, "migrations", &where, env_where);
	if ((rc = read_migrations(c, v, where, &cl)) < 0)
		goto error;
	v = pick(root, envobj, "dobj", &where, env_where);
	if ((rc = dobj__config_cluster(&c->cluster, c->pub.path, v, where,
			opts->version >= 2 ? &opts->cluster : NULL)) < 0)
		goto error;
	c->pub.cluster = c->cluster;

	/* The state folder. */
	if (opts->persist_to && *opts->persist_to) {
		char *p = absolute(opts->persist_to);
		if (!p || !(c->pub.state_dir = keep(c, fmt("%s/v3/do", strcmp(p, "/") == 0 ? "" : p)))) {
			free(p);
			rc = DOBJ_ENOMEM;
			goto error;
		}
		free(p);
	} else if (!(c->pub.state_dir = keep(c, fmt("%s/.wrangler/state/v3/do",
			strcmp(c->pub.dir, "/") == 0 ? "" : c->pub.dir)))) {
		rc = DOBJ_ENOMEM;
		goto error;
	}

	/* Keys environments do not inherit. */
	if (envobj) {
		static const char *const own[] = { "vars", "durable_objects" };
		for (i = 0; i < 2; i++)
			if (dobj_val_get(root, own[i], strlen(own[i])) && !dobj_val_get(envobj, own[i], strlen(own[i])) &&
			    (rc = warn(c, "\"%s\" exists at the top level, but not on \"env.%s\".\n"
					"This is not what you probably want, since \"%s\" is not inherited by environments.\n"
					"Please add \"%s\" to \"env.%s\".", own[i], env, own[i], own[i], env)) < 0)
				goto error;
	}
	{
		const dobj_val *src = envobj ? envobj : root;
		const char *w = envobj ? env_where : "";
		if ((rc = read_vars(c, dobj_val_get(src, "vars", 4), w)) < 0)
			goto error;
		if ((rc = read_bindings(c, dobj_val_get(src, "durable_objects", 15), w, &cl)) < 0)
			goto error;
	}
	if ((rc = read_dev_vars(c, env)) < 0)
		goto error;
	c->pub.vars = c->vars;
	c->pub.migrations = c->migrations;
	c->pub.warnings = (const char *const *)c->warnings.p;
	c->pub.warnings_len = c->warnings.n;
	goto done;
error:
	dobj_config_free(&c->pub);
	c = NULL;
done:
	free(cl.p);
	free(start);
	free(data);
	if (c) {
		*out = &c->pub;
		return 0;
	}
	return rc < 0 ? rc : DOBJ_ERROR;
}
