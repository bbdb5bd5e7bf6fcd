/* dobj_val: building, reading, equality, and V8 blobs both ways. */
#include <math.h>

#include "testhost.h"

static void hex_of(const unsigned char *p, size_t n, char *out)
{
	size_t i;
	for (i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02X", p[i]);
	out[2 * n] = 0;
}

static void check_encodes(dobj_val *v, const char *want_hex)
{
	unsigned char *blob;
	size_t len;
	char hex[512];
	dobj_val *back;
	CHECK_EQ_INT(dobj_val_encode(v, &blob, &len), DOBJ_OK);
	hex_of(blob, len, hex);
	CHECK_STR(hex, want_hex);
	CHECK_EQ_INT(dobj_val_decode(blob, len, &back), DOBJ_OK);
	CHECK(dobj_val_equal(v, back));
	dobj_val_free(back);
	free(blob);
	dobj_val_free(v);
}

static void test_reference_encodings(void)
{
	dobj_val *o = dobj_val_object(), *a = dobj_val_array(), *m = dobj_val_map(), *s = dobj_val_set();
	unsigned char big[] = { 0xD2, 0x0A, 0x1F, 0xEB, 0x8C, 0xA9, 0x54, 0xAB };
	check_encodes(dobj_val_number(1), "FF0F4902");
	check_encodes(dobj_val_number(-5), "FF0F4909");
	check_encodes(dobj_val_number(1099511627776.0), "FF0F4E0000000000007042");
	check_encodes(dobj_val_number(1.5), "FF0F4E000000000000F83F");
	check_encodes(dobj_val_bool(1), "FF0F54");
	check_encodes(dobj_val_null(), "FF0F30");
	check_encodes(dobj_val_string("hello", 5), "FF0F220568656C6C6F");
	check_encodes(dobj_val_string("h\xc3\xa9llo", 6), "FF0F220568E96C6C6F");
	check_encodes(dobj_val_string("\xe6\x97\xa5\xe6\x9c\xac", 6), "FF0F6304E5652C67");
	dobj_val_put(o, "x", 1, dobj_val_number(1));
	dobj_val_put(o, "y", 1, dobj_val_string("z", 1));
	check_encodes(o, "FF0F6F220178490222017922017A7B02");
	dobj_val_push(a, dobj_val_number(1));
	dobj_val_push(a, dobj_val_string("a", 1));
	dobj_val_push(a, dobj_val_null());
	check_encodes(a, "FF0F4103490222016130240003");
	check_encodes(dobj_val_bytes("\1\2\3", 3), "FF0F4203010203564200030" "0");
	check_encodes(dobj_val_date(0), "FF0F440000000000000000");
	dobj_val_map_put(m, dobj_val_string("k", 1), dobj_val_number(1));
	check_encodes(m, "FF0F3B22016B49023A02");
	dobj_val_push(s, dobj_val_number(1));
	check_encodes(s, "FF0F2749022C01");
	check_encodes(dobj_val_bigint(0, big, 8), "FF0F5A10D20A1FEB8CA954AB");
}

static void test_shared_values_use_back_references(void)
{
	dobj_val *inner = dobj_val_object(), *outer = dobj_val_array(), *back;
	unsigned char *blob;
	size_t len;
	dobj_val_put(inner, "n", 1, dobj_val_number(7));
	dobj_val_push(outer, dobj_val_ref(inner));
	dobj_val_push(outer, inner);
	CHECK_EQ_INT(dobj_val_encode(outer, &blob, &len), DOBJ_OK);
	CHECK_EQ_INT(blob[len - 5], '^'); /* the second item is a reference */
	CHECK_EQ_INT(dobj_val_decode(blob, len, &back), DOBJ_OK);
	CHECK(dobj_val_equal(outer, back));
	CHECK(dobj_val_at(back, 0) == dobj_val_at(back, 1)); /* still shared */
	dobj_val_free(back);
	free(blob);
	dobj_val_free(outer);
}

static void test_bad_blobs_fail_cleanly(void)
{
	/* [ ^0 ] — an array containing itself; a truncated string; garbage. */
	static const unsigned char cyclic[] = { 0xFF, 0x0F, 0x41, 0x01, 0x5E, 0x00, 0x24, 0x00, 0x01 };
	static const unsigned char truncated[] = { 0xFF, 0x0F, 0x22, 0x05, 0x68 };
	static const unsigned char regexp[] = { 0xFF, 0x0F, 0x52, 0x01, 0x61, 0x00 };
	dobj_val *v;
	CHECK_EQ_INT(dobj_val_decode(cyclic, sizeof(cyclic), &v), DOBJ_EINVALID);
	CHECK(strstr(dobj_error_last(), "cyclic") != NULL);
	CHECK(v == NULL);
	CHECK_EQ_INT(dobj_val_decode(truncated, sizeof(truncated), &v), DOBJ_EINVALID);
	CHECK(dobj_val_decode(regexp, sizeof(regexp), &v) < 0);
	CHECK(dobj_val_decode("", 0, &v) < 0);
	CHECK(dobj_val_decode(NULL, 0, &v) < 0);
}

static void test_integers_and_reading(void)
{
	dobj_val *v = dobj_val_bigint_i64(INT64_MIN), *n = dobj_val_number(-3);
	int64_t x;
	uint64_t u;
	CHECK_EQ_INT(dobj_val_to_i64(v, &x), DOBJ_OK);
	CHECK(x == INT64_MIN);
	CHECK(dobj_val_to_u64(v, &u) < 0);
	CHECK_EQ_INT(dobj_val_to_i64(n, &x), DOBJ_OK);
	CHECK_EQ_INT(x, -3);
	CHECK(dobj_val_to_u64(n, &u) < 0);
	CHECK_STR(dobj_val_type_name(v), "bigint");
	CHECK(isnan(dobj_val_get_number(v)));
	CHECK(dobj_val_push(n, dobj_val_null()) == DOBJ_EARG); /* not a container */
	dobj_val_free(v);
	dobj_val_free(n);
}

/* Numbers keep int vs float through encode/decode, by the integer rule. */
static void test_numbers_keep_the_integer_rule(void)
{
	dobj_val *v;
	check_encodes(dobj_val_double(1.0), "FF0F4E000000000000F03F");
	check_encodes(dobj_val_double(-0.0), "FF0F4E0000000000000080");
	check_encodes(dobj_val_integer(1099511627776), "FF0F4E0000000000007042");
	check_encodes(dobj_val_integer(1152921504606846976), "FF0F5A100000000000000010");
	check_encodes(dobj_val_integer(-7), "FF0F490D");
	/* A float 1.0 is not an integer, a JS 1 (dobj_val_number) is. */
	v = dobj_val_double(1.0);
	CHECK(!dobj_val_is_integer(v));
	dobj_val_free(v);
	v = dobj_val_number(1.0);
	CHECK(dobj_val_is_integer(v));
	dobj_val_free(v);
	v = dobj_val_double(1099511627776.0); /* V8's form of the integer 2^40 */
	CHECK(dobj_val_is_integer(v));
	dobj_val_free(v);
	v = dobj_val_integer(1152921504606846976); /* 2^60: a BigInt */
	CHECK_EQ_INT(dobj_val_type_of(v), DOBJ_VAL_BIGINT);
	dobj_val_free(v);
	v = dobj_val_double(-0.0);
	CHECK(!dobj_val_is_integer(v));
	dobj_val_free(v);
	{
		dobj_val *a = dobj_val_double(1.0), *b = dobj_val_number(1.0);
		CHECK(!dobj_val_equal(a, b));
		dobj_val_free(a);
		dobj_val_free(b);
	}
	{ /* and after a round trip */
		static const unsigned char one_n[] = { 0xFF, 0x0F, 0x4E, 0, 0, 0, 0, 0, 0, 0xF0, 0x3F };
		static const unsigned char one_i[] = { 0xFF, 0x0F, 0x49, 0x02 };
		CHECK_EQ_INT(dobj_val_decode(one_n, sizeof(one_n), &v), DOBJ_OK);
		CHECK(!dobj_val_is_integer(v) && dobj_val_get_number(v) == 1.0);
		dobj_val_free(v);
		CHECK_EQ_INT(dobj_val_decode(one_i, sizeof(one_i), &v), DOBJ_OK);
		CHECK(dobj_val_is_integer(v) && dobj_val_get_number(v) == 1.0);
		dobj_val_free(v);
	}
}

/* A sparse array's holes do not cost a value each, and lengths the blob
 * cannot back are refused before anything is allocated. */
static void test_decode_is_bounded_by_the_blob(void)
{
	/* a(2^20) with "x" at 5; a(2^32-1) in 15 bytes; an index past the length. */
	static const unsigned char holey[] = { 0xFF, 0x0F, 0x61, 0x80, 0x80, 0x40, 0x49, 0x0A,
		0x22, 0x01, 0x78, 0x40, 0x01, 0x80, 0x80, 0x40 };
	static const unsigned char huge[] = { 0xFF, 0x0F, 0x61, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F,
		0x40, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F };
	static const unsigned char past[] = { 0xFF, 0x0F, 0x61, 0x00, 0x55, 0xFE, 0xFF, 0xFF,
		0xFF, 0x0F, 0x30, 0x40, 0x01, 0x00 };
	dobj_val *v;
	CHECK_EQ_INT(dobj_val_decode(holey, sizeof(holey), &v), DOBJ_OK);
	CHECK_EQ_INT(dobj_val_len(v), 1 << 20);
	CHECK(dobj_val_at(v, 0) == dobj_val_at(v, 1 << 19)); /* one shared undefined */
	CHECK_STR(dobj_val_get_string(dobj_val_at(v, 5), NULL), "x");
	dobj_val_free(v);
	CHECK_EQ_INT(dobj_val_decode(huge, sizeof(huge), &v), DOBJ_EINVALID);
	CHECK(strstr(dobj_error_last(), "value too large to read") != NULL);
	CHECK(v == NULL);
	CHECK_EQ_INT(dobj_val_decode(past, sizeof(past), &v), DOBJ_EINVALID);
	CHECK(strstr(dobj_error_last(), "index 4294967294 of a sparse array of length 0") != NULL);
}

int main(void)
{
	RUN(test_reference_encodings);
	RUN(test_shared_values_use_back_references);
	RUN(test_bad_blobs_fail_cleanly);
	RUN(test_integers_and_reading);
	RUN(test_numbers_keep_the_integer_rule);
	RUN(test_decode_is_bounded_by_the_blob);
	return DONE();
}
