/* config_toml.c — TOML 1.0 into a dobj_val tree.
 *
 * The text is parsed into a private tree of nodes first, because TOML's
 * rules about which table may be opened or extended where depend on how
 * each table came to be (a [header], an [[array of tables]], dotted keys,
 * an inline table): each node keeps that, and the finished tree becomes a
 * dobj_val.  The rules follow TOML 1.0 as Python's tomllib applies them,
 * which the differential test in tests/python checks.  Dates and times are
 * refused: no wrangler key takes one.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_text.h"
#include "internal.h"

enum { N_TABLE, N_ARRAY, N_VALUE };

typedef struct tnode tnode;
struct tnode {
	int kind;
	unsigned char declared; /* opened by a [header], or an [[array]]'s array */
	unsigned char frozen;   /* an inline table or array: complete as written */
	unsigned char aot;      /* an array of tables */
	unsigned dotted_in;     /* the section whose dotted keys made / extended it */
	int depth;
	size_t n, cap;
	char **keys;            /* tables */
	size_t *klens;
	tnode **items;          /* tables and arrays */
	dobj_val *val;          /* values */
};

typedef struct tkey {
	size_t n, at;
	char *part[DOBJ_CONFIG_MAX_DEPTH];
	size_t len[DOBJ_CONFIG_MAX_DEPTH];
} tkey;

typedef struct tparser {
	cfg_text *t;
	cfg_buf b;
	tnode *root, *cur;
	unsigned section; /* counts headers: dotted tables of an earlier section are closed */
} tparser;

static void node_free(tnode *n)
{
	size_t i;

	if (!n)
		return;
	for (i = 0; i < n->n; i++) {
		if (n->keys)
			free(n->keys[i]);
		node_free(n->items[i]);
	}
	free(n->keys);
	free(n->klens);
	free(n->items);
	dobj_val_free(n->val);
	free(n);
}

static void key_free(tkey *k)
{
	size_t i;

	for (i = 0; i < k->n; i++)
		free(k->part[i]);
	k->n = 0;
}

static int too_deep(tparser *p, int depth)
{
	if (depth > DOBJ_CONFIG_MAX_DEPTH)
		return dobj__cfg_error(p->t, p->t->pos, "nested deeper than %d levels", DOBJ_CONFIG_MAX_DEPTH);
	return 0;
}

static tnode *node_new(int kind, int depth)
{
	tnode *n = calloc(1, sizeof(*n));

	if (!n) {
		dobj_error_set(DOBJ_ENOMEM, "out of memory");
		return NULL;
	}
	n->kind = kind;
	n->depth = depth;
	return n;
}

static tnode *table_get(const tnode *tb, const char *k, size_t len)
{
	size_t i;

	for (i = 0; i < tb->n; i++)
		if (tb->klens[i] == len && memcmp(tb->keys[i], k, len) == 0)
			return tb->items[i];
	return NULL;
}

static int grow(tparser *p, tnode *c)
{
	if (c->n >= DOBJ_CONFIG_MAX_ENTRIES)
		return dobj__cfg_error(p->t, p->t->pos, "more than %d entries in one table or array",
			DOBJ_CONFIG_MAX_ENTRIES);
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 4;
		tnode **items = realloc(c->items, cap * sizeof(*items));
		if (!items)
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		c->items = items;
		if (c->kind == N_TABLE) {
			char **keys = realloc(c->keys, cap * sizeof(*keys));
			size_t *klens;
			if (!keys)
				return dobj_error_set(DOBJ_ENOMEM, "out of memory");
			c->keys = keys;
			klens = realloc(c->klens, cap * sizeof(*klens));
			if (!klens)
				return dobj_error_set(DOBJ_ENOMEM, "out of memory");
			c->klens = klens;
		}
		c->cap = cap;
	}
	return 0;
}

/* Adds child under key (taking it, also on failure). */
static int table_add(tparser *p, tnode *tb, const char *k, size_t len, tnode *child)
{
	char *copy;
	int rc;

	if ((rc = grow(p, tb)) < 0 || !(copy = dobj__strndup(k, len))) {
		node_free(child);
		return rc < 0 ? rc : DOBJ_ENOMEM;
	}
	tb->keys[tb->n] = copy;
	tb->klens[tb->n] = len;
	tb->items[tb->n++] = child;
	return 0;
}

