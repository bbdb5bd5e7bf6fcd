/* config_text.h — what the config parsers (config_json.c, config_toml.c,
 * config_dotenv.c) share: the input cursor, positioned errors, a growable
 * buffer.  Private to the core. */
#ifndef DOBJ_CONFIG_TEXT_H
#define DOBJ_CONFIG_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "dobj.h"

typedef struct cfg_text {
	const char *s;
	size_t len, pos;
	const char *file; /* for messages; never NULL */
	int depth;        /* current nesting, capped by DOBJ_CONFIG_MAX_DEPTH */
} cfg_text;

typedef struct cfg_buf {
	char *p;
	size_t len, cap;
} cfg_buf;

/* DOBJ_EINVALID with "<file>:<line>:<col>: <message>" for byte offset `at`
 * (column in characters, both 1-based). */
int dobj__cfg_error(const cfg_text *t, size_t at, const char *fmt, ...)
#if defined(__GNUC__)
	__attribute__((format(printf, 3, 4)))
#endif
	;
/* The whole input is UTF-8 (no surrogates, no overlongs), else an error at
 * the first bad byte. */
int dobj__cfg_check_utf8(const cfg_text *t);
/* Length of the valid UTF-8 sequence at s (1..4), 0 if invalid. */
size_t dobj__cfg_utf8_len(const unsigned char *s, size_t avail);

int dobj__cfg_buf_put(cfg_buf *b, const char *p, size_t n);
/* Append code point cp as UTF-8 (cp a Unicode scalar value). */
int dobj__cfg_buf_cp(cfg_buf *b, uint32_t cp);
void dobj__cfg_buf_free(cfg_buf *b);

/* The n (<= 8) hex digits at `at` as a number; -1 if fewer or not hex
 * (\u escapes of both formats). */
int dobj__cfg_hex(const cfg_text *t, size_t at, int n, uint32_t *out);
/* A config integer: a Smi-range number, else a BigInt (dobj_config_is_integer). */
dobj_val *dobj__cfg_int(int64_t v);
/* A config integer from decimal digits (no sign, no leading zeros). */
dobj_val *dobj__cfg_int_digits(int negative, const char *digits, size_t n);

int dobj__cfg_parse_json(dobj_val **out, cfg_text *t);
int dobj__cfg_parse_toml(dobj_val **out, cfg_text *t);

#endif
