/*
 * A seeded, time-bounded mutation fuzz (tests/c/fuzz.h) of the core's
 * parsers of untrusted bytes that need no server: stored values (the V8
 * reader), wrangler.toml / wrangler.jsonc / .dev.vars, a request read off
 * the wire (dobj/wire.h), ID strings and names.  Each target states what
 * every input must give: a result that holds up (round trips, a URL a
 * Worker can take), or the refusal its documentation names, never a crash,
 * a hang, a leak (ASan) or an unbounded allocation.  The server (HTTP and
 * WebSocket frames) is fuzzed by test_fuzz_server.c.
 */
#include <ctype.h>
#include <dirent.h>
#include <limits.h>
#include <stdarg.h>

#include "fuzz.h"
#include "dobj.h"

#define FUZZ_INPUT_MAX 8192

static unsigned char input[FUZZ_INPUT_MAX];
static char src_dir[PATH_MAX]; /* tests/ */

/* A finding: the target, the seed and the input, and the test fails. */
static void finding(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fuzz_vfinding(dobj_error_last(), fmt, ap);
	va_end(ap);
}

static size_t nseeds;
static fuzz_seed seeds[256];
static unsigned char *owned[256];

static void seed_add(const void *p, size_t len, int own)
{
	if (nseeds == sizeof(seeds) / sizeof(seeds[0])) {
		if (own)
			free((void *)p);
		return;
	}
	seeds[nseeds].p = p;
	seeds[nseeds].len = len;
	owned[nseeds++] = own ? (unsigned char *)p : NULL;
}

static void seeds_clear(void)
{
	while (nseeds)
		free(owned[--nseeds]);
}

/* ------------------------------------------------------ stored values */

static int unhex(const char *h, unsigned char *out, size_t cap)
{
	size_t n = 0;
	while (h[0] && h[1] && isxdigit((unsigned char)h[0]) && n < cap) {
		unsigned v;
		if (sscanf(h, "%2x", &v) != 1)
			break;
		out[n++] = (unsigned char)v;
		h += 2;
	}
	return (int)n;
}

/* Every blob of workerd's test vectors (tests/c/vectors/vectors.txt). */
static void value_seeds(void)
{
	char path[PATH_MAX + 64], line[8192];
	FILE *f;

	snprintf(path, sizeof(path), "%s/c/vectors/vectors.txt", src_dir);
	f = fopen(path, "r");
	CHECK(f != NULL);
	while (f && fgets(line, sizeof(line), f)) {
		char *t = strrchr(line, '\t');
		unsigned char *blob;
		if (line[0] == '#' || !t)
			continue;
		blob = malloc(strlen(t) / 2 + 1);
		seed_add(blob, (size_t)unhex(t + 1, blob, strlen(t) / 2), 1);
	}
	if (f)
		fclose(f);
}

/* A blob reads to a value or is DOBJ_EINVALID; a value encodes, and its
 * encoding reads back to the same value and encodes to the same bytes. */
static void test_stored_values(void)
{
	static const char *const dict[] = { "\xff\x0f", "\xff\x14", "o", "{", "A", "$", "a", "@",
		"S", "\"", "c", "I", "N", "D", "B", "^", "\\", "_", "0", "T", "F", "Z", ";", "'", ":",
		"U", "V", "B\x08", "\xff\xff\xff\xff\x0f", "\x80\x80\x80\x80\x80\x80", NULL };
	int ok = 0;

	value_seeds();
	fuzz_begin("stored_values");
	while (fuzz_more()) {
		size_t len = fuzz_next_input(input, sizeof(input), dict, seeds, nseeds);
		dobj_val *v = NULL, *w = NULL;
		unsigned char *a = NULL, *b = NULL;
		size_t alen = 0, blen = 0;
		int rc;

		fuzz_input(input, len);
		rc = dobj_val_decode(input, len, &v);
		if (rc == DOBJ_EINVALID) {
			if (v)
				finding("a refused blob left a value");
			continue;
		}
		if (rc != 0) {
			finding("rc %d", rc);
			continue;
		}
		ok++;
		if (dobj_val_encode(v, &a, &alen) != 0)
			finding("a value read does not encode");
		else if (dobj_val_decode(a, alen, &w) != 0)
			finding("its encoding does not read");
		else if (!dobj_val_equal(v, w))
			finding("its encoding reads as another value");
		else if (dobj_val_encode(w, &b, &blen) != 0 || blen != alen || memcmp(a, b, alen))
			finding("its encoding does not encode to the same bytes");
		free(a);
		free(b);
		dobj_val_free(v);
		dobj_val_free(w);
	}
	{
		char what[64];
		snprintf(what, sizeof(what), "%d read", ok);
		fuzz_end(what);
	}
	seeds_clear();
}

