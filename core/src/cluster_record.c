/*
 * Log records: what one commit of an object changed, as a dobj_wal row
 * holds it.
 *
 * cluster_wal.c reads a commit's pages from the -wal file into a record of
 * whole pages (format 1).  Most commits change a few bytes of a page (an
 * increment rewrites one value in a 4 KiB leaf), so before the record is
 * appended every page the incarnation appended before is replaced by the
 * byte ranges that differ from the image it appended last (format 2).  A
 * reader applies rows in seq order onto the image of the rows before, so
 * the bytes outside those ranges already are what they were.  An increment
 * then ships tens of bytes instead of 4 KiB: PostgreSQL keeps such a row
 * in its heap page (no TOAST chunks, their index entries and WAL), the
 * node hashes and sends less, and the log reaches the compaction threshold
 * after many more writes.
 *
 * Why the images of the incarnation's own appends, and not the local file
 * or its WAL: they are exactly what the log holds.  A new incarnation
 * starts with none (its first write of each page is whole), and it ends at
 * its first failed append, so no row is ever built on an image that did
 * not reach PostgreSQL before it.  The images of all of a node's
 * incarnations share one bound (dobj__page_budget: the node's page_cache
 * option), the least recently appended going first: a page that lost its
 * image is sent whole.
 *
 * Format 2, big-endian: u32 page size | REC_CHANGES, u32 pages in the
 * database after it, u32 count, then count x (u32 page number, u32 runs,
 * then the page's bytes when runs is 0, else runs x (u32 offset, u32 n,
 * n bytes)).  A page written again with the bytes it had is left out.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_int.h"

/* Format 2's mark in the page-size word (a page size is at most 65536). */
#define REC_CHANGES 0x80000000u
/* Two changed ranges closer than this are sent as one: a run's header
 * costs 8 bytes. */
#define RUN_GAP 8

/* One page image an incarnation appended last. */
typedef struct cpage cpage;
struct cpage {
	cpage *newer, *older;       /* the node's list, most recently used first */
	cpage *chain;               /* the incarnation's bucket */
	dobj__page_cache *owner;
	uint32_t pgno;
	unsigned char img[];
};

/* The images of every incarnation of a node, within one bound (the
 * runtime's thread only).  Freed with its last reference: the node's and
 * each cache's. */
struct dobj__page_budget {
	size_t limit, used;
	cpage *newest, *oldest;
	size_t refs;
};

/* An incarnation's images: a hash of page numbers. */
struct dobj__page_cache {
	dobj__page_budget *budget;
	uint32_t psz;
	size_t count, nbuckets;     /* nbuckets: a power of 2, or 0 */
	cpage **buckets;
	uint32_t max_pgno;          /* no page kept is past it */
};

dobj__page_budget *dobj__page_budget_new(size_t limit)
{
	dobj__page_budget *b = calloc(1, sizeof(*b));

	if (b) {
		b->limit = limit;
		b->refs = 1;
	}
	return b;
}

void dobj__page_budget_unref(dobj__page_budget *b)
{
	if (b && --b->refs == 0)
		free(b);
}

size_t dobj__page_budget_used(const dobj__page_budget *b)
{
	return b ? b->used : 0;
}

static void lru_unlink(dobj__page_budget *b, cpage *p)
{
	if (p->newer)
		p->newer->older = p->older;
	else
		b->newest = p->older;
	if (p->older)
		p->older->newer = p->newer;
	else
		b->oldest = p->newer;
	p->newer = p->older = NULL;
}

static void lru_front(dobj__page_budget *b, cpage *p)
{
	p->older = b->newest;
	p->newer = NULL;
	if (b->newest)
		b->newest->newer = p;
	else
		b->oldest = p;
	b->newest = p;
}

/* Page pgno's bucket among n (a power of 2): multiplied by an odd
 * constant, neighbouring pages spread over the buckets. */
