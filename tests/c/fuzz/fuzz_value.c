/* libFuzzer target for the value reader (not part of the default build):
 *
 *   make fuzz                  (both targets; FUZZ_SECONDS=120 each, clang)
 *
 * Every input must either read to the end or fail with DOBJ_EINVALID; what
 * reads is fed back to the writer, whose output must read again and
 * reproduce itself. */
#include <stdlib.h>
#include <string.h>

#include "dobj.h"

static int echo(const unsigned char *data, size_t len, dobj_ser *ser)
{
	dobj_de *de = NULL;
	dobj_tok t;
	uint32_t id;
	int rc;

	dobj_ser_reset(ser);
	rc = dobj_de_new(&de, data, len);
	while (rc == 0 && (rc = dobj_de_next(de, &t)) == 0 && t.type != DOBJ_TOK_EOF) {
		switch (t.type) {
		case DOBJ_TOK_UNDEFINED: rc = dobj_ser_undefined(ser); break;
		case DOBJ_TOK_NULL: rc = dobj_ser_null(ser); break;
		case DOBJ_TOK_TRUE: rc = dobj_ser_bool(ser, 1); break;
		case DOBJ_TOK_FALSE: rc = dobj_ser_bool(ser, 0); break;
		case DOBJ_TOK_HOLE: rc = dobj_ser_hole(ser); break;
		case DOBJ_TOK_INT32: rc = dobj_ser_int32(ser, t.i32); break;
		case DOBJ_TOK_DOUBLE: rc = dobj_ser_double(ser, t.number); break;
		case DOBJ_TOK_BIGINT: rc = dobj_ser_bigint(ser, t.negative, t.bytes, t.len); break;
		case DOBJ_TOK_STRING: rc = dobj_ser_string(ser, t.str, t.len); break;
		case DOBJ_TOK_OBJECT: rc = dobj_ser_object_begin(ser, &id); break;
		case DOBJ_TOK_OBJECT_END: rc = dobj_ser_object_end(ser); break;
		case DOBJ_TOK_ARRAY: rc = dobj_ser_array_begin(ser, t.length, &id); break;
		case DOBJ_TOK_ARRAY_END: rc = dobj_ser_array_end(ser); break;
		case DOBJ_TOK_SPARSE: rc = dobj_ser_sparse_begin(ser, t.length, &id); break;
		case DOBJ_TOK_SPARSE_END: rc = dobj_ser_sparse_end(ser); break;
		case DOBJ_TOK_MAP: rc = dobj_ser_map_begin(ser, &id); break;
		case DOBJ_TOK_MAP_END: rc = dobj_ser_map_end(ser); break;
		case DOBJ_TOK_SET: rc = dobj_ser_set_begin(ser, &id); break;
		case DOBJ_TOK_SET_END: rc = dobj_ser_set_end(ser); break;
		case DOBJ_TOK_DATE: rc = dobj_ser_date(ser, t.number, &id); break;
		case DOBJ_TOK_BUFFER: rc = dobj_ser_buffer(ser, t.bytes, t.len, &id); break;
		case DOBJ_TOK_REF: rc = dobj_ser_ref(ser, t.id); break;
		case DOBJ_TOK_VIEW:
			rc = t.buffer_new ? dobj_ser_uint8array(ser, t.buffer, t.buffer_len, t.offset,
				t.len, NULL, &id) : dobj_ser_uint8array_of(ser, t.buffer_id, t.offset, t.len, &id);
			break;
		default: abort();
		}
	}
	dobj_de_free(de);
	return rc;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t len)
{
	static dobj_ser *a, *b;
	const unsigned char *pa, *pb;
	size_t la, lb;
	int rc;

	if (!a && (dobj_ser_new(&a) < 0 || dobj_ser_new(&b) < 0))
		abort();
	rc = echo(data, len, a);
	if (rc == DOBJ_EINVALID)
		return 0;
	if (rc != 0 || dobj_ser_finish(a, &pa, &la) != 0)
		abort();
	if (echo(pa, la, b) != 0 || dobj_ser_finish(b, &pb, &lb) != 0 || la != lb ||
	    memcmp(pa, pb, la) != 0)
		abort();
	return 0;
}
