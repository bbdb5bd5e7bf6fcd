/* config_json.c — JSONC (JSON with comments and trailing commas, as
 * wrangler.jsonc and wrangler.json are read) into a dobj_val tree. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "config_text.h"
#include "internal.h"

static int skip_space(cfg_text *t)
{
	while (t->pos < t->len) {
		char c = t->s[t->pos];
		if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
			t->pos++;
		} else if (c == '/' && t->pos + 1 < t->len && t->s[t->pos + 1] == '/') {
			while (t->pos < t->len && t->s[t->pos] != '\n')
				t->pos++;
		} else if (c == '/' && t->pos + 1 < t->len && t->s[t->pos + 1] == '*') {
			size_t start = t->pos;
			t->pos += 2;
			for (;;) {
				if (t->pos + 1 >= t->len)
					return dobj__cfg_error(t, start, "unterminated /* comment");
				if (t->s[t->pos] == '*' && t->s[t->pos + 1] == '/')
					break;
				t->pos++;
			}
			t->pos += 2;
		} else {
			break;
		}
	}
	return 0;
}

/* A string at t->pos (on the opening quote) into b (cleared first). */
static int parse_string(cfg_text *t, cfg_buf *b)
{
	size_t start = t->pos, run;
	int rc;

	b->len = 0;
	if ((rc = dobj__cfg_buf_put(b, "", 0)) < 0)
		return rc;
	t->pos++;
	for (;;) {
		run = t->pos;
		while (t->pos < t->len && t->s[t->pos] != '"' && t->s[t->pos] != '\\' &&
		       (unsigned char)t->s[t->pos] >= 0x20)
			t->pos++;
		if ((rc = dobj__cfg_buf_put(b, t->s + run, t->pos - run)) < 0)
			return rc;
		if (t->pos >= t->len)
			return dobj__cfg_error(t, start, "unterminated string");
		if (t->s[t->pos] == '"') {
			t->pos++;
			return 0;
		}
		if ((unsigned char)t->s[t->pos] < 0x20)
			return dobj__cfg_error(t, t->pos, "control character in a string (write it escaped)");
		/* a backslash */
		if (t->pos + 1 >= t->len)
			return dobj__cfg_error(t, start, "unterminated string");
		{
			char e = t->s[t->pos + 1], c;
			uint32_t cp, lo;
			switch (e) {
			case '"': c = '"'; break;
			case '\\': c = '\\'; break;
			case '/': c = '/'; break;
			case 'b': c = '\b'; break;
			case 'f': c = '\f'; break;
			case 'n': c = '\n'; break;
			case 'r': c = '\r'; break;
			case 't': c = '\t'; break;
			case 'u':
				if (dobj__cfg_hex(t, t->pos + 2, 4, &cp) < 0)
					return dobj__cfg_error(t, t->pos, "\\u needs four hex digits");
				t->pos += 6;
				if (cp >= 0xD800 && cp <= 0xDBFF) {
					if (t->pos + 1 < t->len && t->s[t->pos] == '\\' && t->s[t->pos + 1] == 'u' &&
					    dobj__cfg_hex(t, t->pos + 2, 4, &lo) == 0 && lo >= 0xDC00 && lo <= 0xDFFF) {
						cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
						t->pos += 6;
					} else {
						return dobj__cfg_error(t, t->pos - 6, "lone surrogate \\u%04X", (unsigned)cp);
					}
				} else if (cp >= 0xDC00 && cp <= 0xDFFF) {
					return dobj__cfg_error(t, t->pos - 6, "lone surrogate \\u%04X", (unsigned)cp);
				}
				if ((rc = dobj__cfg_buf_cp(b, cp)) < 0)
					return rc;
				continue;
			default:
				return dobj__cfg_error(t, t->pos, "unknown escape \\%c", e >= 0x20 && e < 0x7f ? e : '?');
			}
			if ((rc = dobj__cfg_buf_put(b, &c, 1)) < 0)
				return rc;
			t->pos += 2;
		}
	}
}

