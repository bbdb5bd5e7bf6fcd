/* ID generation and parsing: golden vectors from workerd, errors, modes. */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dobj.h"
#include "check.h"

/* workerd's vectors, from tests/vectors/ids.tsv (the file every suite reads). */
#define MAX_GOLDEN 64
static struct golden {
	char key[64], name[64], hex[65];
} golden[MAX_GOLDEN];
static size_t ngolden;

static void load_golden(void)
{
	char path[1024], line[512];
	const char *slash = strrchr(__FILE__, '/');
	FILE *f;

	snprintf(path, sizeof(path), "%.*s../vectors/ids.tsv",
		slash ? (int)(slash - __FILE__ + 1) : 0, __FILE__);
	f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "cannot open %s\n", path);
		exit(1);
	}
	while (fgets(line, sizeof(line), f)) {
		char *name, *hex;
		struct golden *g = &golden[ngolden];
		if (line[0] == '#' || line[0] == '\n')
			continue;
		line[strcspn(line, "\r\n")] = 0;
		name = strchr(line, '\t');
		hex = name ? strchr(name + 1, '\t') : NULL;
		CHECK(hex && ngolden < MAX_GOLDEN);
		if (!hex || ngolden == MAX_GOLDEN)
			break;
		*name++ = 0;
		*hex++ = 0;
		CHECK(strlen(line) < sizeof(g->key) && strlen(name) < sizeof(g->name) && strlen(hex) == 64);
		snprintf(g->key, sizeof(g->key), "%.63s", line);
		snprintf(g->name, sizeof(g->name), "%.63s", name);
		snprintf(g->hex, sizeof(g->hex), "%.64s", hex);
		ngolden++;
	}
	fclose(f);
	CHECK(ngolden >= 6);
}

/* The vector of one key and name (the tests below build on two of them). */
static const char *golden_hex(const char *key, const char *name)
{
	size_t i;
	for (i = 0; i < ngolden; i++)
		if (strcmp(golden[i].key, key) == 0 && strcmp(golden[i].name, name) == 0)
			return golden[i].hex;
	fprintf(stderr, "tests/vectors/ids.tsv has no vector for %s / %s\n", key, name);
	exit(1);
}

static dobj_idkey *key_for(const char *k)
{
	dobj_idkey *key = NULL;
	CHECK_EQ_INT(dobj_idkey_new(&key, k, strlen(k)), DOBJ_OK);
	return key;
}

static void hex_of(const dobj_id *id, char out[65])
{
	dobj_id_to_hex(id, out);
	out[64] = 0;
}

static void test_golden_vectors(void)
{
	size_t i;
	for (i = 0; i < ngolden; i++) {
		dobj_idkey *key = key_for(golden[i].key);
		dobj_id id, parsed;
		char hex[65];
		dobj_id_from_name(key, golden[i].name, strlen(golden[i].name), &id);
		hex_of(&id, hex);
		CHECK_STR(hex, golden[i].hex);
		CHECK_EQ_INT(dobj_id_from_string(key, golden[i].hex, 64, &parsed), DOBJ_OK);
		CHECK(dobj_id_equal(&id, &parsed));
		dobj_idkey_free(key);
	}
}

static void test_upper_case_accepted_lower_case_out(void)
{
	dobj_idkey *key = key_for("test-unique-key");
	const char *foo = golden_hex("test-unique-key", "foo");
	char up[65], hex[65];
	dobj_id id;
	size_t i;
	for (i = 0; i < 64; i++)
		up[i] = (foo[i] >= 'a' && foo[i] <= 'f') ? foo[i] - 32 : foo[i];
	up[64] = 0;
	CHECK_EQ_INT(dobj_id_from_string(key, up, 64, &id), DOBJ_OK);
	hex_of(&id, hex);
	CHECK_STR(hex, foo);
	dobj_idkey_free(key);
}

