/* The value codec: golden encodings (reference §6 and blobs workerd wrote,
 * tests/c/vectors/vectors.txt), round trips, back-references, writer misuse,
 * corrupt input (every truncation, a deterministic mutation fuzz). */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>

#include "dobj.h"
#include "check.h"

/* ----------------------------------------------------------- helpers */

static size_t unhex(const char *hex, unsigned char *out, size_t cap)
{
	size_t n = 0;
	unsigned v;

	while (hex[0] && hex[1] && n < cap) {
		if (hex[0] == ' ') {
			hex++;
			continue;
		}
		sscanf(hex, "%2x", &v);
		out[n++] = (unsigned char)v;
		hex += 2;
	}
	return n;
}

static void tohex(const unsigned char *p, size_t n, char *out)
{
	size_t i;

	for (i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", p[i]);
	out[2 * n] = 0;
}

/* A growable text for descriptions. */
typedef struct text {
	char *p;
	size_t len, cap;
} text;

static void tput(text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(t->p ? t->p + t->len : NULL, t->p ? t->cap - t->len : 0, fmt, ap);
		va_end(ap);
		if (t->p && (size_t)n < t->cap - t->len) {
			t->len += (size_t)n;
			return;
		}
		t->cap = (t->cap + (size_t)n + 64) * 2;
		t->p = realloc(t->p, t->cap);
		if (!t->len)
			t->p[0] = 0;
	}
}

/*
 * Describe a blob through the reader, in a compact notation:
 * ints `1`, doubles `1.5d`, strings "..." (non-ASCII UTF-8 bytes as \xNN),
 * BigInts `-0x1n`, receivers with their id: `o0{x:1}`, `A0[1,-|x:2]`,
 * `a0(3)[0:1]`, `M0{k=>1}`, `S0{1}`, `D1(0d)`, `B1<0908>`, `V2<0203>@1/4#1+`
 * (new buffer) or `#1` (referenced buffer), `^1`.  Returns the reader's
 * code; *out gets the text (the error message on failure).
 */
static int describe(const unsigned char *blob, size_t len, text *out)
{
	struct { int type; uint32_t length, n; } lv[DOBJ_VALUE_MAX_DEPTH + 2];
	dobj_de *de = NULL;
	dobj_tok tok;
	int rc, depth = 0;
	size_t i;

	out->len = 0;
	tput(out, "");
	rc = dobj_de_new(&de, blob, len);
	while (rc == 0) {
		rc = dobj_de_next(de, &tok);
		if (rc < 0 || tok.type == DOBJ_TOK_EOF)
			break;
		if (tok.type == DOBJ_TOK_OBJECT_END || tok.type == DOBJ_TOK_ARRAY_END ||
		    tok.type == DOBJ_TOK_SPARSE_END || tok.type == DOBJ_TOK_MAP_END ||
		    tok.type == DOBJ_TOK_SET_END) {
			depth--;
			tput(out, tok.type == DOBJ_TOK_ARRAY_END || tok.type == DOBJ_TOK_SPARSE_END ? "]" : "}");
			continue;
		}
		if (depth > 0) { /* the separator before this item */
			uint32_t n = lv[depth].n++;
			switch (lv[depth].type) {
			case DOBJ_TOK_ARRAY:
				if (n < lv[depth].length)
					tput(out, n ? "," : "");
				else if (n == lv[depth].length)
					tput(out, n ? "|" : "");
				else
					tput(out, (n - lv[depth].length) & 1 ? ":" : ",");
				break;
			case DOBJ_TOK_MAP:
				tput(out, n & 1 ? "=>" : n ? "," : "");
				break;
			case DOBJ_TOK_SET:
				tput(out, n ? "," : "");
				break;
			default:
				tput(out, n & 1 ? ":" : n ? "," : "");
			}
		}
		if (tok.key) {
			tput(out, "%.*s", (int)tok.len, tok.str);
			continue;
		}
		switch (tok.type) {
		case DOBJ_TOK_UNDEFINED: tput(out, "undefined"); break;
		case DOBJ_TOK_NULL: tput(out, "null"); break;
		case DOBJ_TOK_TRUE: tput(out, "true"); break;
		case DOBJ_TOK_FALSE: tput(out, "false"); break;
		case DOBJ_TOK_HOLE: tput(out, "-"); break;
		case DOBJ_TOK_INT32: tput(out, "%d", tok.i32); break;
		case DOBJ_TOK_DOUBLE: tput(out, "%.17gd", tok.number); break;
		case DOBJ_TOK_BIGINT:
			tput(out, "%s0x", tok.negative ? "-" : "");
			if (!tok.len)
				tput(out, "0");
			for (i = tok.len; i > 0; i--)
				tput(out, i == tok.len ? "%x" : "%02x", tok.bytes[i - 1]);
			tput(out, "n");
			break;
		case DOBJ_TOK_STRING:
			tput(out, "\"");
			for (i = 0; i < tok.len; i++) {
				unsigned char c = (unsigned char)tok.str[i];
				if (c >= 0x20 && c < 0x7F && c != '\\' && c != '"')
					tput(out, "%c", c);
				else
					tput(out, "\\x%02x", c);
			}
			tput(out, "\"");
			break;
		case DOBJ_TOK_DATE: tput(out, "D%u(%.17gd)", tok.id, tok.number); break;
		case DOBJ_TOK_BUFFER:
		case DOBJ_TOK_VIEW:
			tput(out, "%c%u<", tok.type == DOBJ_TOK_BUFFER ? 'B' : 'V', tok.id);
			for (i = 0; i < tok.len; i++)
				tput(out, "%02x", tok.bytes[i]);
			tput(out, ">");
			if (tok.type == DOBJ_TOK_VIEW)
				tput(out, "@%zu/%zu#%u%s", tok.offset, tok.buffer_len, tok.buffer_id,
					tok.buffer_new ? "+" : "");
			break;
		case DOBJ_TOK_REF: tput(out, "^%u", tok.id); break;
		case DOBJ_TOK_OBJECT: tput(out, "o%u{", tok.id); break;
		case DOBJ_TOK_MAP: tput(out, "M%u{", tok.id); break;
		case DOBJ_TOK_SET: tput(out, "S%u{", tok.id); break;
		case DOBJ_TOK_ARRAY: tput(out, "A%u[", tok.id); break;
		case DOBJ_TOK_SPARSE: tput(out, "a%u(%u)[", tok.id, tok.length); break;
		default: tput(out, "?");
		}
		if (tok.type == DOBJ_TOK_OBJECT || tok.type == DOBJ_TOK_MAP || tok.type == DOBJ_TOK_SET ||
		    tok.type == DOBJ_TOK_ARRAY || tok.type == DOBJ_TOK_SPARSE) {
			depth++;
			lv[depth].type = tok.type;
			lv[depth].length = tok.length;
			lv[depth].n = 0;
		}
	}
	if (rc < 0) {
		out->len = 0;
		tput(out, "%s", dobj_error_last());
	}
	dobj_de_free(de);
	return rc;
}

/*
 * Feed every token of a blob to a writer: the output must be the same bytes
 * whenever the input is what V8 writes.  Checks that the writer assigns the
 * ids the reader reports.  Returns the reader's or writer's code.
 */