static size_t bucket_in(uint32_t pgno, size_t n)
{
	return (size_t)((pgno * 2654435761u) & (uint32_t)(n - 1));
}

static size_t bucket_of(const dobj__page_cache *pc, uint32_t pgno)
{
	return bucket_in(pgno, pc->nbuckets);
}

static cpage *find(const dobj__page_cache *pc, uint32_t pgno)
{
	cpage *p;

	if (!pc || !pc->nbuckets || pgno == 0)
		return NULL;
	for (p = pc->buckets[bucket_of(pc, pgno)]; p && p->pgno != pgno; p = p->chain)
		;
	return p;
}

/* Page p out of its cache and the node's list, freed. */
static void page_drop(cpage *p)
{
	dobj__page_cache *pc = p->owner;
	dobj__page_budget *b = pc->budget;
	cpage **at = &pc->buckets[bucket_of(pc, p->pgno)];

	while (*at != p)
		at = &(*at)->chain;
	*at = p->chain;
	pc->count--;
	lru_unlink(b, p);
	b->used -= sizeof(*p) + pc->psz;
	free(p);
}

void dobj__page_cache_free(dobj__page_cache *pc)
{
	if (!pc)
		return;
	for (size_t i = 0; i < pc->nbuckets; i++)
		while (pc->buckets[i])
			page_drop(pc->buckets[i]);
	free(pc->buckets);
	dobj__page_budget_unref(pc->budget);
	free(pc);
}

static dobj__page_cache *cache_new(dobj__page_budget *b, uint32_t psz)
{
	dobj__page_cache *pc = calloc(1, sizeof(*pc));

	if (pc) {
		pc->budget = b;
		pc->psz = psz;
		b->refs++;
	}
	return pc;
}

/* Room for one more page: the buckets grown past one page each (best
 * effort: a full table only chains longer). */
static void buckets_grow(dobj__page_cache *pc)
{
	size_t n = pc->nbuckets ? pc->nbuckets * 2 : 16;
	cpage **nb;

	if (pc->count < pc->nbuckets || n > SIZE_MAX / sizeof(*nb) || !(nb = calloc(n, sizeof(*nb))))
		return;
	for (size_t i = 0; i < pc->nbuckets; i++) {
		cpage *p = pc->buckets[i], *next;
		for (; p; p = next) {
			next = p->chain;
			p->chain = nb[bucket_in(p->pgno, n)];
			nb[bucket_in(p->pgno, n)] = p;
		}
	}
	free(pc->buckets);
	pc->buckets = nb;
	pc->nbuckets = n;
}

/* Page pgno's image becomes `img` (the least recently used pages of the
 * node go to make room; a page that cannot be kept is dropped: it goes
 * whole next time). */
static void cache_put(dobj__page_cache *pc, uint32_t pgno, const unsigned char *img)
{
	dobj__page_budget *b = pc->budget;
	size_t need = sizeof(cpage) + pc->psz;
	cpage *p = find(pc, pgno);

	if (p) {
		memcpy(p->img, img, pc->psz);
		lru_unlink(b, p);
		lru_front(b, p);
		return;
	}
	if (need > b->limit)
		return;
	while (b->used + need > b->limit && b->oldest)
		page_drop(b->oldest);
	buckets_grow(pc);
	if (!pc->nbuckets || !(p = malloc(need)))
		return;
	p->owner = pc;
	p->pgno = pgno;
	memcpy(p->img, img, pc->psz);
	p->chain = pc->buckets[bucket_of(pc, pgno)];
	pc->buckets[bucket_of(pc, pgno)] = p;
	pc->count++;
	if (pgno > pc->max_pgno)
		pc->max_pgno = pgno;
	b->used += need;
	lru_front(b, p);
}

static int words_equal(const unsigned char *a, const unsigned char *b)
{
	uint64_t x, y;

	memcpy(&x, a, 8);
	memcpy(&y, b, 8);
	return x == y;
}

