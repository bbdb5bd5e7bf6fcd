/*
 * A seeded, time-bounded mutation fuzzer for the C tests of the parsers of
 * untrusted bytes (tests/c/test_fuzz*.c).  No toolchain beyond the C
 * compiler: each target takes a few valid inputs (its corpus), mutates them
 * (bytes flipped, inserted, cut, spliced, a token of the format or an
 * interesting integer written in) and hands each input to the parser for
 * DOBJ_FUZZ_MS milliseconds (default 400).  The run is seeded: the seed is
 * printed, and DOBJ_FUZZ_SEED=N repeats the same inputs (the count that
 * fits in the time varies; DOBJ_FUZZ_RUNS=N fixes it instead).
 *
 * A crash, a sanitizer report, an abort or a hang (an input still running
 * DOBJ_FUZZ_HANG seconds after the target's time ran out, default 10) shows
 * the target, the seed and the input (hex) where it can (a signal, ASan);
 * in every case (UBSan exits at once) the input being run is in
 * /tmp/dobj-fuzz-<pid>.bin, the file named when the target began, removed
 * when the binary passes.  DOBJ_FUZZ_ONLY=<target> DOBJ_FUZZ_INPUT=<file>
 * runs that one input through that one target.  Under ASan an
 * allocation larger than 256 MiB returns NULL instead (see
 * __asan_default_options below): a target that sees DOBJ_ENOMEM for a small
 * input found an unbounded allocation, and fails.  `make fuzz` (libFuzzer,
 * clang) is the longer, coverage-guided run of some of the same targets.
 */
#ifndef DOBJ_TEST_FUZZ_H
#define DOBJ_TEST_FUZZ_H
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

#if defined(__SANITIZE_ADDRESS__)
#define FUZZ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FUZZ_ASAN 1
#endif
#endif

#ifdef FUZZ_ASAN
/* Under ASan: a huge allocation is a NULL (the code's out-of-memory path),
 * which the targets treat as a finding, instead of ASan's abort. */
/* Visible: the ASan runtime looks it up (the build hides symbols). */
__attribute__((visibility("default"))) const char *__asan_default_options(void);
__attribute__((visibility("default"))) const char *__asan_default_options(void)
{
	return "allocator_may_return_null=1:max_allocation_size_mb=256";
}
void __sanitizer_set_death_callback(void (*callback)(void));
#endif

#ifdef FUZZ_ASAN
size_t __sanitizer_get_current_allocated_bytes(void);
#else
#include <malloc.h>
#endif

/* Bytes the process has allocated now (ASan's count, or glibc's). */
__attribute__((unused)) static size_t fuzz_heap(void)
{
#ifdef FUZZ_ASAN
	return __sanitizer_get_current_allocated_bytes();
#else
	return mallinfo2().uordblks;
#endif
}

static struct {
	uint64_t seed, rng;
	const char *target;
	const unsigned char *cur; /* the input being run (for the crash dump) */
	size_t cur_len;
	double until;
	unsigned long runs, max_runs;
	int ms, hang_s;
	int cur_fd;               /* /tmp/dobj-fuzz-<pid>.bin: the input being run */
	char cur_path[64];
	const char *only;         /* DOBJ_FUZZ_ONLY */
	int skip;                 /* this target is not the one */
	unsigned char *replay;    /* DOBJ_FUZZ_INPUT's bytes */
	size_t replay_len;
} fz;

static unsigned char *fuzz_slurp(const char *path, size_t *len);

static double fuzz_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift64*: small, fast and good enough to pick mutations. */
static uint64_t fuzz_next(void)
{
	fz.rng ^= fz.rng >> 12;
	fz.rng ^= fz.rng << 25;
	fz.rng ^= fz.rng >> 27;
	return fz.rng * 0x2545F4914F6CDD1Du;
}

static size_t fuzz_below(size_t n)
{
	return n ? (size_t)(fuzz_next() % n) : 0;
}