static void test_bad_strings(void)
{
	dobj_idkey *key = key_for("test-unique-key");
	char buf[200];
	dobj_id id;
	const char *hex = golden_hex("test-unique-key", "foo");

	CHECK_EQ_INT(dobj_id_from_string(key, hex, 63, &id), DOBJ_EINVALID);
	CHECK_STR(dobj_error_last(), "Invalid Durable Object ID: must be 64 hex digits");
	memcpy(buf, hex, 64); buf[64] = '0';
	CHECK_EQ_INT(dobj_id_from_string(key, buf, 65, &id), DOBJ_EINVALID);
	CHECK_EQ_INT(dobj_id_from_string(key, "", 0, &id), DOBJ_EINVALID);
	CHECK_EQ_INT(dobj_id_from_string(key, NULL, 64, &id), DOBJ_EINVALID);
	memcpy(buf, hex, 64); buf[10] = 'g';
	CHECK_EQ_INT(dobj_id_from_string(key, buf, 64, &id), DOBJ_EINVALID);
	memcpy(buf, hex, 64); buf[63] = '\0';
	CHECK_EQ_INT(dobj_id_from_string(key, buf, 64, &id), DOBJ_EINVALID);
	memcpy(buf, hex, 64); buf[0] = ' ';
	CHECK_EQ_INT(dobj_id_from_string(key, buf, 64, &id), DOBJ_EINVALID);
	memcpy(buf, hex, 64); buf[5] = (char)0xc3;
	CHECK_EQ_INT(dobj_id_from_string(key, buf, 64, &id), DOBJ_EINVALID);
	/* A random hex string and an ID of another namespace: MAC mismatch. */
	memset(buf, 'a', 64);
	CHECK_EQ_INT(dobj_id_from_string(key, buf, 64, &id), DOBJ_EFOREIGN);
	CHECK_STR(dobj_error_last(), "Durable Object ID is not valid for this namespace.");
	CHECK_EQ_INT(dobj_id_from_string(key, golden_hex("my-unique-key", "foo"), 64, &id), DOBJ_EFOREIGN);
	/* One flipped bit in the MAC. */
	memcpy(buf, hex, 64); buf[63] = buf[63] == 'e' ? 'f' : 'e';
	CHECK_EQ_INT(dobj_id_from_string(key, buf, 64, &id), DOBJ_EFOREIGN);
	dobj_idkey_free(key);
}

static void test_names_with_nul_and_huge(void)
{
	dobj_idkey *key = key_for("k");
	dobj_id a, b, c;
	size_t big = 10 * 1024 * 1024;
	char *huge = malloc(big);
	memset(huge, 'x', big);
	dobj_id_from_name(key, "a\0b", 3, &a);
	dobj_id_from_name(key, "a\0c", 3, &b);
	dobj_id_from_name(key, "a", 1, &c);
	CHECK(!dobj_id_equal(&a, &b));
	CHECK(!dobj_id_equal(&a, &c));
	dobj_id_from_name(key, huge, big, &a);
	dobj_id_from_name(key, huge, big, &b);
	CHECK(dobj_id_equal(&a, &b));
	free(huge);
	dobj_idkey_free(key);
}

static void test_a_name_is_text(void)
{
	dobj_idkey *key = key_for("k");
	dobj_id a, b;

	/* Bytes that are not UTF-8 made an ID whose name no language but Lua
	 * could show (Python's ctx.id.name raised UnicodeDecodeError). */
	memset(&a, 0, sizeof(a));
	b = a;
	CHECK_EQ_INT(dobj_id_from_name(key, "ok\xff", 3, &a), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), "a Durable Object name must be UTF-8 text (byte 3 is not)");
	CHECK(dobj_id_equal(&a, &b)); /* untouched */
	CHECK_EQ_INT(dobj_id_from_name(key, "\xc3", 1, &a), DOBJ_EARG);     /* cut short */
	CHECK_EQ_INT(dobj_id_from_name(key, "\xc0\xaf", 2, &a), DOBJ_EARG); /* overlong */
	/* Text: UTF-8, NUL included, and a JavaScript string's lone surrogate (WTF-8). */
	CHECK_EQ_INT(dobj_id_from_name(key, "\xc3\xa9\0\xf0\x9f\x98\x80", 7, &a), DOBJ_OK);
	CHECK_EQ_INT(dobj_id_from_name(key, "\xed\xa0\x80", 3, &a), DOBJ_OK);
	dobj_idkey_free(key);
}

/* workerd hashes a lone surrogate's WTF-8 bytes (vectors measured against
 * workerd 1.20261117: idFromName("\ud800") and idFromName("a\ud800b") under
 * "test-unique-key"; "\ufffd" gives another ID), and a pair written as two
 * encoded halves is the same string as the character they make. */