static int echo(const unsigned char *blob, size_t len, dobj_ser *ser)
{
	dobj_de *de = NULL;
	dobj_tok tok;
	uint32_t id, bid;
	int rc;

	dobj_ser_reset(ser);
	rc = dobj_de_new(&de, blob, len);
	while (rc == 0) {
		if ((rc = dobj_de_next(de, &tok)) < 0 || tok.type == DOBJ_TOK_EOF)
			break;
		id = bid = UINT32_MAX;
		switch (tok.type) {
		case DOBJ_TOK_UNDEFINED: rc = dobj_ser_undefined(ser); break;
		case DOBJ_TOK_NULL: rc = dobj_ser_null(ser); break;
		case DOBJ_TOK_TRUE: rc = dobj_ser_bool(ser, 1); break;
		case DOBJ_TOK_FALSE: rc = dobj_ser_bool(ser, 0); break;
		case DOBJ_TOK_HOLE: rc = dobj_ser_hole(ser); break;
		case DOBJ_TOK_INT32: rc = dobj_ser_int32(ser, tok.i32); break;
		case DOBJ_TOK_DOUBLE: rc = dobj_ser_double(ser, tok.number); break;
		case DOBJ_TOK_BIGINT: rc = dobj_ser_bigint(ser, tok.negative, tok.bytes, tok.len); break;
		case DOBJ_TOK_STRING: rc = dobj_ser_string(ser, tok.str, tok.len); break;
		case DOBJ_TOK_OBJECT: rc = dobj_ser_object_begin(ser, &id); break;
		case DOBJ_TOK_OBJECT_END: rc = dobj_ser_object_end(ser); break;
		case DOBJ_TOK_ARRAY: rc = dobj_ser_array_begin(ser, tok.length, &id); break;
		case DOBJ_TOK_ARRAY_END: rc = dobj_ser_array_end(ser); break;
		case DOBJ_TOK_SPARSE: rc = dobj_ser_sparse_begin(ser, tok.length, &id); break;
		case DOBJ_TOK_SPARSE_END: rc = dobj_ser_sparse_end(ser); break;
		case DOBJ_TOK_MAP: rc = dobj_ser_map_begin(ser, &id); break;
		case DOBJ_TOK_MAP_END: rc = dobj_ser_map_end(ser); break;
		case DOBJ_TOK_SET: rc = dobj_ser_set_begin(ser, &id); break;
		case DOBJ_TOK_SET_END: rc = dobj_ser_set_end(ser); break;
		case DOBJ_TOK_DATE: rc = dobj_ser_date(ser, tok.number, &id); break;
		case DOBJ_TOK_BUFFER: rc = dobj_ser_buffer(ser, tok.bytes, tok.len, &id); break;
		case DOBJ_TOK_REF: rc = dobj_ser_ref(ser, tok.id); id = tok.id; break;
		case DOBJ_TOK_VIEW:
			if (tok.buffer_new) {
				rc = dobj_ser_uint8array(ser, tok.buffer, tok.buffer_len, tok.offset,
					tok.len, &bid, &id);
				if (rc == 0 && bid != tok.buffer_id)
					rc = dobj_error_set(DOBJ_ERROR, "buffer id %u, reader says %u", bid,
						tok.buffer_id);
			} else {
				rc = dobj_ser_uint8array_of(ser, tok.buffer_id, tok.offset, tok.len, &id);
			}
			break;
		default:
			rc = dobj_error_set(DOBJ_ERROR, "token %d", (int)tok.type);
		}
		if (rc == 0 && id != UINT32_MAX && id != tok.id)
			rc = dobj_error_set(DOBJ_ERROR, "id %u, reader says %u", id, tok.id);
	}
	dobj_de_free(de);
	return rc;
}

static int ser_hex(dobj_ser *ser, char *out)
{
	const unsigned char *p;
	size_t n;
	int rc = dobj_ser_finish(ser, &p, &n);

	out[0] = 0;
	if (rc == 0)
		tohex(p, n, out);
	return rc;
}

static dobj_ser *new_ser(void)
{
	dobj_ser *s = NULL;
	CHECK_EQ_INT(dobj_ser_new(&s), 0);
	return s;
}

/* ------------------------------------------- the workerd vector file */

#define MAX_VECTORS 200
static struct vector {
	char name[64];
	char src[256];
	unsigned char *blob;
	size_t len;
} vectors[MAX_VECTORS];
static size_t nvectors;

static void load_vectors(void)
{
	char path[1024], line[8192];
	const char *slash = strrchr(__FILE__, '/');
	FILE *f;

	snprintf(path, sizeof(path), "%.*svectors/vectors.txt",
		slash ? (int)(slash - __FILE__ + 1) : 0, __FILE__);
	f = fopen(path, "r");
	CHECK(f != NULL);
	if (!f) {
		fprintf(stderr, "cannot open %s\n", path);
		return;
	}
	while (fgets(line, sizeof(line), f) && nvectors < MAX_VECTORS) {
		char *t1, *t2, *nl;
		struct vector *v = &vectors[nvectors];
		if (line[0] == '#' || !(t1 = strchr(line, '\t')) || !(t2 = strchr(t1 + 1, '\t')))
			continue;
		if ((nl = strchr(t2, '\n')))
			*nl = 0;
		snprintf(v->name, sizeof(v->name), "%.*s", (int)(t1 - line), line);
		snprintf(v->src, sizeof(v->src), "%.*s", (int)(t2 - t1 - 1), t1 + 1);
		v->blob = malloc(strlen(t2 + 1) / 2 + 1);
		v->len = unhex(t2 + 1, v->blob, strlen(t2 + 1) / 2);
		nvectors++;
	}
	fclose(f);
}

static const struct vector *vector(const char *name)
{
	size_t i;

	for (i = 0; i < nvectors; i++)
		if (strcmp(vectors[i].name, name) == 0)
			return &vectors[i];
	fprintf(stderr, "no vector %s\n", name);
	return NULL;
}

/* ------------------------------------------------------------ tests */

/* Reference §6: bytes after FF 0F, and how the reader shows them. */
static const struct { const char *hex, *shown; } reference[] = {
	{ "49 02", "1" },
	{ "49 09", "-5" },
	{ "4E 0000000000007042", "1099511627776d" },
	{ "4E 000000000000F83F", "1.5d" },
	{ "54", "true" },
	{ "46", "false" },
	{ "30", "null" },
	{ "22 05 68656C6C6F", "\"hello\"" },
	{ "22 05 68E96C6C6F", "\"h\\xc3\\xa9llo\"" },
	{ "63 04 E5652C67", "\"\\xe6\\x97\\xa5\\xe6\\x9c\\xac\"" },
	{ "22 00", "\"\"" },
	{ "6F 7B 00", "o0{}" },
	{ "6F 2201 78 4902 2201 79 2201 7A 7B 02", "o0{x:1,y:\"z\"}" },
	{ "41 03 4902 2201 61 30 24 00 03", "A0[1,\"a\",null]" },
	{ "42 03 010203 56 42 00 03 00", "V1<010203>@0/3#0+" },
	{ "42 02 0908", "B0<0908>" },
	{ "44 0000000000000000", "D0(0d)" },
	{ "3B 2201 6B 4902 3A 02", "M0{\"k\"=>1}" },
	{ "27 4902 2C 01", "S0{1}" },
	{ "5A 10 D20A1FEB8CA954AB", "0xab54a98ceb1f0ad2n" },
};

static void test_reference_goldens_read(void)
{
	unsigned char blob[256];
	text t = { 0 };
	size_t i, n;

	for (i = 0; i < sizeof(reference) / sizeof(reference[0]); i++) {
		blob[0] = 0xFF;
		blob[1] = 0x0F;
		n = 2 + unhex(reference[i].hex, blob + 2, sizeof(blob) - 2);
		CHECK_EQ_INT(describe(blob, n, &t), 0);
		CHECK_STR(t.p, reference[i].shown);
	}
	free(t.p);
}

