/*
 * Helpers shared by the V8 format writer and reader (v8_format.h).
 */
#include <math.h>

#include "v8_format.h"

int dobj_value_key_index(const char *key, size_t len, uint32_t *index)
{
	uint64_t v = 0;
	size_t i;

	if (len == 0 || len > 10 || (len > 1 && key[0] == '0'))
		return 0;
	for (i = 0; i < len; i++) {
		if (key[i] < '0' || key[i] > '9')
			return 0;
		v = v * 10 + (uint64_t)(key[i] - '0');
	}
	if (v > 4294967294u) /* 2^32 - 1 is a length, not an index */
		return 0;
	if (index)
		*index = (uint32_t)v;
	return 1;
}

int dobj__v8_is_smi(double d)
{
	return d >= DOBJ_VALUE_SMI_MIN && d <= DOBJ_VALUE_SMI_MAX && d == floor(d) &&
		!(d == 0 && signbit(d));
}

int dobj_number_is_integer(double d, int was_int32)
{
	if (was_int32)
		return 1;
	/* NaN and the infinities fail the range test; -0 and 1.0 the Smi one. */
	if (!(fabs(d) <= (double)DOBJ_VALUE_INTEGER_MAX) || d != floor(d))
		return 0;
	return d < DOBJ_VALUE_SMI_MIN || d > DOBJ_VALUE_SMI_MAX;
}

const char *dobj__v8_kind_name(int kind)
{
	switch (kind) {
	case K_OBJECT: return "an object";
	case K_DENSE: return "an array";
	case K_SPARSE: return "a sparse array";
	case K_MAP: return "a Map";
	case K_SET: return "a Set";
	default: return "nothing";
	}
}

size_t dobj__utf8_put(unsigned char *p, uint32_t cp)
{
	if (cp < 0x80) {
		p[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		p[0] = (unsigned char)(0xC0 | (cp >> 6));
		p[1] = (unsigned char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		p[0] = (unsigned char)(0xE0 | (cp >> 12));
		p[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
		p[2] = (unsigned char)(0x80 | (cp & 0x3F));
		return 3;
	}
	p[0] = (unsigned char)(0xF0 | (cp >> 18));
	p[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
	p[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
	p[3] = (unsigned char)(0x80 | (cp & 0x3F));
	return 4;
}

size_t dobj__utf8_get(const unsigned char *s, size_t len, int wtf8, uint32_t *cp, size_t *bad)
{
	unsigned char c = s[0];
	size_t n, i;
	unsigned char lo = 0x80, hi = 0xBF;
	uint32_t v;

	*bad = 1;
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xC2 && c <= 0xDF) {
		n = 2;
		v = c & 0x1F;
	} else if (c >= 0xE0 && c <= 0xEF) {
		n = 3;
		v = c & 0x0F;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED && !wtf8)
			hi = 0x9F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		n = 4;
		v = c & 0x07;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	} else {
		return 0;
	}
	for (i = 1; i < n; i++) {
		if (i >= len || s[i] < lo || s[i] > hi) {
			*bad = i;
			return 0;
		}
		lo = 0x80;
		hi = 0xBF;
		v = (v << 6) | (s[i] & 0x3F);
	}
	*cp = v;
	return n;
}

int dobj__utf8_valid(const void *s, size_t len)
{
	const unsigned char *p = s;
	size_t i = 0, n, bad;
	uint32_t cp;

	while (i < len) {
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		if (!(n = dobj__utf8_get(p + i, len - i, 0, &cp, &bad)))
			return 0;
		i += n;
	}
	return 1;
}
