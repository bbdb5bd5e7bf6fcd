/*
 * bench_ids — IDs per second of the dobj C core (part of `make bench`).
 *
 *   bench_ids [seconds]   measure id_from_name, id_from_string and
 *                         new_unique_id (best of 3 runs of ~seconds each)
 *   bench_ids --serve     answer "OP N" lines on stdin with "ok SECONDS"
 *                         (how bench/run.py drives every side alike)
 *
 * The namespace's unique key is "bench-key" and the name "x", as for every
 * other side of the bench.  The golden vectors are checked first: a fast
 * wrong answer is no answer.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dobj.h"

#include "bench_storage.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Folded into the output so that no loop can be optimised away. */
static volatile unsigned char sink;

/* workerd's vectors, read from tests/vectors/ids.tsv (the file every suite reads). */
static struct {
	char key[64], name[64], hex[65];
} golden[64];
static size_t ngolden;

static int load_golden(void)
{
	char path[1024], line[512];
	const char *slash = strrchr(__FILE__, '/');
	FILE *f;

	snprintf(path, sizeof path, "%.*s../tests/vectors/ids.tsv",
		slash ? (int)(slash - __FILE__ + 1) : 0, __FILE__);
	if (!(f = fopen(path, "r"))) {
		fprintf(stderr, "bench_ids: cannot open %s\n", path);
		return -1;
	}
	while (fgets(line, sizeof line, f) && ngolden < sizeof golden / sizeof golden[0]) {
		char *name, *hex;
		if (line[0] == '#' || line[0] == '\n')
			continue;
		line[strcspn(line, "\r\n")] = 0;
		if (!(name = strchr(line, '\t')) || !(hex = strchr(name + 1, '\t')))
			continue;
		*name++ = 0;
		*hex++ = 0;
		snprintf(golden[ngolden].key, sizeof golden[0].key, "%.63s", line);
		snprintf(golden[ngolden].name, sizeof golden[0].name, "%.63s", name);
		snprintf(golden[ngolden].hex, sizeof golden[0].hex, "%.64s", hex);
		ngolden++;
	}
	fclose(f);
	return ngolden ? 0 : -1;
}

static int check_golden(void)
{
	int failed = 0;
	if (load_golden() != 0)
		return -1;
	for (size_t i = 0; i < ngolden; i++) {
		dobj_idkey *key = NULL;
		dobj_id id;
		char hex[DOBJ_ID_HEX_LEN];
		if (dobj_idkey_new(&key, golden[i].key, strlen(golden[i].key)) != DOBJ_OK) {
			fprintf(stderr, "bench_ids: dobj_idkey_new: %s\n", dobj_error_last());
			return -1;
		}
		dobj_id_from_name(key, golden[i].name, strlen(golden[i].name), &id);
		dobj_id_to_hex(&id, hex);
		if (memcmp(hex, golden[i].hex, DOBJ_ID_HEX_LEN) != 0) {
			fprintf(stderr, "bench_ids: golden vector %s/%s: got %.64s\n",
				golden[i].key, golden[i].name, hex);
			failed++;
		}
		dobj_idkey_free(key);
	}
	return failed ? -1 : 0;
}

/* Run `n` operations of `op`; return the seconds taken, or -1. */
static double run_op(dobj_idkey *key, const char *op, long n)
{
	dobj_id id;
	char hex[DOBJ_ID_HEX_LEN];
	double t0;

	dobj_id_from_name(key, "x", 1, &id);
	dobj_id_to_hex(&id, hex);

	if (strcmp(op, "id_from_name") == 0) {
		t0 = now_s();
		for (long i = 0; i < n; i++) {
			dobj_id_from_name(key, "x", 1, &id);
			sink ^= id.bytes[31];
		}
	} else if (strcmp(op, "id_from_string") == 0) {
		t0 = now_s();
		for (long i = 0; i < n; i++) {
			if (dobj_id_from_string(key, hex, DOBJ_ID_HEX_LEN, &id) != DOBJ_OK)
				return -1;
			sink ^= id.bytes[31];
		}
	} else if (strcmp(op, "new_unique_id") == 0) {
		t0 = now_s();
		for (long i = 0; i < n; i++) {
			if (dobj_id_new_unique(key, NULL, &id) != DOBJ_OK)
				return -1;
			sink ^= id.bytes[31];
		}
	} else {
		dobj_error_set(DOBJ_EARG, "unknown op %s", op);
		return -1;
	}
	return now_s() - t0;
}

/* Best of 3 runs of about `seconds` each; ops/s. */
static double measure(dobj_idkey *key, const char *op, double seconds)
{
	long n = 1000;
	double t, best = 0;

	for (;;) { /* calibrate */
		t = run_op(key, op, n);
		if (t < 0)
			return -1;
		if (t >= 0.05)
			break;
		n *= 4;
	}
	n = (long)(n * seconds / t) + 1;
	for (int r = 0; r < 3; r++) {
		t = run_op(key, op, n);
		if (t < 0)
			return -1;
		if (n / t > best)
			best = n / t;
	}
	return best;
}

static int serve(dobj_idkey *key)
{
	char line[256], op[64];
	long n;

	printf("ready\n");
	fflush(stdout);
	while (fgets(line, sizeof line, stdin)) {
		if (sscanf(line, "%63s %ld", op, &n) == 2 && strcmp(op, "hex") != 0) {
			double t = -1;
			int rc = bench_storage_op(op, n, &t);
			if (rc == 0)
				t = run_op(key, op, n);
			else if (rc < 0)
				t = -1;
			if (t < 0)
				printf("error %s\n", dobj_error_last());
			else
				printf("ok %.9f\n", t);
		} else if (sscanf(line, "%63s", op) == 1 && strcmp(op, "hex") == 0) {
			dobj_id id;
			char hex[DOBJ_ID_HEX_LEN];
			dobj_id_from_name(key, "x", 1, &id);
			dobj_id_to_hex(&id, hex);
			printf("ok %.64s\n", hex);
		} else {
			printf("error bad command\n");
		}
		fflush(stdout);
	}
	bench_storage_close();
	return 0;
}

int main(int argc, char **argv)
{
	static const char *const ops[] = { "id_from_name", "id_from_string", "new_unique_id" };
	dobj_idkey *key = NULL;
	double seconds = 0.7;
	int rc = 0;

	if (check_golden() != 0)
		return 1;
	if (dobj_idkey_new(&key, "bench-key", 9) != DOBJ_OK) {
		fprintf(stderr, "bench_ids: %s\n", dobj_error_last());
		return 1;
	}
	if (argc > 1 && strcmp(argv[1], "--serve") == 0) {
		rc = serve(key);
	} else {
		if (argc > 1)
			seconds = atof(argv[1]);
		if (seconds <= 0)
			seconds = 0.7;
		for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
			double ops_s = measure(key, ops[i], seconds);
			if (ops_s < 0) {
				fprintf(stderr, "bench_ids: %s: %s\n", ops[i], dobj_error_last());
				rc = 1;
				continue;
			}
			printf("%-16s %14.0f ops/s\n", ops[i], ops_s);
		}
	}
	dobj_idkey_free(key);
	return rc;
}