static void test_surrogates_in_names(void)
{
	dobj_idkey *key = key_for("test-unique-key");
	dobj_id a, b;
	char hex[65];

	CHECK_EQ_INT(dobj_id_from_name(key, "\xed\xa0\x80", 3, &a), DOBJ_OK);
	hex_of(&a, hex);
	CHECK_STR(hex, "1a55a99ad39e6a43b7f3e4d4fdd717bce93b54f97e2a86249392f061c68057b0");
	CHECK_EQ_INT(dobj_id_from_name(key, "a\xed\xa0\x80" "b", 5, &a), DOBJ_OK);
	hex_of(&a, hex);
	CHECK_STR(hex, "3e93db6380a1d6d35636f393dd083c63737b9fc09ebfe4519d0c6e280b625bba");
	CHECK_EQ_INT(dobj_id_from_name(key, "\xef\xbf\xbd", 3, &a), DOBJ_OK);
	hex_of(&a, hex);
	CHECK_STR(hex, "88a3107dc5b2105060f5dc0d6d05ed2f709cd93202899667ad2c8acddccd5101");

	/* U+1F600 as D83D DE00 halves, alone and between other text. */
	CHECK_EQ_INT(dobj_id_from_name(key, "\xed\xa0\xbd\xed\xb8\x80", 6, &a), DOBJ_OK);
	CHECK_EQ_INT(dobj_id_from_name(key, "\xf0\x9f\x98\x80", 4, &b), DOBJ_OK);
	CHECK(dobj_id_equal(&a, &b));
	CHECK_EQ_INT(dobj_id_from_name(key, "x\xed\xa0\xbd\xed\xb8\x80y\xed\xa0\xbd\xed\xb8\x80", 14, &a), DOBJ_OK);
	CHECK_EQ_INT(dobj_id_from_name(key, "x\xf0\x9f\x98\x80y\xf0\x9f\x98\x80", 10, &b), DOBJ_OK);
	CHECK(dobj_id_equal(&a, &b));
	/* Two high halves, a low one first, a high one cut off: no pair, WTF-8 kept. */
	CHECK_EQ_INT(dobj_id_from_name(key, "\xed\xa0\x80\xed\xa0\x80", 6, &a), DOBJ_OK);
	CHECK_EQ_INT(dobj_id_from_name(key, "\xed\xb8\x80\xed\xa0\xbd", 6, &b), DOBJ_OK);
	CHECK(!dobj_id_equal(&a, &b));
	CHECK_EQ_INT(dobj_id_from_name(key, "\xed\xa0\xbd\xed\xb8", 5, &a), DOBJ_EARG);
	dobj_idkey_free(key);
}

static void test_unique_ids(void)
{
	dobj_idkey *key = key_for("k");
	dobj_id ids[2000], parsed;
	char hex[65];
	int i, j, dup = 0;
	for (i = 0; i < 2000; i++)
		CHECK_EQ_INT(dobj_id_new_unique(key, NULL, &ids[i]), DOBJ_OK);
	for (i = 0; i < 2000; i++)
		for (j = i + 1; j < 2000; j++)
			dup += dobj_id_equal(&ids[i], &ids[j]);
	CHECK_EQ_INT(dup, 0);
	hex_of(&ids[7], hex);
	CHECK_EQ_INT(dobj_id_from_string(key, hex, 64, &parsed), DOBJ_OK);
	CHECK_EQ_INT(dobj_id_new_unique(key, "eu", &parsed), DOBJ_EJURISDICTION);
	CHECK_STR(dobj_error_last(), "Jurisdiction restrictions are not implemented in workerd.");
	dobj_idkey_free(key);
}

static void test_seeded_ids_are_reproducible(void)
{
	dobj_idkey *a = key_for("k"), *b = key_for("k"), *c = key_for("k");
	dobj_id x, y, z, first;
	int i, same = 1, differ = 0;
	dobj_idkey_seed(a, 42);
	dobj_idkey_seed(b, 42);
	dobj_idkey_seed(c, 43);
	for (i = 0; i < 5000; i++) { /* far past workerd's 50 */
		dobj_id_new_unique(a, NULL, &x);
		dobj_id_new_unique(b, NULL, &y);
		dobj_id_new_unique(c, NULL, &z);
		if (i == 0)
			first = x;
		else if (dobj_id_equal(&first, &x))
			same = 0;
		same &= dobj_id_equal(&x, &y);
		differ += !dobj_id_equal(&x, &z);
	}
	CHECK(same);
	CHECK_EQ_INT(differ, 5000);
	dobj_idkey_free(a); dobj_idkey_free(b); dobj_idkey_free(c);
}

static void test_fork_does_not_repeat_ids(void)
{
	dobj_idkey *key = key_for("k");
	dobj_id warm, mine, theirs;
	int fd[2], status;
	pid_t pid;
	dobj_id_new_unique(key, NULL, &warm); /* fill the buffer before fork */
	CHECK_EQ_INT(pipe(fd), 0);
	pid = fork();
	if (pid == 0) {
		dobj_id_new_unique(key, NULL, &theirs);
		if (write(fd[1], &theirs, sizeof(theirs)) != sizeof(theirs))
			_exit(1);
		_exit(0);
	}
	dobj_id_new_unique(key, NULL, &mine);
	CHECK_EQ_INT(read(fd[0], &theirs, sizeof(theirs)), (long)sizeof(theirs));
	waitpid(pid, &status, 0);
	CHECK(!dobj_id_equal(&mine, &theirs));
	close(fd[0]); close(fd[1]);
	dobj_idkey_free(key);
}

int main(void)
{
	load_golden();
	RUN(test_golden_vectors);
	RUN(test_upper_case_accepted_lower_case_out);
	RUN(test_bad_strings);
	RUN(test_names_with_nul_and_huge);
	RUN(test_a_name_is_text);
	RUN(test_surrogates_in_names);
	RUN(test_unique_ids);
	RUN(test_seeded_ids_are_reproducible);
	RUN(test_fork_does_not_repeat_ids);
	return DONE();
}