static void test_reference_goldens_write(void)
{
	dobj_ser *s = new_ser();
	char hex[512], want[512];
	unsigned char buf[256];
	size_t i, n;
	uint32_t id, bid;
	static const unsigned char big[] = { 0xD2, 0x0A, 0x1F, 0xEB, 0x8C, 0xA9, 0x54, 0xAB };

	for (i = 0; i < sizeof(reference) / sizeof(reference[0]); i++) {
		dobj_ser_reset(s);
		switch (i) {
		case 0: CHECK_EQ_INT(dobj_ser_number(s, 1), 0); break;
		case 1: CHECK_EQ_INT(dobj_ser_number(s, -5), 0); break;
		case 2: CHECK_EQ_INT(dobj_ser_number(s, 1099511627776.0), 0); break;
		case 3: CHECK_EQ_INT(dobj_ser_number(s, 1.5), 0); break;
		case 4: CHECK_EQ_INT(dobj_ser_bool(s, 1), 0); break;
		case 5: CHECK_EQ_INT(dobj_ser_bool(s, 0), 0); break;
		case 6: CHECK_EQ_INT(dobj_ser_null(s), 0); break;
		case 7: CHECK_EQ_INT(dobj_ser_string(s, "hello", 5), 0); break;
		case 8: CHECK_EQ_INT(dobj_ser_string(s, "h\xc3\xa9llo", 6), 0); break;
		case 9: CHECK_EQ_INT(dobj_ser_string(s, "\xe6\x97\xa5\xe6\x9c\xac", 6), 0); break;
		case 10: CHECK_EQ_INT(dobj_ser_string(s, "", 0), 0); break;
		case 11:
			CHECK_EQ_INT(dobj_ser_object_begin(s, &id), 0);
			CHECK_EQ_INT(id, 0);
			CHECK_EQ_INT(dobj_ser_object_end(s), 0);
			break;
		case 12:
			dobj_ser_object_begin(s, NULL);
			dobj_ser_key(s, "x", 1);
			dobj_ser_number(s, 1);
			dobj_ser_key(s, "y", 1);
			dobj_ser_string(s, "z", 1);
			CHECK_EQ_INT(dobj_ser_object_end(s), 0);
			break;
		case 13:
			dobj_ser_array_begin(s, 3, NULL);
			dobj_ser_number(s, 1);
			dobj_ser_string(s, "a", 1);
			dobj_ser_null(s);
			CHECK_EQ_INT(dobj_ser_array_end(s), 0);
			break;
		case 14:
			CHECK_EQ_INT(dobj_ser_uint8array(s, "\x01\x02\x03", 3, 0, 3, &bid, &id), 0);
			CHECK_EQ_INT(bid, 0);
			CHECK_EQ_INT(id, 1);
			break;
		case 15: CHECK_EQ_INT(dobj_ser_buffer(s, "\x09\x08", 2, &id), 0); break;
		case 16: CHECK_EQ_INT(dobj_ser_date(s, 0, &id), 0); break;
		case 17:
			dobj_ser_map_begin(s, NULL);
			dobj_ser_string(s, "k", 1);
			dobj_ser_number(s, 1);
			CHECK_EQ_INT(dobj_ser_map_end(s), 0);
			break;
		case 18:
			dobj_ser_set_begin(s, NULL);
			dobj_ser_number(s, 1);
			CHECK_EQ_INT(dobj_ser_set_end(s), 0);
			break;
		case 19: CHECK_EQ_INT(dobj_ser_bigint(s, 0, big, sizeof(big)), 0); break;
		}
		CHECK_EQ_INT(ser_hex(s, hex), 0);
		n = unhex(reference[i].hex, buf, sizeof(buf));
		strcpy(want, "ff0f");
		tohex(buf, n, want + 4);
		CHECK_STR(hex, want);
	}
	dobj_ser_free(s);
}

/* Every blob workerd wrote reads, and echoes back to the same bytes. */
static void test_workerd_vectors_read_and_echo(void)
{
	dobj_ser *s = new_ser();
	text t = { 0 };
	char hex[8192], want[8192];
	size_t i;

	CHECK(nvectors >= 70);
	for (i = 0; i < nvectors; i++) {
		int rc = describe(vectors[i].blob, vectors[i].len, &t);
		if (rc != 0)
			fprintf(stderr, "%s: %s\n", vectors[i].name, t.p);
		CHECK_EQ_INT(rc, 0);
		rc = echo(vectors[i].blob, vectors[i].len, s);
		if (rc != 0)
			fprintf(stderr, "%s: %s\n", vectors[i].name, dobj_error_last());
		CHECK_EQ_INT(rc, 0);
		ser_hex(s, hex);
		tohex(vectors[i].blob, vectors[i].len, want);
		if (strcmp(hex, want) != 0)
			fprintf(stderr, "%s (%s): echo differs\n", vectors[i].name, vectors[i].src);
		CHECK_STR(hex, want);
	}
	dobj_ser_free(s);
	free(t.p);
}

/* What the reader shows for workerd's blobs. */
static const struct { const char *name, *shown; } workerd_shown[] = {
	{ "neg_zero", "-0d" },
	{ "smi_max31", "1073741823" },
	{ "smi_over31", "1073741824d" },
	{ "smi_min31", "-1073741824" },
	{ "smi_under31", "-1073741825d" },
	{ "nan", "nand" },
	{ "str_emoji", "\"\\xf0\\x9f\\x98\\x80\"" },
	{ "str_lone_hi", "\"a\\xed\\xa0\\x80b\"" },
	{ "str_lone_lo", "\"\\xed\\xb0\\x80\"" },
	{ "str_100", "\"\\xc4\\x80\"" },
	{ "obj_pad", "o0{ab:\"\\xe6\\x97\\xa5\"}" },
	{ "obj_idx_order", "o0{0:\"zero\",2:\"two\",b:1,a:3}" },
	{ "obj_key_01", "o0{01:1,-1:2,1.5:3}" },
	{ "obj_key_big", "o0{1073741823:1,1073741824:2,4294967294:3,4294967295:4}" },
	{ "arr_holey", "a0(3)[0:1,2:3]" },
	{ "arr_undef", "a0(1)[0:undefined]" },
	{ "arr_prop", "A0[1|x:2]" },
	{ "arr_sparse_long", "a0(6)[5:\"x\"]" },
	{ "arr_doubles", "A0[1.5d,2d]" },
	{ "arr_big_smi", "A0[1d,1073741824d]" },
	{ "ref_shared", "A0[o1{},^1]" },
	{ "ref_cycle", "A0[^0]" },
	{ "ref_obj_cycle", "o0{self:^0}" },
	{ "map_objkey", "M0{o1{}=>^1}" },
	{ "set_mixed", "S0{\"a\",2,null}" },
	{ "date_nan", "D0(nand)" },
	{ "u8_sub", "V1<0203>@1/4#0+" },
	{ "u8_two_views", "A0[V2<01020304>@0/4#1+,V3<0304>@2/4#1]" },
	{ "u8_after_obj", "A0[o1{},V3<07>@0/1#2+]" },
	{ "date_ids", "A0[D1(5d),o2{},^1]" },
	{ "big_0", "0x0n" },
	{ "big_m1", "-0x1n" },
	{ "big_m2_64", "-0x10000000000000000n" },
};

static void test_workerd_vectors_shown(void)
{
	text t = { 0 };
	size_t i;

	for (i = 0; i < sizeof(workerd_shown) / sizeof(workerd_shown[0]); i++) {
		const struct vector *v = vector(workerd_shown[i].name);
		CHECK(v != NULL);
		if (!v)
			continue;
		CHECK_EQ_INT(describe(v->blob, v->len, &t), 0);
		CHECK_STR(t.p, workerd_shown[i].shown);
	}
	free(t.p);
}

static void check_written(dobj_ser *s, const char *name)
{
	const struct vector *v = vector(name);
	char hex[8192], want[8192];

	CHECK(v != NULL);
	if (!v)
		return;
	CHECK_EQ_INT(ser_hex(s, hex), 0);
	tohex(v->blob, v->len, want);
	if (strcmp(hex, want) != 0)
		fprintf(stderr, "%s (%s): written differently\n", name, v->src);
	CHECK_STR(hex, want);
}

/* The writer's own choices give workerd's bytes: Smi range, -0, NaN, keys,
 * strings and padding, BigInts, ids of buffers and views. */