/* --------------------------------------------------------- configs */

static void config_seeds(const char *dir)
{
	char path[PATH_MAX + 300];
	struct dirent *e;
	DIR *d;

	snprintf(path, sizeof(path), "%s/config/%s", src_dir, dir);
	if (!(d = opendir(path)))
		return;
	while ((e = readdir(d))) {
		unsigned char *p;
		size_t len = 0;
		if (e->d_name[0] == '.' && (!e->d_name[1] || e->d_name[1] == '.'))
			continue;
		snprintf(path, sizeof(path), "%s/config/%s/%s", src_dir, dir, e->d_name);
		if ((p = fuzz_slurp(path, &len)))
			seed_add(p, len, 1);
	}
	closedir(d);
}

/* Every config text parses, or fails with DOBJ_EINVALID naming the file;
 * what parses encodes (a tree of plain values). */
static void config_target(const char *target, int format)
{
	static const char *const dict[] = { "[", "]", "[[", "]]", "{", "}", "=", ",", ".", "\"",
		"'", "\"\"\"", "'''", "#", "//", "/*", "*/", "\n", "\r\n", "\\u0000", "\\U0010ffff",
		"\\ud800", "\\", "true", "false", "null", "1e999", "-0", "0x", "0o7", "0b1", "inf",
		"nan", "1979-05-27T07:32:00Z", "export ", "${A}", "$", "a.b.c", "[env.x]", "\xc3",
		"\xed\xa0\x80", "\xef\xbb\xbf", NULL };
	const char *name = format == 1 ? "fuzz.toml" : format == 2 ? "fuzz.jsonc" : ".dev.vars";
	int ok = 0;

	fuzz_begin(target);
	while (fuzz_more()) {
		size_t len = fuzz_next_input(input, sizeof(input), dict, seeds, nseeds);
		dobj_val *v = NULL;
		int rc;

		fuzz_input(input, len);
		rc = format ? dobj_config_parse(&v, (const char *)input, len,
			(dobj_config_format)format, name) :
			dobj_config_parse_dotenv(&v, (const char *)input, len, name);
		if (rc == 0) {
			unsigned char *enc = NULL;
			size_t elen;
			ok++;
			if (!v || dobj_val_encode(v, &enc, &elen) != 0)
				finding("a parsed config is not a tree of plain values");
			free(enc);
		} else if (rc != DOBJ_EINVALID || v) {
			finding("rc %d", rc);
		} else if (!strstr(dobj_error_last(), name)) {
			finding("the message does not name the file");
		}
		dobj_val_free(v);
	}
	{
		char what[64];
		snprintf(what, sizeof(what), "%d parsed", ok);
		fuzz_end(what);
	}
}

