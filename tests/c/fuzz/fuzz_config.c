/* libFuzzer target for the config parsers (not part of the default build;
 * tests/c/test_config.c runs a deterministic mutation fuzz in every build):
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icore/include -Icore/src \
 *     tests/c/fuzz/fuzz_config.c core/src/config_text.c core/src/config_json.c \
 *     core/src/config_toml.c core/src/config_dotenv.c core/src/val_tree.c \
 *     core/src/error.c core/src/id.c -lcrypto -lm -o fuzz_config
 *   ./fuzz_config -max_total_time=60 tests/config/project_toml tests/config/project_jsonc
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