static void test_writer_matches_workerd(void)
{
	dobj_ser *s = new_ser();
	static const struct { const char *name; double v; } nums[] = {
		{ "int_1", 1 }, { "int_m5", -5 }, { "int_0", 0 }, { "neg_zero", -0.0 },
		{ "smi_max31", 1073741823.0 }, { "smi_over31", 1073741824.0 },
		{ "smi_min31", -1073741824.0 }, { "smi_under31", -1073741825.0 },
		{ "i32_max", 2147483647.0 }, { "i32_over", 2147483648.0 },
		{ "pow2_40", 1099511627776.0 }, { "d_1_5", 1.5 }, { "int_from_div", 3 },
	};
	static const struct { const char *name, *utf8; } strs[] = {
		{ "str_hello", "hello" }, { "str_hello_acc", "h\xc3\xa9llo" },
		{ "str_nihon", "\xe6\x97\xa5\xe6\x9c\xac" }, { "str_empty", "" },
		{ "str_ff", "\xc3\xbf" }, { "str_100", "\xc4\x80" },
		{ "str_emoji", "\xf0\x9f\x98\x80" }, { "str_lone_hi", "a\xed\xa0\x80" "b" },
		{ "str_lone_lo", "\xed\xb0\x80" },
	};
	char long2[300];
	uint32_t id, bid;
	size_t i;
	static const unsigned char one[] = { 1 }, two64[] = { 0, 0, 0, 0, 0, 0, 0, 0, 1 };

	for (i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
		dobj_ser_reset(s);
		CHECK_EQ_INT(dobj_ser_number(s, nums[i].v), 0);
		check_written(s, nums[i].name);
	}
	dobj_ser_reset(s);
	dobj_ser_number(s, NAN);
	check_written(s, "nan");
	dobj_ser_reset(s);
	dobj_ser_number(s, -INFINITY);
	check_written(s, "ninf");
	for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		dobj_ser_reset(s);
		CHECK_EQ_INT(dobj_ser_string(s, strs[i].utf8, strlen(strs[i].utf8)), 0);
		check_written(s, strs[i].name);
	}
	for (i = 0; i < 70; i++)
		memcpy(long2 + 3 * i, "\xe6\x97\xa5", 3);
	dobj_ser_reset(s);
	dobj_ser_string(s, long2, 210);
	check_written(s, "str_long2"); /* padding before the tag */

	dobj_ser_reset(s);
	dobj_ser_object_begin(s, NULL);
	dobj_ser_key(s, "ab", 2);
	dobj_ser_string(s, "\xe6\x97\xa5", 3);
	dobj_ser_object_end(s);
	check_written(s, "obj_pad");

	dobj_ser_reset(s); /* index keys first, ascending, as numbers */
	dobj_ser_object_begin(s, NULL);
	dobj_ser_key(s, "0", 1);
	dobj_ser_string(s, "zero", 4);
	dobj_ser_key(s, "2", 1);
	dobj_ser_string(s, "two", 3);
	dobj_ser_key(s, "b", 1);
	dobj_ser_number(s, 1);
	dobj_ser_key(s, "a", 1);
	dobj_ser_number(s, 3);
	dobj_ser_object_end(s);
	check_written(s, "obj_idx_order");

	dobj_ser_reset(s);
	dobj_ser_object_begin(s, NULL);
	dobj_ser_key(s, "01", 2);
	dobj_ser_number(s, 1);
	dobj_ser_key(s, "-1", 2);
	dobj_ser_number(s, 2);
	dobj_ser_key(s, "1.5", 3);
	dobj_ser_number(s, 3);
	dobj_ser_object_end(s);
	check_written(s, "obj_key_01");

	dobj_ser_reset(s);
	dobj_ser_object_begin(s, NULL);
	dobj_ser_key(s, "1073741823", 10);
	dobj_ser_number(s, 1);
	dobj_ser_key(s, "1073741824", 10);
	dobj_ser_number(s, 2);
	dobj_ser_key(s, "4294967294", 10);
	dobj_ser_number(s, 3);
	dobj_ser_key(s, "4294967295", 10);
	dobj_ser_number(s, 4);
	dobj_ser_object_end(s);
	check_written(s, "obj_key_big");

	dobj_ser_reset(s); /* holey arrays are sparse */
	dobj_ser_sparse_begin(s, 3, NULL);
	dobj_ser_key(s, "0", 1);
	dobj_ser_number(s, 1);
	dobj_ser_key(s, "2", 1);
	dobj_ser_number(s, 3);
	CHECK_EQ_INT(dobj_ser_sparse_end(s), 0);
	check_written(s, "arr_holey");

	dobj_ser_reset(s);
	dobj_ser_array_begin(s, 1, NULL);
	dobj_ser_number(s, 1);
	dobj_ser_key(s, "x", 1);
	dobj_ser_number(s, 2);
	CHECK_EQ_INT(dobj_ser_array_end(s), 0);
	check_written(s, "arr_prop");

	dobj_ser_reset(s); /* a double array: every element N */
	dobj_ser_array_begin(s, 2, NULL);
	dobj_ser_double(s, 1.5);
	dobj_ser_double(s, 2);
	dobj_ser_array_end(s);
	check_written(s, "arr_doubles");

	dobj_ser_reset(s);
	dobj_ser_array_begin(s, 2, &id);
	CHECK_EQ_INT(id, 0);
	dobj_ser_object_begin(s, &id);
	CHECK_EQ_INT(id, 1);
	dobj_ser_object_end(s);
	dobj_ser_ref(s, 1);
	dobj_ser_array_end(s);
	check_written(s, "ref_shared");

	dobj_ser_reset(s);
	dobj_ser_array_begin(s, 1, &id);
	CHECK_EQ_INT(dobj_ser_ref(s, id), 0); /* a cycle: the open array itself */
	dobj_ser_array_end(s);
	check_written(s, "ref_cycle");

	dobj_ser_reset(s);
	dobj_ser_array_begin(s, 2, NULL);
	CHECK_EQ_INT(dobj_ser_uint8array(s, "\x01\x02\x03\x04", 4, 0, 4, &bid, &id), 0);
	CHECK_EQ_INT(bid, 1);
	CHECK_EQ_INT(id, 2);
	CHECK_EQ_INT(dobj_ser_uint8array_of(s, bid, 2, 2, &id), 0);
	CHECK_EQ_INT(id, 3);
	dobj_ser_array_end(s);
	check_written(s, "u8_two_views");

	dobj_ser_reset(s);
	dobj_ser_uint8array(s, "\x01\x02\x03\x04", 4, 1, 2, NULL, NULL);
	check_written(s, "u8_sub");
	dobj_ser_reset(s);
	dobj_ser_bytes(s, NULL, 0, NULL);
	check_written(s, "u8_empty");

	dobj_ser_reset(s);
	dobj_ser_array_begin(s, 3, NULL);
	dobj_ser_date(s, 5, &id);
	CHECK_EQ_INT(id, 1);
	dobj_ser_object_begin(s, NULL);
	dobj_ser_object_end(s);
	dobj_ser_ref(s, id);
	dobj_ser_array_end(s);
	check_written(s, "date_ids");

	dobj_ser_reset(s);
	dobj_ser_date(s, 1700000000123.0, NULL);
	check_written(s, "date_now");

	dobj_ser_reset(s);
	dobj_ser_bigint(s, 1, NULL, 0); /* zero is never negative */
	check_written(s, "big_0");
	dobj_ser_reset(s);
	dobj_ser_bigint(s, 0, one, 1);
	check_written(s, "big_1");
	dobj_ser_reset(s);
	dobj_ser_bigint_i64(s, -1);
	check_written(s, "big_m1");
	dobj_ser_reset(s);
	dobj_ser_bigint(s, 1, two64, sizeof(two64));
	check_written(s, "big_m2_64");
	dobj_ser_reset(s);
	dobj_ser_bigint_i64(s, INT64_MIN);
	CHECK_EQ_INT(ser_hex(s, long2), 0);
	CHECK_STR(long2, "ff0f5a110000000000000080");

	dobj_ser_free(s);
}

static void test_string_inputs(void)
{
	dobj_ser *s = new_ser();
	char hex[256];
	static const uint16_t nihon[] = { 0x65e5, 0x672c }, latin[] = { 'h', 0xe9 };
	static const char *bad[] = {
		"\x80", "\xc0\x80", "\xc3", "\xe6\x97", "\xf5\x80\x80\x80", "\xf4\x90\x80\x80",
		"\xe0\x80\x80", "\xff", "a\xc3(",
	};
	size_t i;

	CHECK_EQ_INT(dobj_ser_string_utf16(s, nihon, 2), 0);
	ser_hex(s, hex);
	CHECK_STR(hex, "ff0f6304e5652c67");
	dobj_ser_reset(s);
	CHECK_EQ_INT(dobj_ser_string_utf16(s, latin, 2), 0); /* fits one byte */
	ser_hex(s, hex);
	CHECK_STR(hex, "ff0f220268e9");
	dobj_ser_reset(s);
	CHECK_EQ_INT(dobj_ser_string_latin1(s, (const unsigned char *)"h\xe9", 2), 0);
	ser_hex(s, hex);
	CHECK_STR(hex, "ff0f220268e9");
	/* A surrogate pair spelled as two WTF-8 halves is that pair. */
	dobj_ser_reset(s);
	CHECK_EQ_INT(dobj_ser_string(s, "\xed\xa0\xbd\xed\xb8\x80", 6), 0);
	ser_hex(s, hex);
	CHECK_STR(hex, "ff0f63043dd800de");
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		dobj_ser_reset(s);
		CHECK_EQ_INT(dobj_ser_string(s, bad[i], strlen(bad[i])), DOBJ_EARG);
		CHECK(strstr(dobj_error_last(), "not valid UTF-8") != NULL);
		/* poisoned until reset */
		CHECK_EQ_INT(dobj_ser_null(s), DOBJ_EARG);
	}
	dobj_ser_free(s);
}

