/*
 * Durable Object IDs, byte-compatible with workerd:
 *   key  = SHA-256(unique_key)
 *   base = HMAC-SHA256(key, name)[0:16]          (id_from_name)
 *        | 16 random bytes                       (new_unique_id)
 *   id   = base || HMAC-SHA256(key, base)[0:16]
 *
 * The HMAC key schedule (the SHA-256 states after absorbing key^ipad and
 * key^opad) is computed once per namespace, so an ID costs four SHA-256
 * compressions and no allocation.  OpenSSL's one-shot SHA256_* functions are
 * deprecated in 3.0 but remain the only allocation-free way to copy a
 * midstate; EVP would allocate per call.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "v8_format.h"

struct dobj_idkey {
	SHA256_CTX inner; /* after key ^ ipad */
	SHA256_CTX outer; /* after key ^ opad */
	int seeded;
	uint64_t seed;
	uint64_t counter;
};

/* The HMAC's outer hash over an inner hash that has taken the message. */
static void hmac_finish(const dobj_idkey *key, SHA256_CTX *inner, unsigned char out[32])
{
	SHA256_CTX c = key->outer;
	unsigned char ih[32];

	SHA256_Final(ih, inner);
	SHA256_Update(&c, ih, sizeof(ih));
	SHA256_Final(out, &c);
}

static void hmac_from_midstate(const dobj_idkey *key, const void *msg, size_t len,
	unsigned char out[32])
{
	SHA256_CTX c = key->inner;

	SHA256_Update(&c, msg, len);
	hmac_finish(key, &c, out);
}

int dobj_idkey_new(dobj_idkey **out, const char *unique_key, size_t len)
{
	dobj_idkey *key;
	unsigned char k[SHA256_CBLOCK], pad[SHA256_CBLOCK];
	size_t i;

	*out = NULL;
	if (!unique_key && len)
		return dobj_error_set(DOBJ_EARG, "unique key is NULL");
	key = calloc(1, sizeof(*key));
	if (!key)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");

	/* The HMAC key is the 32-byte digest of the unique key, zero-padded to a block. */
	memset(k, 0, sizeof(k));
	SHA256((const unsigned char *)(unique_key ? unique_key : ""), len, k);

	for (i = 0; i < sizeof(pad); i++)
		pad[i] = k[i] ^ 0x36;
	SHA256_Init(&key->inner);
	SHA256_Update(&key->inner, pad, sizeof(pad));
	for (i = 0; i < sizeof(pad); i++)
		pad[i] = k[i] ^ 0x5c;
	SHA256_Init(&key->outer);
	SHA256_Update(&key->outer, pad, sizeof(pad));

	OPENSSL_cleanse(k, sizeof(k));
	OPENSSL_cleanse(pad, sizeof(pad));
	*out = key;
	return DOBJ_OK;
}

void dobj_idkey_free(dobj_idkey *key)
{
	if (!key)
		return;
	OPENSSL_cleanse(key, sizeof(*key));
	free(key);
}

void dobj_idkey_seed(dobj_idkey *key, uint64_t seed)
{
	key->seeded = 1;
	key->seed = seed;
	key->counter = 0;
}

static void seal(const dobj_idkey *key, dobj_id *id)
{
	unsigned char mac[32];

	hmac_from_midstate(key, id->bytes, 16, mac);
	memcpy(id->bytes + 16, mac, 16);
}

/* Walk a name: text, as a JavaScript string is (UTF-8, and WTF-8 for its
 * lone surrogates), else DOBJ_EARG.  With `c`, also hash it as workerd does:
 * the string's UTF-8, a lone surrogate as its WTF-8 bytes (measured against
 * workerd: idFromName("\ud800") is the HMAC of ED A0 80, not of U+FFFD's
 * bytes).  A surrogate pair written as two encoded halves (Python's
 * "\ud83d\ude00", Lua's utf8.char(0xD83D, 0xDE00)) is the same JavaScript
 * string as the character they pair to, so it hashes as that character's
 * four bytes and names the same object. */
