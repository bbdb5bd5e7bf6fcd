/*
 * Log records (cluster_record.c): a page the incarnation appended before
 * goes as the byte ranges that changed since; applied in seq order onto
 * the rows before, the records rebuild every page.  Records that lie are
 * refused whole before a byte is applied.  No PostgreSQL here: the rows'
 * way through it is test_cluster_snapshot.c's.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cluster_int.h"

#define PSZ 4096u
#define MAXPG 96u

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint64_t rnd_state = 0x2545F4914F6CDD1DULL;

static uint32_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return (uint32_t)(rnd_state >> 11);
}

/* A database as the log's reader sees it: `pages` pages of PSZ bytes. */
typedef struct db {
	uint32_t pages;
	unsigned char b[MAXPG * PSZ];
} db;

static int db_put(void *arg, uint32_t pgno, uint32_t off, const unsigned char *p, size_t n)
{
	db *d = arg;

	/* Never outside the page nor the image (ASan checks the rest). */
	CHECK(pgno >= 1 && pgno <= MAXPG && off + n <= PSZ);
	if (pgno < 1 || pgno > MAXPG || off + n > PSZ)
		return DOBJ_ERROR;
	memcpy(d->b + (size_t)(pgno - 1) * PSZ + off, p, n);
	return DOBJ_OK;
}

/* Apply a record as a restore does: checked whole, a page changed in part
 * only when the image has it, grown with zeros, then sized.  0, or
 * DOBJ__REC_MALFORMED, or 2 for a change to a page the image lacks. */
static int apply(db *d, const unsigned char *rec, size_t len)
{
	dobj__rec_info info;
	uint32_t top;
	int rc;

	if ((rc = dobj__rec_walk(rec, len, &info, NULL, NULL)) != DOBJ_OK)
		return rc;
	if (info.psz != PSZ || info.top > MAXPG || info.dbsize > MAXPG)
		return DOBJ__REC_MALFORMED;
	if (info.changed_top > d->pages)
		return 2;
	top = info.top > info.dbsize ? info.top : info.dbsize;
	if (top > d->pages)
		memset(d->b + (size_t)d->pages * PSZ, 0, (size_t)(top - d->pages) * PSZ);
	CHECK_EQ_INT(dobj__rec_walk(rec, len, &info, db_put, d), DOBJ_OK);
	if (info.dbsize < top)
		memset(d->b + (size_t)info.dbsize * PSZ, 0, (size_t)(top - info.dbsize) * PSZ);
	d->pages = info.dbsize;
	return DOBJ_OK;
}

/* A whole-page record (cluster_wal.c's) of pages `pgnos` of `src`. */
static unsigned char *whole(const db *src, uint32_t dbsize, const uint32_t *pgnos, uint32_t n,
	size_t *len)
{
	unsigned char *r = malloc(12 + (size_t)n * (4 + PSZ));

	put32(r, PSZ);
	put32(r + 4, dbsize);
	put32(r + 8, n);
	for (uint32_t i = 0; i < n; i++) {
		unsigned char *p = r + 12 + (size_t)i * (4 + PSZ);
		put32(p, pgnos[i]);
		memcpy(p + 4, src->b + (size_t)(pgnos[i] - 1) * PSZ, PSZ);
	}
	*len = 12 + (size_t)n * (4 + PSZ);
	return r;
}

/* The node's bound on page images (tests set its size). */
static dobj__page_budget *budget;

/* What the writer appends for pages `pgnos` of `src` now: *len bytes. */
static unsigned char *append(dobj__page_cache **pc, const db *src, uint32_t dbsize,
	const uint32_t *pgnos, uint32_t n, size_t *len)
{
	size_t wlen;
	unsigned char *w = whole(src, dbsize, pgnos, n, &wlen), *out = NULL;

	CHECK_EQ_INT(dobj__rec_changes(budget, pc, w, wlen, &out, len), DOBJ_OK);
	free(w);
	return out;
}

static int same_pages(const db *a, const db *b)
{
	return a->pages == b->pages && !memcmp(a->b, b->b, (size_t)a->pages * PSZ);
}

static db writer, reader;

static void fill_random(db *d, uint32_t pgno)
{
	for (uint32_t i = 0; i < PSZ; i++)
		d->b[(size_t)(pgno - 1) * PSZ + i] = (unsigned char)rnd();
}