/*
 * The runs of `now` that differ from `was` (psz bytes each) written at
 * `out`, as long as they take less than `limit` bytes; their count in
 * *runs.  The bytes written, or 0 when they would take `limit` or more
 * (the page goes whole).
 */
static size_t diff_runs(const unsigned char *was, const unsigned char *now, uint32_t psz,
	unsigned char *out, size_t limit, uint32_t *runs)
{
	size_t used = 0, i = 0;

	*runs = 0;
	while (i < psz) {
		size_t start, end, j;
		/* Equal words are skipped a word at a time (the page size is a
		 * multiple of 8). */
		if (!(i & 7) && words_equal(was + i, now + i)) {
			i += 8;
			continue;
		}
		if (was[i] == now[i]) {
			i++;
			continue;
		}
		start = i;
		end = j = i + 1; /* end: past the last differing byte */
		while (j < psz && j - end < RUN_GAP) {
			if (was[j] != now[j])
				end = j + 1;
			j++;
		}
		if (used + 8 + (end - start) >= limit)
			return 0;
		dobj__put32(out + used, (uint32_t)start);
		dobj__put32(out + used + 4, (uint32_t)(end - start));
		memcpy(out + used + 8, now + start, end - start);
		used += 8 + (end - start);
		(*runs)++;
		i = end;
	}
	return used;
}

/* The images of the record's pages become the cache's; pages past the
 * database's new end are dropped. */
static void cache_take(dobj__page_cache *pc, const unsigned char *rec, uint32_t count,
	uint32_t psz, uint32_t dbsize)
{
	for (uint32_t i = 0; i < count; i++) {
		const unsigned char *p = rec + 12 + (size_t)i * (4 + (size_t)psz);
		cache_put(pc, dobj__be32(p), p + 4);
	}
	/* A cut (rare: a VACUUM, an incremental vacuum) looks at every page
	 * kept; max_pgno bounds them. */
	if (pc->max_pgno > dbsize) {
		uint32_t max = 0;
		for (size_t i = 0; i < pc->nbuckets; i++) {
			cpage *p = pc->buckets[i], *next;
			for (; p; p = next) {
				next = p->chain;
				if (p->pgno > dbsize)
					page_drop(p);
				else if (p->pgno > max)
					max = p->pgno;
			}
		}
		pc->max_pgno = max;
	}
}

int dobj__rec_changes(dobj__page_budget *budget, dobj__page_cache **cache,
	const unsigned char *rec, size_t len, unsigned char **out, size_t *out_len)
{
	uint32_t psz, dbsize, count, kept = 0;
	dobj__page_cache *pc = *cache;
	unsigned char *o;
	size_t at = 12;

	*out = NULL;
	*out_len = 0;
	if (len < 12)
		return dobj_error_set(DOBJ_ERROR, "cluster: a malformed capture");
	psz = dobj__be32(rec);
	dbsize = dobj__be32(rec + 4);
	count = dobj__be32(rec + 8);
	if (dobj__bad_page_size(psz) || 12 + (uint64_t)count * (4 + (uint64_t)psz) != len)
		return dobj_error_set(DOBJ_ERROR, "cluster: a malformed capture");
	/* Page 0 is no page (a damaged -wal file): it would be refused by
	 * every reader, and 0 marks an empty slot here. */
	for (uint32_t i = 0; i < count; i++)
		if (dobj__be32(rec + 12 + (size_t)i * (4 + (size_t)psz)) == 0)
			return dobj_error_set(DOBJ_ERROR, "cluster: a malformed capture (page 0)");
	if (pc && pc->psz != psz) {
		/* Another page size (a VACUUM after PRAGMA page_size): every
		 * page is new. */
		dobj__page_cache_free(pc);
		*cache = pc = NULL;
	}
	/* At most 4 more bytes a page than the record (a whole page's runs
	 * word); a page's changes are used only when smaller than it. */
	if (len > SIZE_MAX - 4 * (size_t)count || !(o = malloc(len + 4 * (size_t)count)))
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	for (uint32_t i = 0; i < count; i++) {
		const unsigned char *p = rec + 12 + (size_t)i * (4 + (size_t)psz);
		const cpage *c = find(pc, dobj__be32(p));
		const unsigned char *was = c ? c->img : NULL;
		size_t used = 0;
		uint32_t runs = 0;
		if (was) {
			if (!memcmp(was, p + 4, psz))
				continue; /* written again unchanged */
			used = diff_runs(was, p + 4, psz, o + at + 8, psz, &runs);
		}
		memcpy(o + at, p, 4);
		if (used) {
			dobj__put32(o + at + 4, runs);
			at += 8 + used;
		} else {
			dobj__put32(o + at + 4, 0);
			memcpy(o + at + 8, p + 4, psz);
			at += 8 + psz;
		}
		kept++;
	}
	dobj__put32(o, psz | REC_CHANGES);
	dobj__put32(o + 4, dbsize);
	dobj__put32(o + 8, kept);
	/* From here on nothing fails: the cache holds what this record, once
	 * appended, makes the log's images. */
	if (!pc && budget)
		*cache = pc = cache_new(budget, psz);
	if (pc)
		cache_take(pc, rec, count, psz, dbsize);
	*out = o;
	*out_len = at;
	return DOBJ_OK;
}