/* Random strings of code points (lone surrogates included) round trip. */
static void test_string_round_trips(void)
{
	dobj_ser *s = new_ser();
	dobj_de *de = NULL;
	dobj_tok tok;
	unsigned char str[400];
	const unsigned char *blob;
	size_t n, blen;
	uint32_t seed = 12345, cp, prev_hi = 0;
	int round, k, ok = 1;

	for (round = 0; round < 2000; round++) {
		n = 0;
		prev_hi = 0;
		for (k = 0; k < (int)(seed % 40); k++) {
			seed = seed * 1103515245u + 12345u;
			switch ((seed >> 16) % 5) {
			case 0: cp = (seed >> 8) % 0x80; break;
			case 1: cp = 0x80 + (seed >> 8) % 0x80; break;
			case 2: cp = 0x100 + (seed >> 4) % 0xF000; break;
			case 3: cp = 0x10000 + (seed >> 4) % 0x100000; break;
			default: cp = 0xD800 + (seed >> 8) % 0x800; break;
			}
			/* a high then a low surrogate would be a pair: skip */
			if (prev_hi && cp >= 0xDC00 && cp <= 0xDFFF)
				cp = 'x';
			prev_hi = cp >= 0xD800 && cp <= 0xDBFF;
			if (cp < 0x80) {
				str[n++] = (unsigned char)cp;
			} else if (cp < 0x800) {
				str[n++] = (unsigned char)(0xC0 | cp >> 6);
				str[n++] = (unsigned char)(0x80 | (cp & 0x3F));
			} else if (cp < 0x10000) {
				str[n++] = (unsigned char)(0xE0 | cp >> 12);
				str[n++] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
				str[n++] = (unsigned char)(0x80 | (cp & 0x3F));
			} else {
				str[n++] = (unsigned char)(0xF0 | cp >> 18);
				str[n++] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
				str[n++] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
				str[n++] = (unsigned char)(0x80 | (cp & 0x3F));
			}
		}
		seed = seed * 1103515245u + 12345u;
		dobj_ser_reset(s);
		/* inside an array, at a varying offset, to exercise padding */
		dobj_ser_array_begin(s, 2, NULL);
		dobj_ser_string(s, "abc", seed % 4);
		if (dobj_ser_string(s, (const char *)str, n) != 0) {
			ok = 0;
			fprintf(stderr, "round %d: %s\n", round, dobj_error_last());
			break;
		}
		dobj_ser_array_end(s);
		dobj_ser_finish(s, &blob, &blen);
		if (dobj_de_reset(de ? de : (dobj_de_new(&de, blob, blen), de), blob, blen) != 0)
			ok = 0;
		dobj_de_next(de, &tok);
		dobj_de_next(de, &tok);
		if (dobj_de_next(de, &tok) != 0 || tok.type != DOBJ_TOK_STRING || tok.len != n ||
		    memcmp(tok.str, str, n) != 0) {
			ok = 0;
			fprintf(stderr, "round %d: string differs\n", round);
			break;
		}
		if (dobj_de_next(de, &tok) != 0 || dobj_de_next(de, &tok) != 0 ||
		    tok.type != DOBJ_TOK_EOF)
			ok = 0;
	}
	CHECK(ok);
	dobj_de_free(de);
	dobj_ser_free(s);
}

static void test_nested_round_trip(void)
{
	dobj_ser *s = new_ser();
	const unsigned char *blob;
	size_t len;
	text t = { 0 };
	uint32_t root, inner;

	/* {list: [1, {deep: new Map([[inner, new Set(["x"])]])}, inner], n: null}
	 * with `inner` repeated, and a Date and bytes inside. */
	dobj_ser_object_begin(s, &root);
	dobj_ser_key(s, "list", 4);
	dobj_ser_array_begin(s, 3, NULL);
	dobj_ser_number(s, 1);
	dobj_ser_object_begin(s, NULL);
	dobj_ser_key(s, "deep", 4);
	dobj_ser_map_begin(s, NULL);
	dobj_ser_object_begin(s, &inner);
	dobj_ser_key(s, "when", 4);
	dobj_ser_date(s, 86400000, NULL);
	dobj_ser_key(s, "raw", 3);
	dobj_ser_bytes(s, "\x00\xff", 2, NULL);
	dobj_ser_key(s, "back", 4);
	dobj_ser_ref(s, root);
	dobj_ser_object_end(s);
	dobj_ser_set_begin(s, NULL);
	dobj_ser_string(s, "x", 1);
	dobj_ser_set_end(s);
	dobj_ser_map_end(s);
	dobj_ser_object_end(s);
	dobj_ser_ref(s, inner);
	dobj_ser_array_end(s);
	dobj_ser_key(s, "n", 1);
	dobj_ser_null(s);
	CHECK_EQ_INT(dobj_ser_object_end(s), 0);
	CHECK_EQ_INT(dobj_ser_finish(s, &blob, &len), 0);
	CHECK_EQ_INT(describe(blob, len, &t), 0);
	CHECK_STR(t.p, "o0{list:A1[1,o2{deep:M3{o4{when:D5(86400000d),raw:V7<00ff>@0/2#6+,"
		"back:^0}=>S8{\"x\"}}},^4],n:null}");
	free(t.p);
	dobj_ser_free(s);
}

static void test_writer_misuse(void)
{
	dobj_ser *s = new_ser();
	const unsigned char *blob;
	size_t len;

	CHECK_EQ_INT(dobj_ser_finish(s, &blob, &len), DOBJ_ESTATE);
	CHECK(strstr(dobj_error_last(), "no value") != NULL);
	dobj_ser_null(s);
	CHECK_EQ_INT(dobj_ser_null(s), DOBJ_ESTATE);
	CHECK(strstr(dobj_error_last(), "already written") != NULL);

	dobj_ser_reset(s);
	dobj_ser_object_begin(s, NULL);
	CHECK_EQ_INT(dobj_ser_null(s), DOBJ_ESTATE);
	CHECK(strstr(dobj_error_last(), "keys must be strings or numbers") != NULL);

	dobj_ser_reset(s);
	dobj_ser_object_begin(s, NULL);
	CHECK_EQ_INT(dobj_ser_array_end(s), DOBJ_ESTATE);
	CHECK(strstr(dobj_error_last(), "ending an array while an object is open") != NULL);

	dobj_ser_reset(s);
	dobj_ser_object_begin(s, NULL);
	dobj_ser_key(s, "a", 1);
	CHECK_EQ_INT(dobj_ser_object_end(s), DOBJ_ESTATE);
	CHECK(strstr(dobj_error_last(), "key but no value") != NULL);

	dobj_ser_reset(s);
	dobj_ser_array_begin(s, 2, NULL);
	dobj_ser_null(s);
	CHECK_EQ_INT(dobj_ser_array_end(s), DOBJ_ESTATE);
	CHECK(strstr(dobj_error_last(), "length 2 ended after 1") != NULL);

	dobj_ser_reset(s);
	CHECK_EQ_INT(dobj_ser_hole(s), DOBJ_ESTATE);
	dobj_ser_reset(s);
	dobj_ser_map_begin(s, NULL);
	dobj_ser_null(s);
	CHECK_EQ_INT(dobj_ser_map_end(s), DOBJ_ESTATE);

	dobj_ser_reset(s);
	CHECK_EQ_INT(dobj_ser_ref(s, 0), DOBJ_EARG);
	dobj_ser_reset(s);
	dobj_ser_array_begin(s, 2, NULL);
	dobj_ser_object_begin(s, NULL);
	dobj_ser_object_end(s);
	CHECK_EQ_INT(dobj_ser_uint8array_of(s, 1, 0, 0, NULL), DOBJ_EARG);
	CHECK(strstr(dobj_error_last(), "not an ArrayBuffer") != NULL);
	dobj_ser_reset(s);
	CHECK_EQ_INT(dobj_ser_uint8array(s, "ab", 2, 1, 2, NULL, NULL), DOBJ_EARG);
	dobj_ser_reset(s);
	dobj_ser_object_begin(s, NULL);
	CHECK_EQ_INT(dobj_ser_bigint_i64(s, 1), DOBJ_ESTATE); /* not a key */

	/* finished blobs stay usable after reset */
	dobj_ser_reset(s);
	CHECK_EQ_INT(dobj_ser_bool(s, 1), 0);
	CHECK_EQ_INT(dobj_ser_finish(s, &blob, &len), 0);
	CHECK_EQ_INT(len, 3);
	dobj_ser_free(s);
	dobj_ser_free(NULL);
	dobj_de_free(NULL);
}