static void test_an_increment_goes_as_the_bytes_it_changed(void)
{
	dobj__page_cache *pc = NULL;
	uint32_t pg[] = { 2 };
	unsigned char *r;
	size_t len;

	memset(&writer, 0, sizeof(writer));
	memset(&reader, 0, sizeof(reader));
	writer.pages = 2;
	fill_random(&writer, 1);
	fill_random(&writer, 2);
	{
		uint32_t both[] = { 1, 2 };
		r = append(&pc, &writer, 2, both, 2, &len);
		/* The first write of a page goes whole (nothing to build on). */
		CHECK_EQ_INT(len, 12 + 2 * (8 + PSZ));
		CHECK_EQ_INT(apply(&reader, r, len), DOBJ_OK);
		free(r);
	}
	/* Three bytes at 100 and four at 3000: two runs. */
	memset(writer.b + PSZ + 100, 0x11, 3);
	memset(writer.b + PSZ + 3000, 0x22, 4);
	r = append(&pc, &writer, 2, pg, 1, &len);
	CHECK_EQ_INT(len, 12 + 8 + (8 + 3) + (8 + 4));
	CHECK_EQ_INT(be32(r + 16), 2);
	CHECK_EQ_INT(apply(&reader, r, len), DOBJ_OK);
	CHECK(same_pages(&writer, &reader));
	free(r);
	/* Two changes a few bytes apart go as one run (a header costs 8). */
	writer.b[PSZ + 500] ^= 1;
	writer.b[PSZ + 505] ^= 1;
	r = append(&pc, &writer, 2, pg, 1, &len);
	CHECK_EQ_INT(len, 12 + 8 + 8 + 6);
	CHECK_EQ_INT(apply(&reader, r, len), DOBJ_OK);
	CHECK(same_pages(&writer, &reader));
	free(r);
	/* Written again with the bytes it had: left out, the size kept. */
	r = append(&pc, &writer, 2, pg, 1, &len);
	CHECK_EQ_INT(len, 12);
	CHECK_EQ_INT(be32(r + 8), 0);
	CHECK_EQ_INT(apply(&reader, r, len), DOBJ_OK);
	CHECK(same_pages(&writer, &reader));
	free(r);
	/* Changed all over: whole again (its runs would take more). */
	fill_random(&writer, 2);
	r = append(&pc, &writer, 2, pg, 1, &len);
	CHECK_EQ_INT(len, 12 + 8 + PSZ);
	CHECK_EQ_INT(be32(r + 16), 0);
	CHECK_EQ_INT(apply(&reader, r, len), DOBJ_OK);
	CHECK(same_pages(&writer, &reader));
	free(r);
	dobj__page_cache_free(pc);
}

/* A page the writer dropped (the database cut below it) goes whole when
 * written next: never a change to bytes the reader does not have. */
static void test_cut_and_evicted_pages_go_whole(void)
{
	dobj__page_cache *pc = NULL;
	uint32_t all[MAXPG], one[1];
	unsigned char *r;
	size_t len;
	uint32_t i;
	size_t cost;

	memset(&writer, 0, sizeof(writer));
	memset(&reader, 0, sizeof(reader));
	writer.pages = 40;
	for (i = 0; i < 40; i++) {
		all[i] = i + 1;
		fill_random(&writer, i + 1);
	}
	r = append(&pc, &writer, 40, all, 40, &len);
	CHECK_EQ_INT(apply(&reader, r, len), DOBJ_OK);
	free(r);
	cost = dobj__page_budget_used(budget) / 40;
	/* Cut to 10 pages, then grown back: page 20 is new to the reader. */
	r = append(&pc, &writer, 10, all, 0, &len);
	CHECK_EQ_INT(apply(&reader, r, len), DOBJ_OK);
	CHECK_EQ_INT(dobj__page_budget_used(budget), 10 * cost);
	free(r);
	writer.pages = 20;
	memset(writer.b + 10 * PSZ, 0, 10 * PSZ);
	writer.b[19 * PSZ + 7] = 9;
	one[0] = 20;
	r = append(&pc, &writer, 20, one, 1, &len);
	CHECK_EQ_INT(len, 12 + 8 + PSZ);
	CHECK_EQ_INT(apply(&reader, r, len), DOBJ_OK);
	CHECK(same_pages(&writer, &reader));
	free(r);
	dobj__page_cache_free(pc);
	CHECK_EQ_INT(dobj__page_budget_used(budget), 0);
}

/* The node's bound is shared by every incarnation: past it the least
 * recently appended images go (whichever object's), and their pages go
 * whole next time; the others still go as their changes. */