static int parse_number(cfg_text *t, dobj_val **out)
{
	size_t start = t->pos, i = t->pos;
	int is_float = 0;
	char tmp[64];

	if (i < t->len && t->s[i] == '-')
		i++;
	if (i < t->len && t->s[i] == '0') {
		i++;
	} else if (i < t->len && t->s[i] >= '1' && t->s[i] <= '9') {
		while (i < t->len && t->s[i] >= '0' && t->s[i] <= '9')
			i++;
	} else {
		return dobj__cfg_error(t, start, "expected a value");
	}
	if (i < t->len && t->s[i] == '.') {
		is_float = 1;
		i++;
		if (i >= t->len || t->s[i] < '0' || t->s[i] > '9')
			return dobj__cfg_error(t, i, "expected a digit after '.'");
		while (i < t->len && t->s[i] >= '0' && t->s[i] <= '9')
			i++;
	}
	if (i < t->len && (t->s[i] == 'e' || t->s[i] == 'E')) {
		is_float = 1;
		i++;
		if (i < t->len && (t->s[i] == '+' || t->s[i] == '-'))
			i++;
		if (i >= t->len || t->s[i] < '0' || t->s[i] > '9')
			return dobj__cfg_error(t, i, "expected a digit in the exponent");
		while (i < t->len && t->s[i] >= '0' && t->s[i] <= '9')
			i++;
	}
	t->pos = i;
	if (!is_float && i - start > 1000)
		return dobj__cfg_error(t, start, "integer of more than 1000 digits");
	if (!is_float && i - start >= sizeof(tmp)) {
		char *p = dobj__strndup(t->s + start, i - start);
		if (!p)
			return DOBJ_ENOMEM;
		*out = dobj__cfg_int_digits(p[0] == '-', p + (p[0] == '-'), strlen(p) - (p[0] == '-'));
		free(p);
		return *out ? 0 : DOBJ_ENOMEM;
	}
	if (i - start >= sizeof(tmp)) {
		/* Long literals: strtod reads them from a heap copy. */
		char *p = dobj__strndup(t->s + start, i - start);
		double d;
		if (!p)
			return DOBJ_ENOMEM;
		d = strtod(p, NULL);
		free(p);
		*out = dobj_val_double(d);
		return *out ? 0 : DOBJ_ENOMEM;
	}
	memcpy(tmp, t->s + start, i - start);
	tmp[i - start] = '\0';
	if (!is_float) {
		long long v;
		errno = 0;
		v = strtoll(tmp, NULL, 10);
		*out = errno != ERANGE ? dobj__cfg_int((int64_t)v) :
			dobj__cfg_int_digits(tmp[0] == '-', tmp + (tmp[0] == '-'), strlen(tmp) - (tmp[0] == '-'));
		return *out ? 0 : DOBJ_ENOMEM;
	}
	*out = dobj_val_double(strtod(tmp, NULL));
	return *out ? 0 : DOBJ_ENOMEM;
}

static int literal(cfg_text *t, const char *word)
{
	size_t n = strlen(word);

	if (t->pos + n <= t->len && memcmp(t->s + t->pos, word, n) == 0) {
		t->pos += n;
		return 1;
	}
	return 0;
}

static int parse_value(cfg_text *t, cfg_buf *b, dobj_val **out);