int dobj__rec_walk(const unsigned char *rec, size_t len, dobj__rec_info *info,
	dobj__rec_write_fn write, void *arg)
{
	const unsigned char *p = rec + 12, *end = rec + len;
	uint32_t psz, count, i;
	int changes;

	if (len < 12)
		return DOBJ__REC_MALFORMED;
	psz = dobj__be32(rec);
	changes = (psz & REC_CHANGES) != 0;
	psz &= ~REC_CHANGES;
	count = dobj__be32(rec + 8);
	info->psz = psz;
	info->dbsize = dobj__be32(rec + 4);
	info->top = info->changed_top = 0;
	/* A record ends at a commit frame, whose database size is never 0: a
	 * size of 0 would empty the database (served with its data gone). */
	if (dobj__bad_page_size(psz) || info->dbsize == 0)
		return DOBJ__REC_MALFORMED;
	if (!changes && 12 + (uint64_t)count * (4 + (uint64_t)psz) != len)
		return DOBJ__REC_MALFORMED;
	for (i = 0; i < count; i++) {
		uint32_t pgno, runs;
		if ((size_t)(end - p) < (changes ? 8u : 4u))
			return DOBJ__REC_MALFORMED;
		pgno = dobj__be32(p);
		runs = changes ? dobj__be32(p + 4) : 0;
		p += changes ? 8 : 4;
		if (pgno == 0)
			return DOBJ__REC_MALFORMED;
		if (pgno > info->top)
			info->top = pgno;
		if (runs == 0) {
			if ((size_t)(end - p) < psz)
				return DOBJ__REC_MALFORMED;
			if (write) {
				int rc = write(arg, pgno, 0, p, psz);
				if (rc < 0)
					return rc;
			}
			p += psz;
			continue;
		}
		/* A page changed in part: the rest of it is the log's already. */
		if (pgno > info->changed_top)
			info->changed_top = pgno;
		for (uint32_t r = 0; r < runs; r++) {
			uint32_t off, n;
			if ((size_t)(end - p) < 8)
				return DOBJ__REC_MALFORMED;
			off = dobj__be32(p);
			n = dobj__be32(p + 4);
			p += 8;
			if (n == 0 || off >= psz || n > psz - off || (size_t)(end - p) < n)
				return DOBJ__REC_MALFORMED;
			if (write) {
				int rc = write(arg, pgno, off, p, n);
				if (rc < 0)
					return rc;
			}
			p += n;
		}
	}
	return p == end ? DOBJ_OK : DOBJ__REC_MALFORMED;
}
