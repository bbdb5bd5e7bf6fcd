/* libFuzzer target for ID strings and names (not part of the default
 * build: tests/c/test_fuzz.c runs a time-bounded mutation fuzz of the same
 * in every build):
 *
 *   make fuzz                  (every target; FUZZ_SECONDS=120 each, clang)
 *
 * idFromString takes the ID's own hex only; a name that is taken names one
 * object, whose string parses back to it. */
#include <ctype.h>
#include <stdlib.h>

#include "dobj.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t len)
{
	static dobj_idkey *key;
	char hex[DOBJ_ID_HEX_LEN];
	dobj_id id, again;
	size_t i;
	int rc;

	if (!key && dobj_idkey_new(&key, "fuzz", 4) != DOBJ_OK)
		abort();
	rc = dobj_id_from_string(key, (const char *)data, len, &id);
	if (rc == DOBJ_OK) {
		if (len != DOBJ_ID_HEX_LEN)
			abort();
		dobj_id_to_hex(&id, hex);
		for (i = 0; i < len; i++)
			if (tolower(data[i]) != hex[i])
				abort();
	} else if (rc != DOBJ_EINVALID && rc != DOBJ_EFOREIGN) {
		abort();
	}
	rc = dobj_id_from_name(key, (const char *)data, len, &id);
	if (rc == DOBJ_OK) {
		dobj_id_to_hex(&id, hex);
		if (dobj_id_from_string(key, hex, DOBJ_ID_HEX_LEN, &again) != DOBJ_OK ||
		    !dobj_id_equal(&id, &again))
			abort();
	} else if (rc != DOBJ_EARG) {
		abort();
	}
	return 0;
}