/* Async-signal-safe enough for a dying test: write(2) only. */
static void fuzz_write(const char *s, size_t n)
{
	while (n) {
		ssize_t w = write(2, s, n);
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

static void fuzz_dump(void)
{
	static const char digits[] = "0123456789abcdef";
	char line[320];
	size_t i, n;

	if (!fz.target)
		return;
	n = (size_t)snprintf(line, sizeof(line),
		"\nfuzz: target %s, DOBJ_FUZZ_SEED=%llu, run %lu, input of %zu bytes:\n", fz.target,
		(unsigned long long)fz.seed, fz.runs, fz.cur_len);
	fuzz_write(line, n);
	for (i = 0; fz.cur && i < fz.cur_len && i < 4096; i++) {
		char h[2] = { digits[fz.cur[i] >> 4], digits[fz.cur[i] & 15] };
		fuzz_write(h, 2);
	}
	fuzz_write("\n", 1);
	n = (size_t)snprintf(line, sizeof(line), "fuzz: the input is in %s (DOBJ_FUZZ_ONLY=%s "
		"DOBJ_FUZZ_INPUT=%s runs it again)\n", fz.cur_path, fz.target, fz.cur_path);
	fuzz_write(line, n);
	fz.target = NULL;
}

/* A finding: counted as a failed check and told with `fmt` (then `suffix`,
 * in parentheses, when not empty); the first few dump their input. */
static inline void fuzz_vfinding(const char *suffix, const char *fmt, va_list ap)
{
	const char *t = fz.target;

	check_failures++;
	fprintf(stderr, "fuzz: %s: ", fz.target);
	vfprintf(stderr, fmt, ap);
	if (suffix && *suffix)
		fprintf(stderr, " (%s)", suffix);
	fprintf(stderr, "\n");
	if (check_failures < 5) {
		fuzz_dump();
		fz.target = t;
	}
}

static inline void fuzz_finding(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static inline void fuzz_finding(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fuzz_vfinding(NULL, fmt, ap);
	va_end(ap);
}

/* Strict UTF-8 (RFC 3629): no overlong form, no surrogate, nothing past
 * U+10FFFF.  The tests' own, not the core's. */
static inline int fuzz_utf8_valid(const unsigned char *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned c = p[i], need, min, cp;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			need = 1, min = 0x80, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			need = 2, min = 0x800, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			need = 3, min = 0x10000, cp = c & 0x07;
		else
			return 0;
		if (n - i <= need)
			return 0;
		for (i++; need; need--, i++) {
			if ((p[i] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (p[i] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
	}
	return 1;
}

static void fuzz_signal(int sig)
{
	if (sig == SIGALRM)
		fuzz_write("\nfuzz: an input ran past the hang bound\n", 40);
	fuzz_dump();
	signal(sig, SIG_DFL);
	raise(sig == SIGALRM ? SIGABRT : sig);
}

/* Once per test binary: the seed, the budget, the crash handlers. */
static void fuzz_init(void)
{
	const char *s = getenv("DOBJ_FUZZ_SEED"), *ms = getenv("DOBJ_FUZZ_MS");
	const char *runs = getenv("DOBJ_FUZZ_RUNS"), *hang = getenv("DOBJ_FUZZ_HANG");
	static const int sigs[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGALRM };
	size_t i;

	setvbuf(stdout, NULL, _IOLBF, 0);
	fz.seed = s && *s ? strtoull(s, NULL, 10) :
		((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
	fz.ms = ms && *ms ? atoi(ms) : 400;
	fz.max_runs = runs && *runs ? strtoul(runs, NULL, 10) : 0;
	fz.hang_s = hang && *hang ? atoi(hang) : 10;
	const char *input = getenv("DOBJ_FUZZ_INPUT");

	fz.only = getenv("DOBJ_FUZZ_ONLY");
	if (input && *input && !(fz.replay = fuzz_slurp(input, &fz.replay_len))) {
		fprintf(stderr, "fuzz: cannot read %s\n", input);
		exit(1);
	}
	snprintf(fz.cur_path, sizeof(fz.cur_path), "/tmp/dobj-fuzz-%d.bin", (int)getpid());
	fz.cur_fd = open(fz.cur_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		signal(sigs[i], fuzz_signal);
#ifdef FUZZ_ASAN
	__sanitizer_set_death_callback(fuzz_dump);
#endif
	printf("fuzz: DOBJ_FUZZ_SEED=%llu, %d ms a target, the input being run in %s\n",
		(unsigned long long)fz.seed, fz.ms, fz.cur_path);
}

/* The end of the binary: the file of the input being run goes (a failed
 * check leaves it, with the last input). */
static void fuzz_finish(void)
{
	if (fz.cur_fd >= 0)
		close(fz.cur_fd);
	if (!check_failures)
		unlink(fz.cur_path);
	free(fz.replay);
}

/* Start a target: its own stream of the seed (a target added or dropped
 * leaves the others' inputs alone), its time. */
static void fuzz_begin(const char *target)
{
	uint64_t h = 1469598103934665603u;
	const char *p;

	for (p = target; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211u;
	fz.rng = (fz.seed ^ h) | 1;
	fz.target = target;
	fz.skip = fz.only && strcmp(fz.only, target) != 0;
	if (!fz.skip)
		printf("  %s...\n", target);
	fz.runs = 0;
	fz.until = fuzz_now() + fz.ms / 1e3;
	alarm((unsigned)(fz.ms / 1000 + fz.hang_s));
}

/* Another input? */
static int fuzz_more(void)
{
	if (fz.skip)
		return 0;
	if (fz.replay)
		return fz.runs < 1;
	if (fz.max_runs)
		return fz.runs < fz.max_runs;
	return (fz.runs & 15) || fuzz_now() < fz.until;
}

/* The input about to run (what a crash dump shows). */
static void fuzz_input(const void *p, size_t n)
{
	fz.cur = p;
	fz.cur_len = n;
	fz.runs++;
	/* Kept where any death leaves it (two syscalls, a few us an input). */
	if (fz.cur_fd >= 0 && (pwrite(fz.cur_fd, p, n, 0) < 0 || ftruncate(fz.cur_fd, (off_t)n) < 0))
		fz.cur_fd = -1;
}

static void fuzz_end(const char *what)
{
	alarm(0);
	if (!fz.skip)
		printf("  %s: %lu inputs%s%s\n", fz.target, fz.runs, what ? ", " : "", what ? what : "");
	fz.target = NULL;
	fz.cur = NULL;
}

/* A seed input of a target. */
typedef struct fuzz_seed {
	const unsigned char *p;
	size_t len;
} fuzz_seed;

/*
 * Mutate buf (len bytes, room for cap) in place: 1 to 8 mutations, from
 * the byte-level ones to the format's own tokens (`dict`, NULL-terminated,
 * may be NULL) and splices of another seed.  Returns the new length.
 */
static size_t fuzz_mutate(unsigned char *buf, size_t len, size_t cap, const char *const *dict,
	const fuzz_seed *seeds, size_t nseeds)
{
	static const uint64_t ints[] = { 0, 1, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff,
		0x10000, 0x7fffffff, 0x80000000u, 0xffffffffu, 0x100000000ull,
		0x7fffffffffffffffull, 0x8000000000000000ull, 0xffffffffffffffffull, 15, 16, 64, 125,
		126, 127, 1000, 1005, 1006, 4096, 65536 };
	size_t k, muts = 1 + fuzz_below(8), ndict = 0;

	while (dict && dict[ndict])
		ndict++;
	for (k = 0; k < muts; k++) {
		size_t at = fuzz_below(len + 1), n;
		switch (fuzz_below(12)) {
		case 0: /* flip a bit */
			if (len)
				buf[fuzz_below(len)] ^= (unsigned char)(1u << fuzz_below(8));
			break;
		case 1: /* a random byte */
			if (len)
				buf[fuzz_below(len)] = (unsigned char)fuzz_next();
			break;
		case 2: /* insert a byte */
			if (len < cap) {
				memmove(buf + at + 1, buf + at, len - at);
				buf[at] = fuzz_below(2) ? (unsigned char)fuzz_next() :
					(unsigned char)"\0\n\r \"'\\{}[]=:,#%\xff"[fuzz_below(17)];
				len++;
			}
			break;
		case 3: /* delete a run */
			if (len) {
				at = fuzz_below(len);
				n = 1 + fuzz_below(len - at < 16 ? len - at : 16);
				memmove(buf + at, buf + at + n, len - at - n);
				len -= n;
			}
			break;
		case 4: /* duplicate a run */
			if (len) {
				size_t from = fuzz_below(len);
				n = 1 + fuzz_below(len - from < 32 ? len - from : 32);
				if (len + n <= cap) {
					memmove(buf + at + n, buf + at, len - at);
					memmove(buf + at, buf + (from < at ? from : from + n), n);
					len += n;
				}
			}
			break;
		case 5: /* cut short */
			len = at;
			break;
		case 6: /* an interesting integer, 1, 2, 4 or 8 bytes, either order */
		{
			uint64_t v = ints[fuzz_below(sizeof(ints) / sizeof(ints[0]))];
			size_t w = (size_t)1 << fuzz_below(4), i;
			int be = (int)fuzz_below(2);
			if (fuzz_below(4) == 0)
				v = ~v + 1; /* negated */
			if (len < w)
				break;
			at = fuzz_below(len - w + 1);
			for (i = 0; i < w; i++)
				buf[at + i] = (unsigned char)(v >> (8 * (be ? w - 1 - i : i)));
			break;
		}
		case 7: /* an ASCII digit run, a length a text format might read */
			if (len) {
				at = fuzz_below(len);
				buf[at] = (unsigned char)('0' + fuzz_below(10));
			}
			break;
		case 8:
		case 9: /* a token of the format */
			if (ndict) {
				const char *t = dict[fuzz_below(ndict)];
				n = strlen(t);
				if (len + n <= cap) {
					memmove(buf + at + n, buf + at, len - at);
					memcpy(buf + at, t, n);
					len += n;
				}
			}
			break;
		case 10: /* splice: our head, another seed's tail */
			if (nseeds) {
				const fuzz_seed *o = &seeds[fuzz_below(nseeds)];
				size_t from = fuzz_below(o->len + 1);
				n = o->len - from;
				if (at + n > cap)
					n = cap - at;
				memcpy(buf + at, o->p + from, n);
				len = at + n;
			}
			break;
		default: /* repeat a run many times: lengths, nesting */
			if (len) {
				size_t from = fuzz_below(len), times = 2 + fuzz_below(64), t;
				n = 1 + fuzz_below(len - from < 8 ? len - from : 8);
				for (t = 0; t < times && len + n <= cap; t++) {
					memmove(buf + at + n, buf + at, len - at);
					memmove(buf + at, buf + (from < at ? from : from + n), n);
					len += n;
				}
			}
			break;
		}
	}
	return len;
}

/* The next input of a target: a seed, mutated (into buf, cap bytes). */
static size_t fuzz_next_input(unsigned char *buf, size_t cap, const char *const *dict,
	const fuzz_seed *seeds, size_t nseeds)
{
	const fuzz_seed *s;
	size_t len;

	if (fz.replay) {
		len = fz.replay_len < cap ? fz.replay_len : cap;
		memcpy(buf, fz.replay, len);
		return len;
	}
	s = &seeds[fuzz_below(nseeds)];
	len = s->len < cap ? s->len : cap;
	memcpy(buf, s->p, len);
	return fuzz_mutate(buf, len, cap, dict, seeds, nseeds);
}

/* A file's bytes (malloc'ed; NULL when it cannot be read). */
static unsigned char *fuzz_slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *p = NULL;
	long n;

	if (!f)
		return NULL;
	/* A folder's "size" is LONG_MAX: not a seed. */
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && n <= (1L << 20) &&
	    fseek(f, 0, SEEK_SET) == 0 && (p = malloc((size_t)n + 1)) != NULL) {
		*len = fread(p, 1, (size_t)n, f);
		p[*len] = 0;
	}
	fclose(f);
	return p;
}

#endif
