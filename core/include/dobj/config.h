/**
 * dobj/config.h — a Workers project's wrangler configuration, read once in
 * the core so that Python and Lua apply the same rules.
 *
 * Two layers:
 * - dobj_config_parse(): TOML 1.0 or JSONC text -> a dobj_val tree (objects,
 *   arrays, strings, numbers, booleans; JSON null).  Bounded: input size,
 *   nesting depth and entries per table are capped; any input either
 *   parses or fails with a message naming the file, the line and column.
 * - dobj_config_load(): finds `wrangler.json` / `wrangler.jsonc` /
 *   `wrangler.toml`, applies wrangler's environment rules (`[env.NAME]`),
 *   reads `.dev.vars` / `.env`, and says where each Durable Object
 *   namespace keeps its state (Miniflare's layout, so `wrangler dev` and
 *   dobj share a project's state folder).
 *
 * Included by dobj.h; do not include directly.
 */
#ifndef DOBJ_CONFIG_H
#define DOBJ_CONFIG_H

/** Input size cap of dobj_config_parse (bytes). */
#define DOBJ_CONFIG_MAX_BYTES (1u << 20)
/** Nesting cap: tables, arrays, dotted-key parts, counted together. */
#define DOBJ_CONFIG_MAX_DEPTH 64
/** Entries per table / object (keeps key lookup cheap on hostile input). */
#define DOBJ_CONFIG_MAX_ENTRIES 10000

typedef enum dobj_config_format {
	DOBJ_CONFIG_TOML = 1,
	/** JSON with // and block comments and trailing commas (plain JSON too). */
	DOBJ_CONFIG_JSONC = 2
} dobj_config_format;

/**
 * Parse `len` bytes of TOML or JSONC into a tree (*out, the caller's:
 * dobj_val_free).  TOML integers (64-bit) and JSON numbers without a
 * fraction or exponent (up to 1000 digits) are integers, other numbers
 * floats: see dobj_config_is_integer.  TOML dates and times are refused
 * ("not supported").  DOBJ_EINVALID with "<filename>:<line>:<col>: what" for
 * bad syntax, DOBJ_EARG for input over DOBJ_CONFIG_MAX_BYTES.  `filename`
 * (may be NULL) only names the input in messages.
 */
DOBJ_API int dobj_config_parse(dobj_val **out, const char *text, size_t len,
	dobj_config_format format, const char *filename);

/**
 * Is v an integer of a config tree (as TOML and JSON tell integers from
 * floats)?  Config integers are numbers in V8's Smi range written `I`, or
 * BigInts beyond it; every other number is a float, even a whole one
 * (`3e9`, `1.0`).  Bindings show integers as Python int / Lua integer.
 */
DOBJ_API int dobj_config_is_integer(const dobj_val *v);

/** One Durable Object binding of the resolved configuration. */
typedef struct dobj_config_binding {
	const char *binding;     /**< name in env (`durable_objects.bindings[].name`) */
	const char *class_name;  /**< the class */
	/** Miniflare's unique key: "<worker name>-<class_name>" (the ID key). */
	const char *unique_key;
	/** The namespace's folder: "<state_dir>/<unique_key>". */
	const char *storage_dir;
	/** 1 if the class was created by `new_sqlite_classes` (after renames). */
	int sqlite;
	/** The key the namespace's IDs derive from: unique_key, except for a
	 *  class renamed by `renamed_classes`, whose objects keep their IDs
	 *  (as on Cloudflare): "<worker name>-<the class's first name>". */
	const char *id_key;
	/** A renamed class's folders under its earlier names, newest first
	 *  (dobj_config_move_renamed moves the one that exists). */
	const char *const *former_dirs;
	size_t former_dirs_len;
} dobj_config_binding;

/**
 * A resolved configuration: read-only, owned by the core, freed with
 * dobj_config_free().  Paths are absolute.
 */