static int array_add(tparser *p, tnode *a, tnode *child)
{
	int rc = grow(p, a);

	if (rc < 0) {
		node_free(child);
		return rc;
	}
	a->items[a->n++] = child;
	return 0;
}

static void freeze(tnode *n)
{
	size_t i;

	n->frozen = 1;
	for (i = 0; i < n->n; i++)
		freeze(n->items[i]);
}

/* ------------------------------------------------------------ scanning */

static int at_end(const tparser *p)
{
	return p->t->pos >= p->t->len;
}

static char peek(const tparser *p)
{
	return p->t->pos < p->t->len ? p->t->s[p->t->pos] : '\0';
}

static int starts(const tparser *p, const char *w)
{
	size_t n = strlen(w);
	return p->t->pos + n <= p->t->len && memcmp(p->t->s + p->t->pos, w, n) == 0;
}

static int is_ctrl(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

static void skip_ws(tparser *p)
{
	while (!at_end(p) && (peek(p) == ' ' || peek(p) == '\t'))
		p->t->pos++;
}

/* A newline here (LF or CRLF)?  Consumes it. */
static int newline(tparser *p)
{
	if (peek(p) == '\n') {
		p->t->pos++;
		return 1;
	}
	if (starts(p, "\r\n")) {
		p->t->pos += 2;
		return 1;
	}
	return 0;
}

static int skip_comment(tparser *p)
{
	if (peek(p) != '#')
		return 0;
	p->t->pos++;
	while (!at_end(p) && peek(p) != '\n') {
		unsigned char c = (unsigned char)peek(p);
		if (is_ctrl(c) && c != '\t' && !starts(p, "\r\n"))
			return dobj__cfg_error(p->t, p->t->pos, "control character in a comment");
		if (starts(p, "\r\n"))
			break;
		p->t->pos++;
	}
	return 0;
}

/* Whitespace, newlines and comments (inside arrays). */
static int skip_array_space(tparser *p)
{
	int rc;

	for (;;) {
		skip_ws(p);
		if (newline(p))
			continue;
		if (peek(p) == '#') {
			if ((rc = skip_comment(p)) < 0)
				return rc;
			continue;
		}
		return 0;
	}
}

/* ------------------------------------------------------------- strings */

/* A string at pos (on its first quote) into p->b.  `multi_ok`: keys take
 * only single-line strings. */
static int parse_str(tparser *p, int multi_ok)
{
	cfg_text *t = p->t;
	size_t start = t->pos;
	char q = peek(p);
	int multi = 0, basic = q == '"', rc;

	p->b.len = 0;
	if ((rc = dobj__cfg_buf_put(&p->b, "", 0)) < 0)
		return rc;
	if (starts(p, basic ? "\"\"\"" : "'''")) {
		if (!multi_ok)
			return dobj__cfg_error(t, start, "a key cannot be a multi-line string");
		multi = 1;
		t->pos += 3;
		newline(p); /* a newline right after the opening quotes is trimmed */
	} else {
		t->pos++;
	}
	for (;;) {
		unsigned char c;

		if (at_end(p))
			return dobj__cfg_error(t, start, "unterminated string");
		c = (unsigned char)peek(p);
		if (c == (unsigned char)q) {
			if (!multi) {
				t->pos++;
				return 0;
			}
			if (starts(p, basic ? "\"\"\"" : "'''")) {
				int extra = 0;
				t->pos += 3;
				/* Up to two more quotes belong to the content. */
				while (extra < 2 && peek(p) == q) {
					t->pos++;
					extra++;
				}
				while (extra--)
					if ((rc = dobj__cfg_buf_put(&p->b, &q, 1)) < 0)
						return rc;
				return 0;
			}
			if ((rc = dobj__cfg_buf_put(&p->b, &q, 1)) < 0)
				return rc;
			t->pos++;
			continue;
		}
		if (multi && (c == '\n' || starts(p, "\r\n"))) {
			newline(p);
			if ((rc = dobj__cfg_buf_put(&p->b, "\n", 1)) < 0)
				return rc;
			continue;
		}
		if (is_ctrl(c) && c != '\t') {
			if (c == '\n' || c == '\r')
				return dobj__cfg_error(t, start, "unterminated string (strings end on their line)");
			return dobj__cfg_error(t, t->pos, "control character in a string (write it escaped)");
		}
		if (c == '\\' && basic) {
			char e = t->pos + 1 < t->len ? t->s[t->pos + 1] : '\0', out;
			uint32_t cp;
			switch (e) {
			case 'b': out = '\b'; break;
			case 't': out = '\t'; break;
			case 'n': out = '\n'; break;
			case 'f': out = '\f'; break;
			case 'r': out = '\r'; break;
			case '"': out = '"'; break;
			case '\\': out = '\\'; break;
			case 'u':
			case 'U':
				if (dobj__cfg_hex(p->t, t->pos + 2, e == 'u' ? 4 : 8, &cp) < 0)
					return dobj__cfg_error(t, t->pos, "\\%c needs %d hex digits", e, e == 'u' ? 4 : 8);
				if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
					return dobj__cfg_error(t, t->pos, "\\%c%0*X is not a Unicode scalar value", e,
						e == 'u' ? 4 : 8, (unsigned)cp);
				if ((rc = dobj__cfg_buf_cp(&p->b, cp)) < 0)
					return rc;
				t->pos += e == 'u' ? 6 : 10;
				continue;
			default:
				if (multi && (e == ' ' || e == '\t' || e == '\n' || (e == '\r'))) {
					/* A line-ending backslash: drop the whitespace and
					 * newlines up to the next text. */
					t->pos++;
					skip_ws(p);
					if (!newline(p))
						return dobj__cfg_error(t, t->pos, "a '\\' in a string must escape something");
					for (;;) {
						skip_ws(p);
						if (!newline(p))
							break;
					}
					continue;
				}
				return dobj__cfg_error(t, t->pos, "unknown escape \\%c",
					e > 0x20 && e < 0x7f ? e : '?');
			}
			if ((rc = dobj__cfg_buf_put(&p->b, &out, 1)) < 0)
				return rc;
			t->pos += 2;
			continue;
		}
		{
			/* A run of plain text (the input is known to be UTF-8). */
			size_t run = t->pos;
			while (!at_end(p)) {
				unsigned char d = (unsigned char)peek(p);
				if (d == (unsigned char)q || (d == '\\' && basic) || (is_ctrl(d) && d != '\t'))
					break;
				t->pos++;
			}
			if ((rc = dobj__cfg_buf_put(&p->b, t->s + run, t->pos - run)) < 0)
				return rc;
		}
	}
}

/* ---------------------------------------------------------------- keys */

static int is_bare(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		c == '_' || c == '-';
}

static int parse_key(tparser *p, tkey *k)
{
	int rc;

	k->n = 0;
	k->at = p->t->pos;
	for (;;) {
		const char *s;
		size_t len;

		skip_ws(p);
		if (k->n >= DOBJ_CONFIG_MAX_DEPTH)
			return dobj__cfg_error(p->t, p->t->pos, "a key of more than %d parts",
				DOBJ_CONFIG_MAX_DEPTH);
		if (peek(p) == '"' || peek(p) == '\'') {
			if ((rc = parse_str(p, 0)) < 0)
				return rc;
			s = p->b.p;
			len = p->b.len;
		} else if (!at_end(p) && is_bare(peek(p))) {
			size_t st = p->t->pos;
			while (!at_end(p) && is_bare(peek(p)))
				p->t->pos++;
			s = p->t->s + st;
			len = p->t->pos - st;
		} else {
			char c = peek(p);
			if (c > 0x20 && c < 0x7f)
				return dobj__cfg_error(p->t, p->t->pos, "a key cannot start with '%c' (quote it)", c);
			return dobj__cfg_error(p->t, p->t->pos, "expected a key");
		}
		if (!(k->part[k->n] = dobj__strndup(s, len)))
			return DOBJ_ENOMEM;
		k->len[k->n++] = len;
		skip_ws(p);
		if (peek(p) != '.')
			return 0;
		p->t->pos++;
	}
}

/* "a.b.c" for messages (quoted parts as they need). */
static const char *key_str(const tkey *k, size_t upto, char *buf, size_t cap)
{
	size_t i, o = 0;

	buf[0] = '\0';
	for (i = 0; i < upto && i < k->n && o + 1 < cap; i++) {
		size_t j, bare = k->len[i] > 0;
		for (j = 0; j < k->len[i]; j++)
			if (!is_bare(k->part[i][j]))
				bare = 0;
		size_t show = k->len[i] > 60 ? 60 : k->len[i];
		while (show < k->len[i] && show > 0 && ((unsigned char)k->part[i][show] & 0xC0) == 0x80)
			show--; /* never cut a character */
		o += (size_t)snprintf(buf + o, cap - o, bare ? "%s%.*s" : "%s\"%.*s\"", i ? "." : "",
			(int)show, k->part[i]);
		if (o >= cap)
			o = cap - 1;
	}
	return buf;
}

/* -------------------------------------------------------------- values */

static int parse_value(tparser *p, int depth, tnode **out);

static int number_end(char c)
{
	return !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		c == '_' || c == '.' || c == '+' || c == '-');
}

