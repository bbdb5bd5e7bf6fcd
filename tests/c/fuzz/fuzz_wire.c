/* libFuzzer target for a request read off the wire (dobj/wire.h; not part
 * of the default build: tests/c/test_fuzz.c runs a time-bounded mutation
 * fuzz of the same rules in every build):
 *
 *   make fuzz                  (every target; FUZZ_SECONDS=120 each, clang)
 *
 * The input is lines: the method, the target, then "name:value" headers.
 * Every request is taken or refused with the status its rule names. */
#include <stdlib.h>
#include <string.h>

#include "dobj.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t len)
{
	char *buf = malloc(len + 1), *line[64];
	size_t lens[64], i, start = 0;
	dobj_msg *m = NULL;
	int n = 0, k, status = 0, rc;

	if (!buf)
		return 0;
	memcpy(buf, data, len);
	buf[len] = 0;
	for (i = 0; i <= len && n < 64; i++)
		if (i == len || buf[i] == '\n') {
			line[n] = buf + start;
			lens[n++] = i - start;
			buf[i] = 0;
			start = i + 1;
		}
	if (n < 2)
		goto done;
	rc = dobj_msg_wire_begin(line[0], lens[0], line[1], lens[1], &m, &status);
	if (rc != 0) {
		if (rc != DOBJ_EARG || m || (status != 400 && status != 414 && status != 501))
			abort();
		goto done;
	}
	for (k = 2; k < n; k++) {
		char *colon = memchr(line[k], ':', lens[k]);
		if (!colon)
			continue;
		*colon = 0;
		if ((rc = dobj_msg_add_header(m, line[k], colon + 1)) < 0) {
			if (rc != DOBJ_ETYPE && rc != DOBJ_EARG)
				abort();
			goto done;
		}
	}
	rc = dobj_msg_wire_finish(m, len & 1 ? "127.0.0.1:8787" : NULL, &status);
	if (rc != 0 && (rc != DOBJ_EARG || (status != 400 && status != 413 && status != 431)))
		abort();
	if (rc == 0 && strncmp(m->url, "http://", 7) != 0 && strncmp(m->url, "https://", 8) != 0)
		abort();
done:
	dobj_msg_free(m);
	free(buf);
	return 0;
}