static void test_depth_limit(void)
{
	dobj_ser *s = new_ser();
	const unsigned char *blob;
	size_t len;
	unsigned char *deep;
	text t = { 0 };
	int i;

	for (i = 0; i < DOBJ_VALUE_MAX_DEPTH; i++)
		CHECK_EQ_INT(dobj_ser_array_begin(s, 1, NULL), 0);
	CHECK_EQ_INT(dobj_ser_array_begin(s, 0, NULL), DOBJ_EARG);
	CHECK(strstr(dobj_error_last(), "deeper than 256") != NULL);
	dobj_ser_reset(s);
	for (i = 0; i < DOBJ_VALUE_MAX_DEPTH; i++)
		dobj_ser_array_begin(s, i == DOBJ_VALUE_MAX_DEPTH - 1 ? 0 : 1, NULL);
	for (i = 0; i < DOBJ_VALUE_MAX_DEPTH; i++)
		CHECK_EQ_INT(dobj_ser_array_end(s), 0);
	CHECK_EQ_INT(dobj_ser_finish(s, &blob, &len), 0);
	CHECK_EQ_INT(describe(blob, len, &t), 0);

	/* one more level, made by hand: the reader refuses it */
	deep = malloc(2 + 2 * 257 + 3 * 257);
	len = 0;
	deep[len++] = 0xFF;
	deep[len++] = 0x0F;
	for (i = 0; i < 257; i++) {
		deep[len++] = 'A';
		deep[len++] = i == 256 ? 0 : 1;
	}
	for (i = 0; i < 257; i++) {
		deep[len++] = '$';
		deep[len++] = 0;
		deep[len++] = i == 0 ? 0 : 1;
	}
	CHECK_EQ_INT(describe(deep, len, &t), DOBJ_EINVALID);
	CHECK(strstr(t.p, "nested deeper than 256") != NULL);
	free(deep);
	free(t.p);
	dobj_ser_free(s);
}

/* Hand-made corrupt or unsupported blobs, and the message each gives. */
static const struct { const char *hex, *message; } corrupt[] = {
	{ "", "empty data" },
	{ "0f49", "no V8 serialization header" },
	{ "ff", "ends too early" },
	{ "ff10 4902", "version 16" },
	{ "ff0c 4902", "version 12" },
	{ "ff0f", "ends too early" },
	{ "ff0f 49", "ends too early" },
	{ "ff0f 4980808080808001", "varint longer than 32 bits" },
	{ "ff0f 4980808080ff", "varint longer than 32 bits" },
	{ "ff0f 49ffffffff1f", "larger than 2^32-1" },
	{ "ff0f 4e000000", "8 bytes needed" },
	{ "ff0f 2205 6865", "5 bytes needed" },
	{ "ff0f 22ffffffff0f 41", "4294967295 bytes needed" },
	{ "ff0f 6303 e565e5", "odd length" },
	{ "ff0f 4902 30", "1 bytes after the end" },
	{ "ff0f 4902 00", "1 bytes after the end" },
	{ "ff0f 6f 2201 61 4902 7b 02", "says 2 entries, 1 were read" },
	{ "ff0f 6f 2201 61 4902 2201 61 4904 7b 02", "duplicate key \"a\"" },
	{ "ff0f 6f 4902 4902 2201 31 4904 7b 02", "duplicate key \"1\"" },
	{ "ff0f 6f 2200 4902 2200 4904 7b 02", "duplicate key \"\"" },
	{ "ff0f 6f 30 4902 7b 01", "property key is not a string or a number" },
	{ "ff0f 6f 6f7b00 4902 7b 01", "property key is not a string or a number" },
	{ "ff0f 6f 2201 61 7b 01", "unexpected end tag '{'" },
	{ "ff0f 6f 2201 61 4902 24 00 00", "property key is not a string" },
	{ "ff0f 41 02 4902 24 00 02", "ended after 1 elements" },
	{ "ff0f 41 01 4902 24 00 02", "says length 2, it began with 1" },
	{ "ff0f 41 05 4902", "length 5 in 2 bytes" },
	{ "ff0f 41 01 4902 2206 6c656e677468 4902 24 01 01", "property \"length\"" },
	{ "ff0f 41 01 4902 4900 4904 24 01 01", "element 0 given twice" },
	{ "ff0f 61 02 4900 4902 40 01 03", "says length 3, it began with 2" },
	{ "ff0f 3b 4902 3a 01", "key without a value" },
	{ "ff0f 3b 4902 4904 3a 04", "says 4 entries, 2 were read" },
	{ "ff0f 27 4902 2c 02", "says 2 entries, 1 were read" },
	{ "ff0f 5e 00", "reference to object 0, which is not defined yet" },
	{ "ff0f 41 02 6f7b00 5e 02 24 00 02", "reference to object 2" },
	{ "ff0f 2d", "hole outside a dense array" },
	{ "ff0f 6f 2201 61 2d 7b 01", "hole outside a dense array" },
	{ "ff0f 56 42 00 00 00", "view without an ArrayBuffer" },
	{ "ff0f 42 02 0102 56 42 01 02 00", "outside a buffer of 2 bytes" },
	{ "ff0f 42 02 0102 56 42 03 00 00", "outside a buffer of 2 bytes" },
	{ "ff0f 42 02 0102 56 77 00 02 00", "Int16Array" },
	{ "ff0f 42 02 0102 56 3f 00 02 00", "DataView" },
	{ "ff0f 42 02 0102 56 42 00 02 01", "resizable" },
	{ "ff0f 42 02 0102 56 71 00 02 00", "BigInt64Array" },
	{ "ff0f 42 02 0102 56 01 00 02 00", "unknown view type 0x01" },
	{ "ff0f 41 03 6f7b00 5e01 56 42 00 00 00 24 00 03", "view without an ArrayBuffer" },
	{ "ff0f 42 05 0102", "5 bytes needed" },
	{ "ff0f 5a 10 0102", "8 bytes needed" },
	{ "ff0f 5a ffffffff07", "BigInt of" },
	{ "ff0f 52 2201 61 00", "RegExp" },
	{ "ff0f 72 2e", "Error" },
	{ "ff0f 79", "Boolean object" },
	{ "ff0f 6e 0000000000000000", "Number object" },
	{ "ff0f 73 2201 61", "String object" },
	{ "ff0f 5c 00", "host object" },
	{ "ff0f 70 00", "shared object" },
	{ "ff0f 75 00", "SharedArrayBuffer" },
	{ "ff0f 7e 00 00", "resizable ArrayBuffer" },
	{ "ff0f 74 00", "transferred ArrayBuffer" },
	{ "ff0f 77 00", "WebAssembly.Module" },
	{ "ff0f 6d 00", "WebAssembly.Memory" },
	{ "ff0f 01", "unknown tag 0x01" },
	{ "ff0f ff0f 4902", "version tag inside" },
	{ "ff0f 24 00 00", "unexpected end tag '$'" },
	{ "ff0f 6f 22 02 61", "2 bytes needed" },
	/* Indices at or past the length: V8 never writes them. */
	{ "ff0f 61 02 4908 4902 40 01 02", "index 4 of a sparse array of length 2" },
	{ "ff0f 61 02 4904 4902 40 01 02", "index 2 of a sparse array of length 2" },
	{ "ff0f 61 00 55 feffffff0f 30 40 01 00", "index 4294967294 of a sparse array of length 0" },
	{ "ff0f 41 01 4902 4902 4902 24 01 01", "index 1 of an array of length 1" },
	/* Lengths no blob this size can back (14 bytes claiming 2^32-1 slots). */
	{ "ff0f 61 ffffffff0f 40 00 ffffffff0f", "value too large to read: a sparse array of length 4294967295" },
};

static void test_corrupt_inputs(void)
{
	unsigned char *blob;
	text t = { 0 };
	size_t i, n;
	int rc;

	for (i = 0; i < sizeof(corrupt) / sizeof(corrupt[0]); i++) {
		n = strlen(corrupt[i].hex);
		blob = malloc(n / 2 + 1);
		n = unhex(corrupt[i].hex, blob, n / 2 + 1);
		rc = describe(blob, n, &t);
		if (rc != DOBJ_EINVALID || !strstr(t.p, corrupt[i].message))
			fprintf(stderr, "%s: rc %d, %s\n", corrupt[i].hex, rc, t.p);
		CHECK_EQ_INT(rc, DOBJ_EINVALID);
		CHECK(strstr(t.p, corrupt[i].message) != NULL);
		free(blob);
	}
	free(t.p);
}