static void test_the_least_recently_appended_images_make_room(void)
{
	dobj__page_budget *big = budget;
	dobj__page_cache *pa = NULL, *pb = NULL;
	uint32_t one[1];
	unsigned char *r;
	size_t len, page_cost;

	budget = dobj__page_budget_new(8 * (PSZ + 64));
	memset(&writer, 0, sizeof(writer));
	memset(&reader, 0, sizeof(reader));
	writer.pages = 20;
	for (uint32_t p = 1; p <= 20; p++)
		fill_random(&writer, p);
	/* Object A appends pages 1-4, object B pages 5-8: the bound holds 8. */
	for (uint32_t p = 1; p <= 8; p++) {
		one[0] = p;
		r = append(p <= 4 ? &pa : &pb, &writer, 20, one, 1, &len);
		CHECK_EQ_INT(len, 12 + 8 + PSZ);
		free(r);
	}
	page_cost = dobj__page_budget_used(budget) / 8;
	CHECK(page_cost >= PSZ && page_cost <= PSZ + 64);
	/* A touches page 1 again (now the most recent), then B appends page 9:
	 * page 2, A's, is the least recent and goes. */
	writer.b[0] ^= 1;
	one[0] = 1;
	r = append(&pa, &writer, 20, one, 1, &len);
	CHECK_EQ_INT(len, 12 + 8 + 8 + 1);
	free(r);
	one[0] = 9;
	r = append(&pb, &writer, 20, one, 1, &len);
	free(r);
	CHECK_EQ_INT(dobj__page_budget_used(budget), 8 * page_cost);
	writer.b[1 * PSZ] ^= 1;
	one[0] = 2;
	r = append(&pa, &writer, 20, one, 1, &len);
	CHECK_EQ_INT(len, 12 + 8 + PSZ); /* whole: its image went */
	free(r);
	writer.b[0] ^= 2;
	one[0] = 1;
	r = append(&pa, &writer, 20, one, 1, &len);
	CHECK_EQ_INT(len, 12 + 8 + 8 + 1); /* still kept */
	free(r);
	/* Each incarnation's images go with it; the bound outlives the node's
	 * reference while a cache holds one. */
	dobj__page_cache_free(pa);
	CHECK(dobj__page_budget_used(budget) > 0);
	dobj__page_budget_unref(budget);
	dobj__page_cache_free(pb);
	budget = big;
}

/* Another page size (a VACUUM after PRAGMA page_size) starts afresh. */
static void test_another_page_size_goes_whole(void)
{
	dobj__page_cache *pc = NULL;
	unsigned char rec[12 + 4 + 8192], *out;
	size_t len;

	memset(&writer, 0, sizeof(writer));
	writer.pages = 1;
	{
		uint32_t one[] = { 1 };
		out = append(&pc, &writer, 1, one, 1, &len);
		free(out);
	}
	memset(rec, 0, sizeof(rec));
	put32(rec, 8192);
	put32(rec + 4, 1);
	put32(rec + 8, 1);
	put32(rec + 12, 1);
	CHECK_EQ_INT(dobj__rec_changes(budget, &pc, rec, sizeof(rec), &out, &len), DOBJ_OK);
	CHECK_EQ_INT(len, 12 + 8 + 8192);
	CHECK_EQ_INT(be32(out) & 0xffff, 8192);
	free(out);
	/* A capture that is not one is refused, the cache kept. */
	put32(rec + 8, 2);
	CHECK_EQ_INT(dobj__rec_changes(budget, &pc, rec, sizeof(rec), &out, &len), DOBJ_ERROR);
	CHECK(out == NULL && len == 0);
	/* Page 0 (a damaged -wal file): refused, not diffed against an empty
	 * slot's stale image. */
	put32(rec + 8, 1);
	put32(rec + 12, 0);
	CHECK_EQ_INT(dobj__rec_changes(budget, &pc, rec, sizeof(rec), &out, &len), DOBJ_ERROR);
	CHECK(out == NULL && strstr(dobj_error_last(), "page 0") != NULL);
	put32(rec + 12, 1);
	CHECK_EQ_INT(dobj__rec_changes(budget, &pc, rec, sizeof(rec), &out, &len), DOBJ_OK);
	CHECK_EQ_INT(len, 12); /* page 1 as the cache holds it: left out */
	free(out);
	dobj__page_cache_free(pc);
}

