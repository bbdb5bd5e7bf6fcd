/* libFuzzer target for the config parsers (not part of the default build;
 * tests/c/test_config.c runs a deterministic mutation fuzz in every build):
 *
 *   make fuzz                  (both targets; FUZZ_SECONDS=120 each, clang)
 *
 * Every input parses or fails with DOBJ_EINVALID (DOBJ_EARG when too large),
 * as TOML, as JSONC and as dotenv. */
#include <stdlib.h>

#include "dobj.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t len)
{
	dobj_val *v = NULL;
	int rc;

	rc = dobj_config_parse(&v, (const char *)data, len, DOBJ_CONFIG_TOML, "fuzz");
	if (rc != 0 && rc != DOBJ_EINVALID && rc != DOBJ_EARG)
		abort();
	dobj_val_free(v);
	v = NULL;
	rc = dobj_config_parse(&v, (const char *)data, len, DOBJ_CONFIG_JSONC, "fuzz");
	if (rc != 0 && rc != DOBJ_EINVALID && rc != DOBJ_EARG)
		abort();
	dobj_val_free(v);
	v = NULL;
	rc = dobj_config_parse_dotenv(&v, (const char *)data, len, "fuzz");
	if (rc != 0 && rc != DOBJ_EINVALID && rc != DOBJ_EARG)
		abort();
	dobj_val_free(v);
	return 0;
}