/* What is not V8's own output but is valid input. */
static const struct { const char *hex, *shown; } lenient[] = {
	{ "ff0d 42 02 0102 56 42 00 02", "V1<0102>@0/2#0+" },   /* v13: no view flags */
	{ "ff0e 4902", "1" },
	{ "ff0f 00 00 4902", "1" },                             /* padding */
	{ "ff0f 3f 05 4902", "1" },                             /* object-count hint */
	{ "ff0f 55 ffffffff0f", "4294967295d" },                /* uint32 */
	{ "ff0f 55 07", "7" },
	{ "ff0f 53 03 e697a5", "\"\\xe6\\x97\\xa5\"" },         /* UTF-8 string */
	{ "ff0f 53 03 ed a0 80", "\"\\xef\\xbf\\xbd\\xef\\xbf\\xbd\\xef\\xbf\\xbd\"" },
	{ "ff0f 53 02 c3 28", "\"\\xef\\xbf\\xbd(\"" },
	{ "ff0f 41 02 2d 2d 24 00 02", "A0[-,-]" },              /* dense holes */
	{ "ff0f 5a 07 010000", "-0x1n" },                        /* short digits */
	{ "ff0f 5a 11 0000000000000000", "0x0n" },               /* -0n is 0n */
	{ "ff0f 6f 4e 000000000000f83f 30 7b 01", "o0{1.5:null}" },
	{ "ff0f 6f 4e 000000000000e03f 30 4e 000000000000e041 30 4e 00000000000055c0 30 7b 03",
		"o0{0.5:null,2147483648:null,-84:null}" },
	{ "ff0f 6f 4e 9a9999999999b93f 30 4e 000000000000e0c7 30 4e 8dedb5a0f7c6b03e 30 7b 03",
		"o0{0.1:null,-1.7014118346046923e+38:null,0.000001:null}" },
	{ "ff0f 41 02 42 01 07 5e 01 24 00 02", "A0[B1<07>,^1]" },
	{ "ff0f 41 02 42 01 07 00 56 42 00 01 00 5e 02 24 00 02", "A0[V2<07>@0/1#1+,^2]" },
};

static void test_lenient_inputs(void)
{
	unsigned char blob[128];
	text t = { 0 };
	size_t i, n;

	for (i = 0; i < sizeof(lenient) / sizeof(lenient[0]); i++) {
		n = unhex(lenient[i].hex, blob, sizeof(blob));
		CHECK_EQ_INT(describe(blob, n, &t), 0);
		CHECK_STR(t.p, lenient[i].shown);
	}
	free(t.p);
}

/* Every proper prefix of every golden blob fails cleanly. */
static void test_every_truncation_fails(void)
{
	text t = { 0 };
	size_t i, n;
	int bad = 0;

	for (i = 0; i < nvectors; i++) {
		for (n = 0; n < vectors[i].len; n++) {
			unsigned char *copy = malloc(n ? n : 1);
			memcpy(copy, vectors[i].blob, n);
			/* a buffer without the view after it is a whole value */
			if (describe(copy, n, &t) != DOBJ_EINVALID && vectors[i].blob[n] != 'V') {
				bad++;
				fprintf(stderr, "%s cut at %zu: accepted\n", vectors[i].name, n);
			}
			free(copy);
		}
	}
	CHECK_EQ_INT(bad, 0);
	free(t.p);
}

static uint32_t rnd(uint32_t *seed)
{
	*seed = *seed * 1664525u + 1013904223u;
	return *seed >> 8;
}

/* Random mutations: never a crash or an over-read (run under ASan), only
 * success or DOBJ_EINVALID; what reads must echo, and the echo must read
 * and echo to itself. */
static void test_mutation_fuzz(void)
{
	dobj_ser *s1 = new_ser(), *s2 = new_ser();
	text t = { 0 };
	uint32_t seed = 0xC0FFEE;
	unsigned char *buf;
	size_t n, i;
	int round, k, ok = 0, bad = 0;
	const unsigned char *e1, *e2;
	size_t l1, l2;

#define RND() rnd(&seed)
	for (round = 0; round < 100000; round++) {
		const struct vector *v = &vectors[RND() % nvectors];
		int muts = 1 + (int)(RND() % 4);
		n = v->len;
		buf = malloc(n + 8);
		memcpy(buf, v->blob, n);
		for (k = 0; k < muts; k++) {
			switch (RND() % 5) {
			case 0: /* flip bits */
				if (n) {
					i = RND() % n;
					buf[i] ^= (unsigned char)(1u << (RND() % 8));
				}
				break;
			case 1: /* set a byte */
				if (n) {
					i = RND() % n;
					buf[i] = (unsigned char)RND();
				}
				break;
			case 2: /* delete a byte */
				if (n) {
					i = RND() % n;
					memmove(buf + i, buf + i + 1, n - i - 1);
					n--;
				}
				break;
			case 3: /* insert a byte (interesting ones often) */
				if (n < v->len + 8) {
					static const unsigned char pick[] = { 0, 0x7f, 0x80, 0xff, 'I', 'o', '{',
						'A', '$', '^', 'B', 'V', '-', '"', 'c', ';', ':' };
					i = RND() % (n + 1);
					memmove(buf + i + 1, buf + i, n - i);
					buf[i] = (RND() & 1) ? pick[RND() % sizeof(pick)] : (unsigned char)RND();
					n++;
				}
				break;
			default: /* truncate */
				n = RND() % (n + 1);
			}
		}
		{
			/* an exact-size copy, so ASan sees any over-read */
			unsigned char *exact = malloc(n ? n : 1);
			int rc;
			memcpy(exact, buf, n);
			rc = describe(exact, n, &t);
			if (rc == 0) {
				ok++;
				if (echo(exact, n, s1) != 0 || dobj_ser_finish(s1, &e1, &l1) != 0 ||
				    echo(e1, l1, s2) != 0 || dobj_ser_finish(s2, &e2, &l2) != 0 ||
				    l1 != l2 || memcmp(e1, e2, l1) != 0) {
					bad++;
					if (bad < 5)
						fprintf(stderr, "fuzz round %d: echo failed: %s\n", round,
							dobj_error_last());
				}
			} else if (rc != DOBJ_EINVALID) {
				bad++;
				if (bad < 5)
					fprintf(stderr, "fuzz round %d: rc %d %s\n", round, rc, t.p);
			}
			free(exact);
		}
		free(buf);
	}
#undef RND
	printf("  fuzz: 100000 mutations, %d still valid, all others refused cleanly\n", ok);
	CHECK_EQ_INT(bad, 0);
	CHECK(ok > 1000);
	free(t.p);
	dobj_ser_free(s1);
	dobj_ser_free(s2);
}