/* Histories of many records (small changes, pages rewritten, pages added,
 * the database cut, more pages than the writer keeps): the reader's pages
 * are the writer's after every record. */
static void test_random_histories_rebuild_every_page(void)
{
	dobj__page_budget *big = budget;

	for (int run = 0; run < 20; run++) {
		dobj__page_cache *pc = NULL;
		int ok = 1;

		/* Every other run within 12 pages: images go as the bound says. */
		budget = run & 1 ? dobj__page_budget_new(12 * (PSZ + 64)) : big;
		memset(&writer, 0, sizeof(writer));
		memset(&reader, 0, sizeof(reader));
		writer.pages = 1;
		for (int step = 0; step < 300 && ok; step++) {
			uint32_t pgnos[MAXPG], n = 0, dbsize = writer.pages, k = 1 + rnd() % 6;
			unsigned char *r;
			size_t len;
			uint32_t what = rnd() % 100;
			if (what < 5 && dbsize > 2) {
				dbsize = 1 + rnd() % (dbsize - 1); /* cut */
			} else if (what < 20 && dbsize < MAXPG) {
				dbsize += 1 + rnd() % (MAXPG - dbsize < 8 ? MAXPG - dbsize : 8);
				memset(writer.b + (size_t)writer.pages * PSZ, 0,
					(size_t)(dbsize - writer.pages) * PSZ);
			}
			writer.pages = dbsize;
			for (uint32_t i = 0; i < k; i++) {
				uint32_t p = 1 + rnd() % dbsize, j;
				for (j = 0; j < n && pgnos[j] != p; j++)
					;
				if (j == n)
					pgnos[n++] = p;
				if (rnd() % 10 == 0) {
					fill_random(&writer, p);
				} else {
					uint32_t changes = 1 + rnd() % 5;
					while (changes--) {
						uint32_t at = rnd() % PSZ, m = 1 + rnd() % 16;
						if (at + m > PSZ)
							m = PSZ - at;
						for (uint32_t b = 0; b < m; b++)
							writer.b[(size_t)(p - 1) * PSZ + at + b] =
								(unsigned char)rnd();
					}
				}
			}
			r = append(&pc, &writer, dbsize, pgnos, n, &len);
			CHECK(len <= 12 + (size_t)n * (8 + PSZ));
			CHECK_EQ_INT(apply(&reader, r, len), DOBJ_OK);
			ok = same_pages(&writer, &reader);
			CHECK(ok);
			free(r);
		}
		dobj__page_cache_free(pc);
		if (budget != big) {
			CHECK_EQ_INT(dobj__page_budget_used(budget), 0);
			dobj__page_budget_unref(budget);
		}
	}
	budget = big;
}