static int parse_container(cfg_text *t, cfg_buf *b, dobj_val **out, int object)
{
	size_t open = t->pos;
	dobj_val *c, *item = NULL;
	int rc;
	char close = object ? '}' : ']';

	if (++t->depth > DOBJ_CONFIG_MAX_DEPTH)
		return dobj__cfg_error(t, t->pos, "nested deeper than %d levels", DOBJ_CONFIG_MAX_DEPTH);
	c = object ? dobj_val_object() : dobj_val_array();
	if (!c)
		return DOBJ_ENOMEM;
	t->pos++;
	for (;;) {
		char *key = NULL;
		size_t klen = 0;

		if ((rc = skip_space(t)) < 0)
			goto error;
		if (t->pos < t->len && t->s[t->pos] == close) {
			t->pos++; /* empty, or after a trailing comma */
			break;
		}
		if (object) {
			if (t->pos >= t->len || t->s[t->pos] != '"') {
				rc = t->pos >= t->len ? dobj__cfg_error(t, open, "unterminated object") :
					dobj__cfg_error(t, t->pos, "expected a \"key\" or '}'");
				goto error;
			}
			if ((rc = parse_string(t, b)) < 0)
				goto error;
			if (dobj_val_len(c) >= DOBJ_CONFIG_MAX_ENTRIES && !dobj_val_get(c, b->p, b->len)) {
				rc = dobj__cfg_error(t, t->pos, "more than %d keys in one object",
					DOBJ_CONFIG_MAX_ENTRIES);
				goto error;
			}
			if (!(key = dobj__strndup(b->p, b->len))) {
				rc = DOBJ_ENOMEM;
				goto error;
			}
			klen = b->len;
			if ((rc = skip_space(t)) < 0 || t->pos >= t->len || t->s[t->pos] != ':') {
				free(key);
				if (rc == 0)
					rc = dobj__cfg_error(t, t->pos, "expected ':' after a key");
				goto error;
			}
			t->pos++;
		}
		rc = parse_value(t, b, &item);
		if (rc < 0) {
			free(key);
			goto error;
		}
		rc = object ? dobj_val_put(c, key, klen, item) : dobj_val_push(c, item);
		free(key);
		item = NULL;
		if (rc < 0)
			goto error;
		if ((rc = skip_space(t)) < 0)
			goto error;
		if (t->pos < t->len && t->s[t->pos] == ',') {
			t->pos++;
			continue;
		}
		if (t->pos < t->len && t->s[t->pos] == close) {
			t->pos++;
			break;
		}
		if (t->pos >= t->len)
			rc = dobj__cfg_error(t, open, "unterminated %s", object ? "object" : "array");
		else
			rc = dobj__cfg_error(t, t->pos, "expected ',' or '%c'", close);
		goto error;
	}
	t->depth--;
	*out = c;
	return 0;
error:
	dobj_val_free(c);
	return rc;
}

static int parse_value(cfg_text *t, cfg_buf *b, dobj_val **out)
{
	int rc;

	*out = NULL;
	if ((rc = skip_space(t)) < 0)
		return rc;
	if (t->pos >= t->len)
		return dobj__cfg_error(t, t->pos, "expected a value, found the end of the file");
	switch (t->s[t->pos]) {
	case '{':
		return parse_container(t, b, out, 1);
	case '[':
		return parse_container(t, b, out, 0);
	case '"':
		if ((rc = parse_string(t, b)) < 0)
			return rc;
		*out = dobj_val_string(b->p, b->len);
		return *out ? 0 : DOBJ_ENOMEM;
	case 't':
		if (literal(t, "true"))
			return (*out = dobj_val_bool(1)) ? 0 : DOBJ_ENOMEM;
		break;
	case 'f':
		if (literal(t, "false"))
			return (*out = dobj_val_bool(0)) ? 0 : DOBJ_ENOMEM;
		break;
	case 'n':
		if (literal(t, "null"))
			return (*out = dobj_val_null()) ? 0 : DOBJ_ENOMEM;
		break;
	default:
		if (t->s[t->pos] == '-' || (t->s[t->pos] >= '0' && t->s[t->pos] <= '9'))
			return parse_number(t, out);
	}
	if (t->s[t->pos] == '\'')
		return dobj__cfg_error(t, t->pos, "strings take double quotes in JSON");
	return dobj__cfg_error(t, t->pos, "expected a value");
}

int dobj__cfg_parse_json(dobj_val **out, cfg_text *t)
{
	cfg_buf b = { 0 };
	dobj_val *v = NULL;
	int rc;

	rc = parse_value(t, &b, &v);
	if (rc == 0 && (rc = skip_space(t)) == 0 && t->pos < t->len)
		rc = dobj__cfg_error(t, t->pos, "unexpected text after the value");
	dobj__cfg_buf_free(&b);
	if (rc < 0) {
		dobj_val_free(v);
		return rc;
	}
	*out = v;
	return 0;
}