static void test_skip_and_reuse(void)
{
	unsigned char blob[64];
	size_t n = unhex("ff0f 41 03 6f 2201 61 41 01 4902 24 00 01 7b 01 4904 4906 24 00 03", blob, sizeof(blob));
	dobj_de *de = NULL;
	dobj_tok tok;

	CHECK_EQ_INT(dobj_de_new(&de, blob, n), 0);
	CHECK_EQ_INT(dobj_de_version(de), 15);
	CHECK_EQ_INT(dobj_de_next(de, &tok), 0);
	CHECK_EQ_INT(tok.type, DOBJ_TOK_ARRAY);
	CHECK_EQ_INT(tok.length, 3);
	CHECK_EQ_INT(dobj_de_next(de, &tok), 0);
	CHECK_EQ_INT(tok.type, DOBJ_TOK_OBJECT);
	CHECK_EQ_INT(tok.depth, 1);
	CHECK_EQ_INT(dobj_de_skip(de), 0); /* the whole {a: [1]} */
	CHECK_EQ_INT(dobj_de_next(de, &tok), 0);
	CHECK_EQ_INT(tok.type, DOBJ_TOK_INT32);
	CHECK_EQ_INT(tok.i32, 2);
	CHECK_EQ_INT(dobj_de_skip(de), 0); /* not a begin: nothing */
	CHECK_EQ_INT(dobj_de_next(de, &tok), 0);
	CHECK_EQ_INT(tok.i32, 3);
	CHECK_EQ_INT(dobj_de_next(de, &tok), 0);
	CHECK_EQ_INT(tok.type, DOBJ_TOK_ARRAY_END);
	CHECK_EQ_INT(tok.count, 0);
	CHECK_EQ_INT(tok.length, 3);
	CHECK_EQ_INT(dobj_de_next(de, &tok), 0);
	CHECK_EQ_INT(tok.type, DOBJ_TOK_EOF);
	CHECK_EQ_INT(dobj_de_next(de, &tok), 0);
	CHECK_EQ_INT(tok.type, DOBJ_TOK_EOF);

	/* a failure sticks, with its message */
	CHECK_EQ_INT(dobj_de_reset(de, blob, n - 1), 0);
	while (dobj_de_next(de, &tok) == 0 && tok.type != DOBJ_TOK_EOF)
		;
	CHECK_EQ_INT(dobj_error_last_code(), DOBJ_EINVALID);
	dobj_error_set(0, "other");
	CHECK_EQ_INT(dobj_de_next(de, &tok), DOBJ_EINVALID);
	CHECK(strstr(dobj_error_last(), "ends too early") != NULL);

	/* the key fields */
	n = unhex("ff0f 6f 4902 30 2201 78 30 4e 000000000000d041 30 7b 03", blob, sizeof(blob));
	CHECK_EQ_INT(dobj_de_reset(de, blob, n), 0);
	dobj_de_next(de, &tok);
	dobj_de_next(de, &tok);
	CHECK(tok.key && tok.is_index && tok.index == 1 && tok.type == DOBJ_TOK_INT32);
	dobj_de_next(de, &tok);
	CHECK(!tok.key && tok.type == DOBJ_TOK_NULL);
	dobj_de_next(de, &tok);
	CHECK(tok.key && !tok.is_index && tok.type == DOBJ_TOK_STRING);
	dobj_de_next(de, &tok);
	dobj_de_next(de, &tok);
	CHECK(tok.key && tok.is_index && tok.index == 1073741824u && tok.len == 10);
	dobj_de_free(de);
}

/* Arrays claim slots in proportion to the blob: 300 sparse arrays of 2^20
 * holes in 2.7 KB (2.4 GB as Python lists) fail at the second array. */
static void test_array_slots_are_bounded(void)
{
	size_t n = 300, len = 0, i;
	unsigned char *blob = malloc(16 + n * 9);
	text t = { 0 };
	dobj_val *v;

	len = unhex("ff0f 41 ac02", blob, 5); /* [ ... 300 items ] */
	for (i = 0; i < n; i++)
		len += unhex("61 808040 40 00 808040", blob + len, 9);
	len += unhex("24 00 ac02", blob + len, 4);
	CHECK_EQ_INT(describe(blob, len, &t), DOBJ_EINVALID);
	if (!strstr(t.p, "value too large to read: a sparse array of length 1048576 at byte 14"))
		fprintf(stderr, "%s\n", t.p);
	CHECK(strstr(t.p, "value too large to read: a sparse array of length 1048576 at byte 14") != NULL);
	CHECK_EQ_INT(dobj_val_decode(blob, len, &v), DOBJ_EINVALID);
	CHECK(strstr(dobj_error_last(), "value too large") != NULL);
	/* One such array is fine: 2^20 is within the base allowance. */
	len = unhex("ff0f 61 808040 40 00 808040", blob, 11);
	CHECK_EQ_INT(describe(blob, len, &t), 0);
	CHECK_STR(t.p, "a0(1048576)[]");
	/* Nested dense arrays each claiming the bytes left add up too. */
	free(blob);
	blob = malloc(2 << 20);
	len = 2;
	blob[0] = 0xff;
	blob[1] = 0x0f;
	for (i = 0; i < 200; i++) { /* A n, A n-4, ...: each length fits what is left */
		uint32_t left = (2u << 20) - 2 - 4 * (uint32_t)(i + 1);
		blob[len++] = 'A';
		blob[len++] = (unsigned char)(0x80 | (left & 0x7f));
		blob[len++] = (unsigned char)(0x80 | ((left >> 7) & 0x7f));
		blob[len++] = (unsigned char)(left >> 14);
	}
	memset(blob + len, '_', (2u << 20) - len);
	CHECK_EQ_INT(describe(blob, 2u << 20, &t), DOBJ_EINVALID);
	CHECK(strstr(t.p, "value too large to read: an array of length") != NULL);
	free(blob);
	free(t.p);
}

/* dobj's integer rule: I in the Smi range, N within ±2^53, Z beyond. */
static void test_integer_rule(void)
{
	static const struct { int64_t v; const char *hex; } w[] = {
		{ 0, "ff0f4900" },
		{ 1073741823, "ff0f49feffffff07" },
		{ -1073741824, "ff0f49ffffffff07" },
		{ 1073741824, "ff0f4e000000000000d041" },
		{ -1073741825, "ff0f4e000040000000d0c1" },
		{ 1099511627776, "ff0f4e0000000000007042" },
		{ 9007199254740992, "ff0f4e0000000000004043" },
		{ -9007199254740992, "ff0f4e00000000000040c3" },
		{ 9007199254740993, "ff0f5a100100000000002000" },
		{ -9007199254740993, "ff0f5a110100000000002000" },
		{ INT64_MIN, "ff0f5a110000000000000080" },
	};
	dobj_ser *s;
	const unsigned char *data;
	size_t len, i;
	char hex[64];

	dobj_ser_new(&s);
	for (i = 0; i < sizeof(w) / sizeof(w[0]); i++) {
		dobj_ser_reset(s);
		CHECK_EQ_INT(dobj_ser_integer(s, w[i].v), 0);
		CHECK_EQ_INT(dobj_ser_finish(s, &data, &len), 0);
		tohex(data, len, hex);
		CHECK_STR(hex, w[i].hex);
	}
	dobj_ser_free(s);
	/* Reading: I is an integer; N only when whole, past the Smi range and
	 * within ±2^53 (how V8 stores such integers). */
	CHECK(dobj_number_is_integer(5, 1));
	CHECK(dobj_number_is_integer(1073741824.0, 0));
	CHECK(dobj_number_is_integer(-1073741825.0, 0));
	CHECK(dobj_number_is_integer(1764547200000.0, 0)); /* a ms timestamp */
	CHECK(dobj_number_is_integer(9007199254740992.0, 0));
	CHECK(dobj_number_is_integer(-9007199254740992.0, 0));
	CHECK(!dobj_number_is_integer(9007199254740994.0, 0));
	CHECK(!dobj_number_is_integer(1.0, 0));
	CHECK(!dobj_number_is_integer(0.0, 0));
	CHECK(!dobj_number_is_integer(-0.0, 0));
	CHECK(!dobj_number_is_integer(1073741823.0, 0));
	CHECK(!dobj_number_is_integer(1099511627776.5, 0));
	CHECK(!dobj_number_is_integer(NAN, 0));
	CHECK(!dobj_number_is_integer(INFINITY, 0));
	CHECK(!dobj_number_is_integer(-INFINITY, 0));
}

static void test_key_index(void)
{
	uint32_t i = 7;

	CHECK(dobj_value_key_index("0", 1, &i) && i == 0);
	CHECK(dobj_value_key_index("4294967294", 10, &i) && i == 4294967294u);
	CHECK(!dobj_value_key_index("4294967295", 10, &i));
	CHECK(!dobj_value_key_index("99999999999", 11, &i));
	CHECK(!dobj_value_key_index("01", 2, &i));
	CHECK(!dobj_value_key_index("", 0, &i));
	CHECK(!dobj_value_key_index("-1", 2, &i));
	CHECK(!dobj_value_key_index("1e3", 3, &i));
}

int main(void)
{
	size_t i;

	load_vectors();
	RUN(test_reference_goldens_read);
	RUN(test_reference_goldens_write);
	RUN(test_workerd_vectors_read_and_echo);
	RUN(test_workerd_vectors_shown);
	RUN(test_writer_matches_workerd);
	RUN(test_string_inputs);
	RUN(test_string_round_trips);
	RUN(test_nested_round_trip);
	RUN(test_writer_misuse);
	RUN(test_depth_limit);
	RUN(test_corrupt_inputs);
	RUN(test_lenient_inputs);
	RUN(test_every_truncation_fails);
	RUN(test_skip_and_reuse);
	RUN(test_key_index);
	RUN(test_array_slots_are_bounded);
	RUN(test_integer_rule);
	RUN(test_mutation_fuzz);
	for (i = 0; i < nvectors; i++)
		free(vectors[i].blob);
	return DONE();
}