/* Hand-made records that lie: each is refused as malformed, whole. */
static void test_records_that_lie_are_malformed(void)
{
	/* format 2, 4096-byte pages, 1 page in the database */
	static const unsigned char head[] = { 0x80, 0, 0x10, 0, 0, 0, 0, 1 };
	static const struct { const char *what; unsigned char body[40]; size_t n; } lies[] = {
		{ "a run past the page", { 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1,
			0, 0, 0x0f, 0xff, 0, 0, 0, 2, 7, 7 }, 22 },
		{ "a run at the page's end", { 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1,
			0, 0, 0x10, 0, 0, 0, 0, 1, 7 }, 21 },
		{ "a run of no bytes", { 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1,
			0, 0, 0, 0, 0, 0, 0, 0 }, 20 },
		{ "a run longer than the row", { 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1,
			0, 0, 0, 0, 0, 0, 0, 9, 7 }, 21 },
		{ "a run count past the row", { 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0xff,
			0, 0, 0, 0, 0, 0, 0, 1, 7 }, 21 },
		{ "a run count of 4 G", { 0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff,
			0, 0, 0, 0, 0, 0, 0, 1, 7 }, 21 },
		{ "a page count past the row", { 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1,
			0, 0, 0, 0, 0, 0, 0, 1, 7 }, 21 },
		{ "bytes after the last page", { 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1,
			0, 0, 0, 0, 0, 0, 0, 1, 7, 0 }, 22 },
		{ "a whole page cut short", { 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3 }, 15 },
		{ "page 0", { 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1,
			0, 0, 0, 0, 0, 0, 0, 1, 7 }, 21 },
		{ "a page number without its runs", { 0, 0, 0, 1, 0, 0, 0, 1, 0, 0 }, 10 },
	};
	unsigned char rec[64];
	dobj__rec_info info;

	for (size_t i = 0; i < sizeof(lies) / sizeof(*lies); i++) {
		check_case = (int)i;
		memcpy(rec, head, sizeof(head));
		memcpy(rec + sizeof(head), lies[i].body, lies[i].n);
		CHECK_EQ_INT(dobj__rec_walk(rec, sizeof(head) + lies[i].n, &info, NULL, NULL),
			DOBJ__REC_MALFORMED);
	}
	check_case = -1;
	/* The same frame, told true, is a record. */
	{
		static const unsigned char ok[] = { 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1,
			0, 0, 0x0f, 0xff, 0, 0, 0, 1, 7 };
		memcpy(rec, head, sizeof(head));
		memcpy(rec + sizeof(head), ok, sizeof(ok));
		CHECK_EQ_INT(dobj__rec_walk(rec, sizeof(head) + sizeof(ok), &info, NULL, NULL),
			DOBJ_OK);
		CHECK_EQ_INT(info.changed_top, 1);
		CHECK_EQ_INT(info.top, 1);
		/* ... which needs the page: an empty image refuses it. */
		memset(&reader, 0, sizeof(reader));
		CHECK_EQ_INT(apply(&reader, rec, sizeof(head) + sizeof(ok)), 2);
	}
	/* A database size of 0, a page size that is none. */
	memcpy(rec, head, sizeof(head));
	memset(rec + 4, 0, 4);
	memset(rec + 8, 0, 4);
	CHECK_EQ_INT(dobj__rec_walk(rec, 12, &info, NULL, NULL), DOBJ__REC_MALFORMED);
	put32(rec, 0x80000000u | 3000);
	put32(rec + 4, 1);
	CHECK_EQ_INT(dobj__rec_walk(rec, 12, &info, NULL, NULL), DOBJ__REC_MALFORMED);
	CHECK_EQ_INT(dobj__rec_walk(rec, 11, &info, NULL, NULL), DOBJ__REC_MALFORMED);
}

/* Valid records with bytes flipped, cut or grown anywhere: refused, or
 * applied within their pages (ASan watches every write). */
static void test_mutated_records_never_write_outside_a_page(void)
{
	dobj__page_cache *pc = NULL;
	uint32_t pgnos[] = { 1, 2, 3 };
	unsigned char *good[2], *r;
	size_t glen[2];
	int refused = 0;

	memset(&writer, 0, sizeof(writer));
	writer.pages = 3;
	for (uint32_t p = 1; p <= 3; p++)
		fill_random(&writer, p);
	good[0] = append(&pc, &writer, 3, pgnos, 3, &glen[0]);
	for (int c = 0; c < 12; c++)
		writer.b[rnd() % (3 * PSZ)] ^= 0x5a;
	good[1] = append(&pc, &writer, 3, pgnos, 3, &glen[1]);
	CHECK(glen[1] < 400);
	for (int i = 0; i < 20000; i++) {
		int g = i & 1;
		size_t len = glen[g], k;
		r = malloc(len + 16);
		memcpy(r, good[g], len);
		for (k = 0; k < 1 + rnd() % 4; k++) {
			switch (rnd() % 3) {
			case 0: r[rnd() % len] ^= (unsigned char)(1 + rnd() % 255); break;
			case 1: len = len ? rnd() % len : 0; break;
			default: put32(r + (rnd() % (len > 4 ? len - 3 : 1)), rnd()); break;
			}
			if (len < 4)
				break;
		}
		memset(&reader, 0, sizeof(reader));
		reader.pages = g ? 3 : 0;
		if (apply(&reader, r, len) != DOBJ_OK)
			refused++;
		free(r);
	}
	CHECK(refused > 1000);
	free(good[0]);
	free(good[1]);
	dobj__page_cache_free(pc);
}

int main(void)
{
	budget = dobj__page_budget_new(64 << 20);
	RUN(test_an_increment_goes_as_the_bytes_it_changed);
	RUN(test_cut_and_evicted_pages_go_whole);
	RUN(test_the_least_recently_appended_images_make_room);
	RUN(test_another_page_size_goes_whole);
	RUN(test_random_histories_rebuild_every_page);
	RUN(test_records_that_lie_are_malformed);
	RUN(test_mutated_records_never_write_outside_a_page);
	CHECK_EQ_INT(dobj__page_budget_used(budget), 0);
	dobj__page_budget_unref(budget);
	return DONE();
}