static void test_configs(void)
{
	static const char *const dirs[] = { "bad", "both", "dotenv", "interop", "nested",
		"noname", "project_json", "project_jsonc", "project_toml" };
	size_t i;

	for (i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		config_seeds(dirs[i]);
	seed_add("A=1\nexport B=\"x\\ny\"\nC='z' # c\nD=${A}\n", 35, 0);
	CHECK(nseeds > 10);
	config_target("wrangler_toml", DOBJ_CONFIG_TOML);
	config_target("wrangler_jsonc", DOBJ_CONFIG_JSONC);
	config_target("dev_vars", 0);
	seeds_clear();
}

/* ------------------------------------------------ requests off the wire */

static int refused_status(int status, int at_finish)
{
	return status == 400 || status == 501 || (!at_finish && status == 414) ||
		(at_finish && (status == 413 || status == 431));
}

/* "METHOD TARGET\nname:value\n...": what a server's HTTP parser hands over
 * (it splits the bytes; the core judges them).  A request taken has a URL
 * a Worker can use: http(s)://, no control byte, no space, no fragment. */
static void test_requests_off_the_wire(void)
{
	static const char *const reqs[] = {
		"GET /a?b=1\nhost:example.com\ncontent-length:5",
		"post http://h:8/x?y\ntransfer-encoding:gzip, chunked\nx-a:b",
		"PROPFIND /\nhost:[::1]:80\nhost:a",
		"OPTIONS *\n",
		"GET HTTPS://Example.COM\naccept:*/*\ncookie:a=1\ncookie:b=2",
		"CONNECT a.b:443\n",
		"PUT /u\ncontent-length:12\ncontent-length:12",
		"DELETE /d\nhost:localhost:8787\nupgrade:websocket\nsec-websocket-key:x",
	};
	static const char *const dict[] = { " ", "\n", ":", "http://", "https://", "//", "/", "?",
		"#", "%00", "*", "@", "[", "]", "host:", "content-length:", "transfer-encoding:",
		"chunked", ", ", "\t", "\r", "\x7f", "\xc3\xa9", "99999999999999", NULL };
	int taken = 0;
	size_t i;

	for (i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++)
		seed_add(reqs[i], strlen(reqs[i]), 0);
	fuzz_begin("requests_off_the_wire");
	while (fuzz_more()) {
		size_t len = fuzz_next_input(input, sizeof(input) - 1, dict, seeds, nseeds);
		char *text = (char *)input, *nl, *sp, *line;
		dobj_msg *m = NULL;
		int status = -1, rc;

		fuzz_input(input, len);
		input[len] = 0;
		nl = memchr(text, '\n', len);
		line = nl ? nl + 1 : text + len;
		sp = memchr(text, ' ', (size_t)(line - text));
		if (!sp)
			sp = nl ? nl : text + len;
		rc = dobj_msg_wire_begin(text, (size_t)(sp - text), sp + (*sp == ' '),
			(size_t)((nl ? nl : text + len) - (sp + (*sp == ' '))), &m, &status);
		if (rc != 0) {
			if (rc != DOBJ_EARG || m || !refused_status(status, 0))
				finding("begin: rc %d, status %d", rc, status);
			continue;
		}
		while (line < text + len) {
			char *end = memchr(line, '\n', (size_t)(text + len - line)), *colon;
			if (!end)
				end = text + len;
			*end = 0;
			if ((colon = strchr(line, ':'))) {
				*colon = 0;
				rc = dobj_msg_add_header(m, line, colon + 1);
				if (rc != 0 && rc != DOBJ_ETYPE && rc != DOBJ_EARG)
					finding("add_header: rc %d", rc);
				if (rc != 0)
					break;
			}
			line = end + 1;
		}
		if (rc == 0) {
			rc = dobj_msg_wire_finish(m, len & 1 ? "127.0.0.1:8787" : NULL, &status);
			if (rc == 0) {
				const char *u = m->url;
				taken++;
				if (strncmp(u, "http://", 7) && strncmp(u, "https://", 8))
					finding("url %s", u);
				for (; *u; u++)
					if ((unsigned char)*u <= 0x20 || *u == 0x7f || *u == '#') {
						finding("a url with byte %d", *u);
						break;
					}
			} else if (rc != DOBJ_EARG || !refused_status(status, 1)) {
				finding("finish: rc %d, status %d", rc, status);
			}
		}
		dobj_msg_free(m);
	}
	{
		char what[64];
		snprintf(what, sizeof(what), "%d taken", taken);
		fuzz_end(what);
	}
	seeds_clear();
}

/* ------------------------------------------------------------- IDs */

/* idFromString: a string that parses is the ID's own hex (any case), and
 * nothing else; idFromName: a name that is taken names one object. */
static void test_ids(void)
{
	static const char *const dict[] = { "0", "f", "F", "g", " ", "\0", "\xc3\xa9", "\xed\xa0\x80",
		"\xed\xb0\x80", "\xf4\x90\x80\x80", "\xc0\x80", "\xf0\x9f\x98\x80", NULL };
	dobj_idkey *key = NULL;
	char hex[4][DOBJ_ID_HEX_LEN];
	int parsed = 0, named = 0;
	size_t i;

	CHECK_EQ_INT(dobj_idkey_new(&key, "fuzz", 4), DOBJ_OK);
	for (i = 0; i < 4; i++) {
		dobj_id id;
		CHECK_EQ_INT(dobj_id_from_name(key, "abcdé" + i, 6 - i, &id), DOBJ_OK);
		dobj_id_to_hex(&id, hex[i]);
		seed_add(hex[i], DOBJ_ID_HEX_LEN, 0);
	}
	seed_add("a room", 6, 0);
	seed_add("\xed\xa0\xbd\xed\xb8\x80", 6, 0);
	fuzz_begin("ids");
	while (key && fuzz_more()) {
		size_t len = fuzz_next_input(input, 256, dict, seeds, nseeds);
		dobj_id id, again;
		char back[DOBJ_ID_HEX_LEN];
		int rc;

		fuzz_input(input, len);
		rc = dobj_id_from_string(key, (const char *)input, len, &id);
		if (rc == 0) {
			parsed++;
			dobj_id_to_hex(&id, back);
			for (i = 0; i < len && len == DOBJ_ID_HEX_LEN; i++)
				if (tolower(input[i]) != back[i])
					break;
			if (len != DOBJ_ID_HEX_LEN || i != len)
				finding("an ID string that is not the ID's hex parsed");
		} else if (rc != DOBJ_EINVALID && rc != DOBJ_EFOREIGN) {
			finding("from_string: rc %d", rc);
		}
		rc = dobj_id_from_name(key, (const char *)input, len, &id);
		if (rc == 0) {
			named++;
			if (dobj_id_from_name(key, (const char *)input, len, &again) != 0 ||
			    !dobj_id_equal(&id, &again))
				finding("a name gives two IDs");
			dobj_id_to_hex(&id, back);
			if (dobj_id_from_string(key, back, DOBJ_ID_HEX_LEN, &again) != 0 ||
			    !dobj_id_equal(&id, &again))
				finding("a named ID's string does not parse back");
		} else if (rc != DOBJ_EARG) {
			finding("from_name: rc %d", rc);
		}
	}
	{
		char what[64];
		snprintf(what, sizeof(what), "%d strings parsed, %d names taken", parsed, named);
		fuzz_end(what);
	}
	dobj_idkey_free(key);
	seeds_clear();
}

int main(void)
{
	const char *slash = strrchr(__FILE__, '/');

	/* __FILE__ is tests/c/test_fuzz.c: the fixtures are under tests/. */
	snprintf(src_dir, sizeof(src_dir), "%.*s/..", slash ? (int)(slash - __FILE__) : 1,
		slash ? __FILE__ : ".");
	fuzz_init();
	RUN(test_stored_values);
	RUN(test_configs);
	RUN(test_requests_off_the_wire);
	RUN(test_ids);
	fuzz_finish();
	return DONE();
}
