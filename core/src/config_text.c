/* config_text.c — the entry of the config parsers and what they share:
 * positioned error messages, UTF-8 checking, a growable buffer. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_text.h"
#include "internal.h"

int dobj__cfg_error(const cfg_text *t, size_t at, const char *fmt, ...)
{
	char msg[320];
	size_t i, line = 1, col = 1;
	va_list ap;

	if (at > t->len)
		at = t->len;
	for (i = 0; i < at; i++) {
		unsigned char c = (unsigned char)t->s[i];
		if (c == '\n') {
			line++;
			col = 1;
		} else if ((c & 0xC0) != 0x80) {
			col++; /* count characters, not continuation bytes */
		}
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return dobj_error_set(DOBJ_EINVALID, "%s:%zu:%zu: %s", t->file, line, col, msg);
}

size_t dobj__cfg_utf8_len(const unsigned char *s, size_t avail)
{
	unsigned char c = s[0];
	uint32_t cp;
	size_t n, i;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		n = 2, cp = c & 0x1F;
	else if (c >= 0xE0 && c <= 0xEF)
		n = 3, cp = c & 0x0F;
	else if (c >= 0xF0 && c <= 0xF4)
		n = 4, cp = c & 0x07;
	else
		return 0;
	if (avail < n)
		return 0;
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3F);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
	    (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return n;
}

int dobj__cfg_check_utf8(const cfg_text *t)
{
	size_t i = 0, n;

	while (i < t->len) {
		n = dobj__cfg_utf8_len((const unsigned char *)t->s + i, t->len - i);
		if (!n)
			return dobj__cfg_error(t, i, "the text is not valid UTF-8");
		i += n;
	}
	return 0;
}

int dobj__cfg_buf_put(cfg_buf *b, const char *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		char *np;
		while (cap < b->len + n + 1)
			cap *= 2;
		np = realloc(b->p, cap);
		if (!np)
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

int dobj__cfg_buf_cp(cfg_buf *b, uint32_t cp)
{
	char u[4];
	size_t n;

	if (cp < 0x80) {
		u[0] = (char)cp, n = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xC0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
	} else if (cp < 0x10000) {
		u[0] = (char)(0xE0 | (cp >> 12)), u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		u[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
	} else {
		u[0] = (char)(0xF0 | (cp >> 18)), u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
		u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
	}
	return dobj__cfg_buf_put(b, u, n);
}

void dobj__cfg_buf_free(cfg_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

dobj_val *dobj__cfg_int(int64_t v)
{
	if (v >= DOBJ_VALUE_SMI_MIN && v <= DOBJ_VALUE_SMI_MAX)
		return dobj_val_integer(v);
	return dobj_val_bigint_i64(v);
}

dobj_val *dobj__cfg_int_digits(int negative, const char *digits, size_t n)
{
	/* Little-endian base-256 magnitude: mag = mag * 10 + digit. */
	unsigned char *mag = calloc(n / 2 + 2, 1);
	size_t len = 0, i, j;
	dobj_val *v;

	if (!mag) {
		dobj_error_set(DOBJ_ENOMEM, "out of memory");
		return NULL;
	}
	for (i = 0; i < n; i++) {
		unsigned carry = (unsigned)(digits[i] - '0');
		for (j = 0; j < len; j++) {
			unsigned x = mag[j] * 10u + carry;
			mag[j] = (unsigned char)(x & 0xFF);
			carry = x >> 8;
		}
		if (carry)
			mag[len++] = (unsigned char)carry;
	}
	v = dobj_val_bigint(negative && len > 0, mag, len);
	free(mag);
	return v;
}

int dobj_config_is_integer(const dobj_val *v)
{
	return dobj_val_type_of(v) == DOBJ_VAL_BIGINT || dobj__val_is_smi(v);
}

int dobj_config_parse(dobj_val **out, const char *text, size_t len, dobj_config_format format,
	const char *filename)
{
	cfg_text t;
	int rc;

	if (!out || (!text && len))
		return dobj_error_set(DOBJ_EARG, "dobj_config_parse needs an out pointer and text");
	*out = NULL;
	if (!filename)
		filename = format == DOBJ_CONFIG_TOML ? "<toml>" : "<json>";
	if (len > DOBJ_CONFIG_MAX_BYTES)
		return dobj_error_set(DOBJ_EARG, "%s: the file is larger than %u bytes", filename,
			DOBJ_CONFIG_MAX_BYTES);
	memset(&t, 0, sizeof(t));
	t.s = text ? text : "";
	t.len = len;
	t.file = filename;
	if ((rc = dobj__cfg_check_utf8(&t)) < 0)
		return rc;
	switch (format) {
	case DOBJ_CONFIG_TOML:
		return dobj__cfg_parse_toml(out, &t);
	case DOBJ_CONFIG_JSONC:
		/* A UTF-8 byte order mark is skipped, as editors on Windows write one. */
		if (t.len >= 3 && memcmp(t.s, "\xEF\xBB\xBF", 3) == 0)
			t.pos = 3;
		return dobj__cfg_parse_json(out, &t);
	}
	return dobj_error_set(DOBJ_EARG, "unknown config format %d", (int)format);
}

int dobj__cfg_hex(const cfg_text *t, size_t at, int n, uint32_t *out)
{
	uint32_t v = 0;
	int i;

	if (at > t->len || (size_t)n > t->len - at)
		return -1;
	for (i = 0; i < n; i++) {
		char c = t->s[at + (size_t)i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (uint32_t)(c - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}