typedef struct dobj_config {
	const char *path;        /**< the config file read */
	const char *dir;         /**< its folder */
	const char *env;         /**< the environment applied, NULL for the top level */
	/** The Worker's name ("<name>-<env>" in an environment), NULL if none. */
	const char *name;
	/** The name unique keys use: `name`, or "worker" when there is none. */
	const char *worker_name;
	const char *main;        /**< the entry, resolved against dir; NULL if none */
	const char *compatibility_date;          /**< NULL if none */
	const char *const *compatibility_flags;
	size_t compatibility_flags_len;
	/** `vars` of the environment, overridden by the dev vars file (an object;
	 *  values as written in the config, strings from the dev vars file). */
	const dobj_val *vars;
	const char *dev_vars_path; /**< the secrets file read, NULL if none */
	const dobj_config_binding *bindings;
	size_t bindings_len;
	/** The migrations in effect: an array of objects, each with `tag` and
	 *  arrays `new_classes`, `new_sqlite_classes`, `renamed_classes`
	 *  (objects {from, to}) and `deleted_classes` (empty when absent). */
	const dobj_val *migrations;
	/** The Durable Object state root: ".wrangler/state/v3/do" next to the
	 *  config, or "<persist_to>/v3/do". */
	const char *state_dir;
	/** Warnings, worded as wrangler words them (a binding prints them). */
	const char *const *warnings;
	size_t warnings_len;
	/** Cluster mode (docs/cluster.md): the settings in effect, for
	 *  dobj_rt_cluster; NULL when no source names a cluster URL.  Each
	 *  setting comes from the first of: dobj_config_opts.cluster (a flag),
	 *  the environment (DOBJ_CLUSTER_URL, DOBJ_NODE_ADDR, DOBJ_CLUSTER_TTL,
	 *  DOBJ_CLUSTER_GRACE, DOBJ_CLUSTER_TIMEOUT; seconds; an empty variable
	 *  counts as unset), the file's `[dobj.cluster]` table (`url`,
	 *  `node_addr`, `ttl`, `grace`, `timeout`; `[env.NAME.dobj.cluster]` in
	 *  an environment, which replaces the top level's).  Without a node
	 *  address from any of them, `node_addr` is "127.0.0.1:0" (a project
	 *  serves its objects).  The numbers are in
	 *  dobj_cluster_opts' terms (ms; grace_ms < 0 for a grace of 0 s). */
	const dobj_cluster_opts *cluster;
} dobj_config;

typedef struct dobj_config_opts {
	unsigned version;        /**< DOBJ_CONFIG_OPTS_VERSION */
	/** A config file, or a folder to search (and its parents, as wrangler
	 *  does); NULL = the current folder. */
	const char *path;
	/** The environment; NULL = $CLOUDFLARE_ENV; "" = the top level. */
	const char *env;
	/** State folder as `wrangler dev --persist-to DIR` (relative to the
	 *  current folder); NULL = "<config dir>/.wrangler/state". */
	const char *persist_to;
	/** (version 2) Cluster settings given by the caller (`dobj dev
	 *  --cluster URL --node-addr HOST:PORT`, keyword arguments): each field
	 *  set (a non-NULL string, a non-zero number) wins over the environment
	 *  and the file.  `cluster.call_timeout_ms` is read when
	 *  `cluster.version` >= 2 (DOBJ_CONFIG_OPTS_INIT sets it). */
	dobj_cluster_opts cluster;
} dobj_config_opts;
#define DOBJ_CONFIG_OPTS_VERSION 2
#define DOBJ_CONFIG_OPTS_INIT { DOBJ_CONFIG_OPTS_VERSION, 0, 0, 0, DOBJ_CLUSTER_OPTS_INIT }

/**
 * Find, read and resolve a project's configuration (*out is the caller's:
 * dobj_config_free); version 1 options (without `cluster`) are accepted.
 * Which file: `wrangler.json`, then `wrangler.jsonc`, then `wrangler.toml`,
 * each looked for from the folder upwards (wrangler's order).  Fails with
 * a message naming the file and the key (or the environment variable):
 * DOBJ_EINVALID for bad syntax or a bad value, DOBJ_EARG for a missing file
 * or an unknown environment, DOBJ_ENOMEM.
 */
DOBJ_API int dobj_config_load(dobj_config **out, const dobj_config_opts *opts);
DOBJ_API void dobj_config_free(dobj_config *cfg);

/**
 * Apply `renamed_classes` to the state folder, once, before the project's
 * namespaces are bound: a renamed class's storage folder moves from the
 * folder of its earlier name to that of its current one (each binding's
 * storage_dir), so its objects and alarms carry over.  Nothing to do when
 * the new folder exists already or no earlier one does.  Fails, moving
 * nothing for that binding, when the new folder and an earlier one both
 * exist or two earlier ones do (DOBJ_ESTATE: which folder holds the data
 * is for the user to say), or when a folder is in use by a namespace of
 * this process or locked by another process.  In cluster mode
 * (cfg->cluster) the class's objects in PostgreSQL move the same way, in one
 * transaction (docs/cluster.md, "Renamed classes"); refused (DOBJ_ESTATE)
 * when rows are under two of its names, or a live node holds an object of
 * the earlier one.
 */
DOBJ_API int dobj_config_move_renamed(const dobj_config *cfg);

/**
 * Parse dotenv text (`.dev.vars`, `.env`): KEY=value lines, `export`,
 * single / double / backtick quotes (double quotes expand \n and \r),
 * `#` comments; lines that are not assignments are skipped, as the dotenv
 * package does.  *out (the caller's) is an object of strings.
 */
DOBJ_API int dobj_config_parse_dotenv(dobj_val **out, const char *text, size_t len,
	const char *filename);

#endif