/* Digits of `radix` with single underscores between them. */
static int digits_ok(const char *s, size_t n, int radix)
{
	size_t i;

	if (n == 0)
		return 0;
	for (i = 0; i < n; i++) {
		char c = s[i];
		int d;
		if (c == '_') {
			if (i == 0 || i + 1 == n || s[i + 1] == '_')
				return 0;
			continue;
		}
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return 0;
		if (d >= radix)
			return 0;
	}
	return 1;
}

static int parse_number(tparser *p, tnode *n)
{
	cfg_text *t = p->t;
	size_t st = t->pos, len, i, j;
	const char *s = t->s + st;
	char tmp[128];

	/* A date or time: 1979-05-27, 07:32:00. */
	if (t->len - st >= 5 && s[0] >= '0' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9' &&
	    ((s[2] == ':') || (s[2] >= '0' && s[2] <= '9' && s[3] >= '0' && s[3] <= '9' && s[4] == '-')))
		return dobj__cfg_error(t, st, "dates and times are not supported (write the value as a string)");
	while (t->pos < t->len && !number_end(t->s[t->pos]))
		t->pos++;
	len = t->pos - st;
	if (len == 0)
		return dobj__cfg_error(t, st, "expected a value");
	if (len >= sizeof(tmp))
		return dobj__cfg_error(t, st, "number too long");
	/* Signs and the special floats. */
	i = (s[0] == '+' || s[0] == '-') ? 1 : 0;
	if (len - i == 3 && (memcmp(s + i, "inf", 3) == 0 || memcmp(s + i, "nan", 3) == 0)) {
		double d = s[i] == 'i' ? INFINITY : NAN;
		if (s[0] == '-')
			d = -d;
		n->val = dobj_val_double(d);
		return n->val ? 0 : DOBJ_ENOMEM;
	}
	if (len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o' || s[1] == 'b')) {
		int radix = s[1] == 'x' ? 16 : s[1] == 'o' ? 8 : 2;
		uint64_t v = 0;
		if (!digits_ok(s + 2, len - 2, radix))
			return dobj__cfg_error(t, st, "invalid number");
		for (j = 2; j < len; j++) {
			char c = s[j];
			unsigned d;
			if (c == '_')
				continue;
			d = (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
			if (v > (UINT64_C(0x7FFFFFFFFFFFFFFF) - d) / (unsigned)radix)
				return dobj__cfg_error(t, st, "integer out of range (64 bits)");
			v = v * (unsigned)radix + d;
		}
		n->val = dobj__cfg_int((int64_t)v);
		return n->val ? 0 : DOBJ_ENOMEM;
	}
	{
		/* Decimal: integer part, optional fraction, optional exponent. */
		size_t ip = i, ie, fe, k = 0;
		int is_float = 0;

		ie = ip;
		while (ie < len && ((s[ie] >= '0' && s[ie] <= '9') || s[ie] == '_'))
			ie++;
		if (!digits_ok(s + ip, ie - ip, 10) || (s[ip] == '0' && ie - ip > 1))
			return dobj__cfg_error(t, st, "invalid number");
		fe = ie;
		if (fe < len && s[fe] == '.') {
			size_t f0 = ++fe;
			while (fe < len && ((s[fe] >= '0' && s[fe] <= '9') || s[fe] == '_'))
				fe++;
			if (!digits_ok(s + f0, fe - f0, 10))
				return dobj__cfg_error(t, st, "invalid number");
			is_float = 1;
		}
		if (fe < len && (s[fe] == 'e' || s[fe] == 'E')) {
			size_t e0 = ++fe;
			if (fe < len && (s[fe] == '+' || s[fe] == '-'))
				e0 = ++fe;
			while (fe < len && ((s[fe] >= '0' && s[fe] <= '9') || s[fe] == '_'))
				fe++;
			if (!digits_ok(s + e0, fe - e0, 10))
				return dobj__cfg_error(t, st, "invalid number");
			is_float = 1;
		}
		if (fe != len)
			return dobj__cfg_error(t, st, "invalid number");
		for (j = 0; j < len; j++)
			if (s[j] != '_')
				tmp[k++] = s[j];
		tmp[k] = '\0';
		if (is_float) {
			n->val = dobj_val_double(strtod(tmp, NULL));
		} else {
			long long v;
			errno = 0;
			v = strtoll(tmp, NULL, 10);
			if (errno == ERANGE)
				return dobj__cfg_error(t, st, "integer out of range (64 bits)");
			n->val = dobj__cfg_int((int64_t)v);
		}
		return n->val ? 0 : DOBJ_ENOMEM;
	}
}

static int parse_array(tparser *p, int depth, tnode **out)
{
	cfg_text *t = p->t;
	size_t open = t->pos;
	tnode *a, *item;
	int rc;

	if ((rc = too_deep(p, depth)) < 0)
		return rc;
	if (!(a = node_new(N_ARRAY, depth)))
		return DOBJ_ENOMEM;
	t->pos++;
	if ((rc = skip_array_space(p)) < 0)
		goto error;
	if (peek(p) == ']') {
		t->pos++;
		goto done;
	}
	for (;;) {
		if ((rc = parse_value(p, depth + 1, &item)) < 0)
			goto error;
		if ((rc = array_add(p, a, item)) < 0)
			goto error;
		if ((rc = skip_array_space(p)) < 0)
			goto error;
		if (peek(p) == ']') {
			t->pos++;
			break;
		}
		if (peek(p) != ',') {
			rc = dobj__cfg_error(t, at_end(p) ? open : t->pos,
				at_end(p) ? "unterminated array" : "expected ',' or ']' in the array");
			goto error;
		}
		t->pos++;
		if ((rc = skip_array_space(p)) < 0)
			goto error;
		if (peek(p) == ']') {
			t->pos++;
			break;
		}
	}
done:
	freeze(a);
	*out = a;
	return 0;
error:
	node_free(a);
	return rc;
}

static int insert_kv(tparser *p, tnode *base, tkey *k, tnode *value, int in_inline);

static int parse_inline_table(tparser *p, int depth, tnode **out)
{
	cfg_text *t = p->t;
	tnode *tb, *v = NULL;
	tkey k = { 0 };
	int rc;

	if ((rc = too_deep(p, depth)) < 0)
		return rc;
	if (!(tb = node_new(N_TABLE, depth)))
		return DOBJ_ENOMEM;
	t->pos++;
	skip_ws(p);
	if (peek(p) == '}') {
		t->pos++;
		goto done;
	}
	for (;;) {
		if ((rc = parse_key(p, &k)) < 0)
			goto error;
		if (peek(p) != '=') {
			rc = dobj__cfg_error(t, t->pos, "expected '=' after a key in an inline table");
			goto error;
		}
		t->pos++;
		skip_ws(p);
		if ((rc = too_deep(p, depth + (int)k.n)) < 0)
			goto error;
		if ((rc = parse_value(p, depth + (int)k.n, &v)) < 0)
			goto error;
		rc = insert_kv(p, tb, &k, v, 1);
		key_free(&k);
		if (rc < 0)
			goto error;
		skip_ws(p);
		if (peek(p) == '}') {
			t->pos++;
			break;
		}
		if (peek(p) != ',') {
			rc = dobj__cfg_error(t, t->pos, peek(p) == '\n' || peek(p) == '\r' || at_end(p) ?
				"an inline table ends on its line (TOML 1.0)" : "expected ',' or '}' in the inline table");
			goto error;
		}
		t->pos++;
		skip_ws(p);
	}
done:
	freeze(tb);
	*out = tb;
	return 0;
error:
	key_free(&k);
	node_free(tb);
	return rc;
}

static int parse_value(tparser *p, int depth, tnode **out)
{
	cfg_text *t = p->t;
	tnode *n;
	int rc;
	char c = peek(p);

	*out = NULL;
	if (at_end(p) || c == '\n' || c == '\r' || c == '#')
		return dobj__cfg_error(t, t->pos, "expected a value");
	if (c == '[')
		return parse_array(p, depth, out);
	if (c == '{')
		return parse_inline_table(p, depth, out);
	if ((rc = too_deep(p, depth)) < 0)
		return rc;
	if (!(n = node_new(N_VALUE, depth)))
		return DOBJ_ENOMEM;
	if (c == '"' || c == '\'') {
		if ((rc = parse_str(p, 1)) == 0 && !(n->val = dobj_val_string(p->b.p, p->b.len)))
			rc = DOBJ_ENOMEM;
	} else if (starts(p, "true") && number_end(t->pos + 4 < t->len ? t->s[t->pos + 4] : ' ')) {
		t->pos += 4;
		rc = (n->val = dobj_val_bool(1)) ? 0 : DOBJ_ENOMEM;
	} else if (starts(p, "false") && number_end(t->pos + 5 < t->len ? t->s[t->pos + 5] : ' ')) {
		t->pos += 5;
		rc = (n->val = dobj_val_bool(0)) ? 0 : DOBJ_ENOMEM;
	} else if ((c >= '0' && c <= '9') || c == '+' || c == '-' || c == 'i' || c == 'n') {
		rc = parse_number(p, n);
	} else {
		rc = dobj__cfg_error(t, t->pos, "expected a value (strings take quotes)");
	}
	if (rc < 0) {
		node_free(n);
		return rc;
	}
	*out = n;
	return 0;
}

/* ---------------------------------------------------------------- rules */

/* Was `n` defined already, so that a header or a dotted key may not open it
 * again?  Tables of dotted keys close when their section ends. */
static int is_declared(const tparser *p, const tnode *n)
{
	return n->declared || (n->dotted_in && n->dotted_in != p->section);
}

/* key = value under base (the current table, or an inline table being
 * built).  Takes value. */
static int insert_kv(tparser *p, tnode *base, tkey *k, tnode *value, int in_inline)
{
	char ks[200];
	tnode *node = base, *child;
	size_t i;
	int rc;

	for (i = 0; i + 1 < k->n; i++) {
		child = table_get(node, k->part[i], k->len[i]);
		if (!child) {
			if ((rc = too_deep(p, node->depth + 1)) < 0)
				goto error;
			if (!(child = node_new(N_TABLE, node->depth + 1))) {
				rc = DOBJ_ENOMEM;
				goto error;
			}
			if (!in_inline)
				child->dotted_in = p->section;
			if ((rc = table_add(p, node, k->part[i], k->len[i], child)) < 0)
				goto error;
		} else if (child->kind == N_TABLE && !child->frozen && !(!in_inline && is_declared(p, child))) {
			if (!in_inline)
				child->dotted_in = p->section;
		} else {
			rc = dobj__cfg_error(p->t, k->at, child->kind == N_VALUE ? "the key %s is already a value" :
				child->frozen ? "%s is an inline table or array: it cannot be extended" :
				"the table %s is already defined", key_str(k, i + 1, ks, sizeof(ks)));
			goto error;
		}
		node = child;
	}
	if (node->frozen) {
		rc = dobj__cfg_error(p->t, k->at, "the inline table %s cannot be extended",
			key_str(k, k->n - 1, ks, sizeof(ks)));
		goto error;
	}
	if (table_get(node, k->part[k->n - 1], k->len[k->n - 1])) {
		rc = dobj__cfg_error(p->t, k->at, "the key %s is defined twice", key_str(k, k->n, ks, sizeof(ks)));
		goto error;
	}
	return table_add(p, node, k->part[k->n - 1], k->len[k->n - 1], value);
error:
	node_free(value);
	return rc;
}

/* [a.b.c] (aot = 0) or [[a.b.c]] (aot = 1): makes p->cur the table. */
static int open_table(tparser *p, tkey *k, int aot)
{
	char ks[200];
	tnode *node = p->root, *child;
	size_t i;
	int rc;

	p->section++; /* dotted tables of the section before are closed now */
	for (i = 0; i < k->n; i++) {
		int last = i + 1 == k->n;
		child = table_get(node, k->part[i], k->len[i]);
		if (!child) {
			if ((rc = too_deep(p, node->depth + (last && aot ? 2 : 1))) < 0)
				return rc;
			if (!(child = node_new(last && aot ? N_ARRAY : N_TABLE, node->depth + 1)))
				return DOBJ_ENOMEM;
			if (last) {
				child->declared = 1;
				child->aot = (unsigned char)aot;
			}
			if ((rc = table_add(p, node, k->part[i], k->len[i], child)) < 0)
				return rc;
		} else if (child->frozen) {
			return dobj__cfg_error(p->t, k->at, "%s is an inline %s: it cannot be extended",
				key_str(k, i + 1, ks, sizeof(ks)), child->kind == N_ARRAY ? "array" : "table");
		} else if (child->kind == N_VALUE) {
			return dobj__cfg_error(p->t, k->at, "the key %s is already a value",
				key_str(k, i + 1, ks, sizeof(ks)));
		} else if (last) {
			if (aot ? !(child->kind == N_ARRAY && child->aot) : (child->kind != N_TABLE || is_declared(p, child)))
				return dobj__cfg_error(p->t, k->at, aot ? "%s is already defined, not as an array of tables" :
					"the table %s is defined twice", key_str(k, i + 1, ks, sizeof(ks)));
			child->declared = 1;
		}
		node = child;
		if (node->kind == N_ARRAY && !last)
			node = node->items[node->n - 1]; /* [a.b] after [[a]]: the last a */
	}
	if (aot) {
		tnode *tb;
		if ((rc = too_deep(p, node->depth + 1)) < 0)
			return rc;
		if (!(tb = node_new(N_TABLE, node->depth + 1)))
			return DOBJ_ENOMEM;
		if ((rc = array_add(p, node, tb)) < 0)
			return rc;
		node = tb;
	}
	p->cur = node;
	return 0;
}

/* The end of a statement: whitespace, a comment, a newline or the end. */
static int end_of_line(tparser *p)
{
	int rc;

	skip_ws(p);
	if ((rc = skip_comment(p)) < 0)
		return rc;
	if (at_end(p) || newline(p))
		return 0;
	return dobj__cfg_error(p->t, p->t->pos, "expected the end of the line");
}

/* ------------------------------------------------------------ to dobj_val */

static int to_val(tparser *p, const tnode *n, dobj_val **out)
{
	dobj_val *c, *item;
	size_t i;
	int rc;

	if (n->kind == N_VALUE) {
		*out = dobj_val_ref(n->val);
		return 0;
	}
	c = n->kind == N_TABLE ? dobj_val_object() : dobj_val_array();
	if (!c)
		return DOBJ_ENOMEM;
	for (i = 0; i < n->n; i++) {
		if ((rc = to_val(p, n->items[i], &item)) < 0) {
			dobj_val_free(c);
			return rc;
		}
		rc = n->kind == N_TABLE ? dobj_val_put(c, n->keys[i], n->klens[i], item) : dobj_val_push(c, item);
		if (rc < 0) {
			dobj_val_free(c);
			return rc;
		}
	}
	*out = c;
	return 0;
}

int dobj__cfg_parse_toml(dobj_val **out, cfg_text *t)
{
	tparser p;
	tkey k = { 0 };
	tnode *v;
	int rc = 0;

	memset(&p, 0, sizeof(p));
	p.t = t;
	p.section = 1;
	if (!(p.root = node_new(N_TABLE, 0)))
		return DOBJ_ENOMEM;
	p.cur = p.root;
	while (rc == 0) {
		skip_ws(&p);
		if (at_end(&p))
			break;
		if (newline(&p))
			continue;
		if (peek(&p) == '#') {
			rc = end_of_line(&p);
		} else if (peek(&p) == '[') {
			int aot = starts(&p, "[[");
			t->pos += aot ? 2 : 1;
			if ((rc = parse_key(&p, &k)) < 0)
				break;
			if (!starts(&p, aot ? "]]" : "]")) {
				rc = dobj__cfg_error(t, t->pos, aot ? "expected ']]' to close the header" :
					"expected ']' to close the header");
				break;
			}
			t->pos += aot ? 2 : 1;
			rc = open_table(&p, &k, aot);
			key_free(&k);
			if (rc == 0)
				rc = end_of_line(&p);
		} else {
			if ((rc = parse_key(&p, &k)) < 0)
				break;
			if (peek(&p) != '=') {
				char ks[200];
				rc = dobj__cfg_error(t, t->pos, "expected '=' after the key %s",
					key_str(&k, k.n, ks, sizeof(ks)));
				break;
			}
			t->pos++;
			skip_ws(&p);
			if ((rc = parse_value(&p, p.cur->depth + (int)k.n, &v)) < 0)
				break;
			rc = insert_kv(&p, p.cur, &k, v, 0);
			key_free(&k);
			if (rc == 0)
				rc = end_of_line(&p);
		}
	}
	key_free(&k);
	if (rc == 0)
		rc = to_val(&p, p.root, out);
	node_free(p.root);
	dobj__cfg_buf_free(&p.b);
	return rc;
}