static int name_walk(const char *name, size_t len, SHA256_CTX *c)
{
	const unsigned char *s = (const unsigned char *)name;
	size_t i = 0, from = 0, k, bad;
	uint32_t hi, lo, cp;
	unsigned char four[4];

	while (i < len) {
		if (s[i] < 0x80) {
			i++;
			continue;
		}
		k = dobj__utf8_get(s + i, len - i, 1, &hi, &bad);
		if (k == 0)
			return dobj_error_set(DOBJ_EARG, "a Durable Object name must be UTF-8 text "
				"(byte %zu is not)", i + 1);
		if (hi >= 0xD800 && hi <= 0xDBFF && len - i >= 6 && s[i + 3] == 0xED &&
		    dobj__utf8_get(s + i + 3, len - i - 3, 1, &lo, &bad) == 3 &&
		    lo >= 0xDC00 && lo <= 0xDFFF) {
			cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
			four[0] = (unsigned char)(0xF0 | (cp >> 18));
			four[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
			four[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
			four[3] = (unsigned char)(0x80 | (cp & 0x3F));
			if (c) {
				SHA256_Update(c, s + from, i - from);
				SHA256_Update(c, four, sizeof(four));
			}
			i += 6;
			from = i;
			continue;
		}
		i += k;
	}
	if (c)
		SHA256_Update(c, s + from, len - from);
	return DOBJ_OK;
}

int dobj__name_check(const char *name, size_t len)
{
	return name_walk(name, len, NULL);
}

int dobj_id_from_name(const dobj_idkey *key, const char *name, size_t len, dobj_id *out)
{
	SHA256_CTX c = key->inner;
	unsigned char h[32];
	int rc;

	if (name && (rc = name_walk(name, len, &c)) < 0)
		return rc;
	hmac_finish(key, &c, h);
	memcpy(out->bytes, h, 16);
	seal(key, out);
	return DOBJ_OK;
}

int dobj_id_new_unique(dobj_idkey *key, const char *jurisdiction, dobj_id *out)
{
	if (jurisdiction)
		return dobj_error_set(DOBJ_EJURISDICTION, DOBJ_MSG_JURISDICTION);
	if (key->seeded) {
		/* Deterministic mode: base = SHA-256(tag || seed || n)[0:16].  Unlike
		 * workerd's counter mode there is no bound on n. */
		unsigned char msg[32], h[32];
		uint64_t n = __atomic_fetch_add(&key->counter, 1, __ATOMIC_RELAXED);
		int i;

		memcpy(msg, "dobj-seeded-id\0\0", 16);
		for (i = 0; i < 8; i++) {
			msg[16 + i] = (unsigned char)(key->seed >> (8 * i));
			msg[24 + i] = (unsigned char)(n >> (8 * i));
		}
		SHA256(msg, sizeof(msg), h);
		memcpy(out->bytes, h, 16);
	} else if (dobj__random(out->bytes, 16) < 0) {
		return dobj_error_last_code();
	}
	seal(key, out);
	return DOBJ_OK;
}

static const signed char hexval[256] = {
	['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7,
	['7'] = 8, ['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13,
	['d'] = 14, ['e'] = 15, ['f'] = 16, ['A'] = 11, ['B'] = 12, ['C'] = 13,
	['D'] = 14, ['E'] = 15, ['F'] = 16,
};

int dobj_id_from_string(const dobj_idkey *key, const char *s, size_t len, dobj_id *out)
{
	dobj_id id;
	unsigned char mac[32];
	size_t i;

	if (!s || len != DOBJ_ID_HEX_LEN)
		return dobj_error_set(DOBJ_EINVALID, DOBJ_MSG_BAD_ID);
	for (i = 0; i < 32; i++) {
		/* Table holds value + 1 so that 0 marks a non-hex byte. */
		int hi = hexval[(unsigned char)s[2 * i]], lo = hexval[(unsigned char)s[2 * i + 1]];
		if (!hi || !lo)
			return dobj_error_set(DOBJ_EINVALID, DOBJ_MSG_BAD_ID);
		id.bytes[i] = (unsigned char)(((hi - 1) << 4) | (lo - 1));
	}
	hmac_from_midstate(key, id.bytes, 16, mac);
	if (CRYPTO_memcmp(mac, id.bytes + 16, 16) != 0)
		return dobj_error_set(DOBJ_EFOREIGN, DOBJ_MSG_FOREIGN_ID);
	*out = id;
	return DOBJ_OK;
}

int dobj__id_sealed(const dobj_idkey *key, const dobj_id *id)
{
	unsigned char mac[32];

	hmac_from_midstate(key, id->bytes, 16, mac);
	return CRYPTO_memcmp(mac, id->bytes + 16, 16) == 0;
}

void dobj_id_to_hex(const dobj_id *id, char out[DOBJ_ID_HEX_LEN])
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < 32; i++) {
		out[2 * i] = digits[id->bytes[i] >> 4];
		out[2 * i + 1] = digits[id->bytes[i] & 15];
	}
}

int dobj_id_equal(const dobj_id *a, const dobj_id *b)
{
	return memcmp(a->bytes, b->bytes, sizeof(a->bytes)) == 0;
}

/*
 * CSPRNG bytes, drawn from OpenSSL in batches: RAND_bytes per 16-byte ID
 * would dominate new_unique_id.  The buffer is per thread, and a fork
 * empties it in the child so that parent and child never hand out the same
 * bytes.
 */
#define RANDBUF 4096
static _Thread_local unsigned char randbuf[RANDBUF];
static _Thread_local size_t randpos = RANDBUF;
static _Thread_local unsigned randgen;
static unsigned fork_generation;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void after_fork_child(void)
{
	__atomic_add_fetch(&fork_generation, 1, __ATOMIC_RELAXED);
}

static void register_atfork(void)
{
	pthread_atfork(NULL, NULL, after_fork_child);
}

int dobj__random(unsigned char *out, size_t len)
{
	unsigned gen;

	pthread_once(&atfork_once, register_atfork);
	gen = __atomic_load_n(&fork_generation, __ATOMIC_RELAXED);
	if (gen != randgen) {
		OPENSSL_cleanse(randbuf, sizeof(randbuf));
		randpos = RANDBUF;
		randgen = gen;
	}
	if (len > RANDBUF) {
		if (RAND_bytes(out, (int)len) != 1)
			return dobj_error_set(DOBJ_ERROR, "the random number generator failed");
		return DOBJ_OK;
	}
	if (RANDBUF - randpos < len) {
		if (RAND_bytes(randbuf, RANDBUF) != 1)
			return dobj_error_set(DOBJ_ERROR, "the random number generator failed");
		randpos = 0;
	}
	memcpy(out, randbuf + randpos, len);
	OPENSSL_cleanse(randbuf + randpos, len);
	randpos += len;
	return DOBJ_OK;
}
