/*
 * Snapshots of cluster objects, and their restore.
 *
 * An object's redo log (dobj_wal, one row per step that wrote) would grow
 * for ever and every activation would replay all of it.  Once the log since
 * the object's last snapshot holds cl->snap_bytes bytes, and at least the
 * size of that snapshot (so a big database is not rewritten for every small
 * change: the bytes written for snapshots stay below the log's own), the
 * node's compactor thread writes a new snapshot: the whole database as of a
 * seq N, built from PostgreSQL's own rows (the last snapshot plus the log
 * up to N, every one of them confirmed), and deletes the log rows it covers.
 * The runtime's thread only counts bytes and queues; it never waits for
 * the compactor, and nothing it acknowledges depends on a snapshot.
 *
 * One transaction: the snapshot row is written, the owner row is checked
 * (FOR SHARE) to still name this node with the incarnation's epoch, and
 * the log rows below N are deleted; row N keeps its seq and epoch with
 * empty frames.  That marker makes a node of schema version 1 (which knows
 * no snapshots) refuse to restore the object ("a log record ... is
 * malformed") rather than rebuild it from the later rows alone.  A node
 * that lost the object is refused by the fence; a process killed anywhere
 * in between leaves the transaction uncommitted: the old snapshot and the
 * whole log stay.
 *
 * A snapshot row's bytes say what they are and are checked before use:
 * magic "dobjsnap", format, page size, seq, epoch of row seq, page count
 * (u32/u64, big-endian), the SHA-256 of the image, then in format 1 the
 * image (the SQLite file).  An image larger than the part size (16 MiB by
 * default) is stored in parts instead (format 2: the header ends with the
 * part size and count; dobj_snapshot_part holds the parts, keyed by the
 * snapshot's seq): PostgreSQL takes at most 1 GiB in a value, and neither
 * side ever holds a big image in memory.  The compactor builds an image in
 * memory while it is small and in an unlinked file once it passes the part
 * size; restore writes the parts to the file one at a time.  A truncated or
 * damaged row or part, a missing part, a seq that differs from the row's,
 * or a log with a gap is a clear error: the object is not served rather
 * than served with the wrong data.
 *
 * Restore (on activation): the latest snapshot plus the log after it, read
 * in one view of the database (a compaction commits wholly before or after
 * it) and in bounded pieces (state_read, shared with the compactor).  A
 * node that released
 * an object cleanly leaves a marker next to the file ("<file>-seq": the
 * seq and epoch it is at, the checksum of log row seq, the file's identity
 * and the SHA-256 of its content); when the file is unchanged and
 * PostgreSQL's latest state is the same, vouched for by the same log row
 * checksum (or, when it is the snapshot, the same image checksum as the
 * file's), the file is used as it is and nothing but that head is read.
 * The head is read first: a file whose marker names another state is not
 * hashed (read whole) for nothing.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cluster_int.h"

#define SNAP_MAGIC "dobjsnap"
#define SNAP_FORMAT 1       /* the image in the row */
#define SNAP_FORMAT_PARTS 2 /* the image in dobj_snapshot_part */
#define SNAP_HDR 68         /* magic 8, format 4, page size 4, seq 8, epoch 8, pages 4, sha 32 */
#define SNAP_HDR_PARTS 76   /* format 2: then the part size 4, the part count 4 */
/* What a log row costs PostgreSQL besides its record (the row's other
 * columns and header, its index entry), counted in the log's size: a log
 * of small rows (an increment's changed bytes) is compacted for its
 * row count too, which is what a restore's time follows. */
#define LOG_ROW_BYTES 192
/* The largest seq an object restores at: 146,000 years of a million writes
 * a second, far from the end of an int8 (see dobj__snap_restore). */
#define SEQ_MAX ((long long)1 << 62)

static int64_t be64(const unsigned char *p)
{
	return (int64_t)((uint64_t)dobj__be32(p) << 32 | dobj__be32(p + 4));
}

static void put64(unsigned char *p, int64_t v)
{
	dobj__put32(p, (uint32_t)((uint64_t)v >> 32));
	dobj__put32(p + 4, (uint32_t)v);
}

static int damaged(long long seq, const char *what)
{
	return dobj_error_set(DOBJ_ERROR, "cluster: the object's data in PostgreSQL is damaged "
		"(%s at seq %lld); the object is not served", what, seq);
}

/* Row i of a result (seq, epoch, frames, sum in columns 1, 2, 3, 6) is a log
 * row of object `id` as its writer wrote it: its checksum matches. */
static int row_check(const PGresult *r, int i, const unsigned char *id)
{
	long long seq = be64((const unsigned char *)PQgetvalue(r, i, 1));

	if (!dobj__wal_sum_ok(id, seq, be64((const unsigned char *)PQgetvalue(r, i, 2)),
		(const unsigned char *)PQgetvalue(r, i, 3), (size_t)PQgetlength(r, i, 3),
		(const unsigned char *)PQgetvalue(r, i, 6), (size_t)PQgetlength(r, i, 6)))
		return damaged(seq, "a log row whose checksum does not match");
	return DOBJ_OK;
}

/* A snapshot row's header, checked against its row's seq. */
typedef struct snap_head {
	uint32_t format, psz, pages;
	uint32_t part, nparts;      /* format 2 */
	uint64_t size;              /* bytes of the image */
	const unsigned char *sha;   /* its SHA-256 */
	const unsigned char *img;   /* format 1: the image, in the row */
} snap_head;

static int snap_head_read(const unsigned char *b, size_t len, long long seq, snap_head *h)
{
	memset(h, 0, sizeof(*h));
	if (len < SNAP_HDR || memcmp(b, SNAP_MAGIC, 8))
		return damaged(seq, "a snapshot that is not one");
	h->format = dobj__be32(b + 8);
	if (h->format != SNAP_FORMAT && h->format != SNAP_FORMAT_PARTS)
		return dobj_error_set(DOBJ_ERROR, "cluster: the object's snapshot (seq %lld) is in "
			"format %u, which this dobj does not know: upgrade dobj on this node", seq,
			(unsigned)h->format);
	h->psz = dobj__be32(b + 12);
	h->pages = dobj__be32(b + 32);
	/* No compaction makes a snapshot of no pages (its records' database
	 * is never empty): one would be served as an empty database. */
	if (dobj__bad_page_size(h->psz) || h->pages == 0 || be64(b + 16) != seq)
		return damaged(seq, "a snapshot whose header does not match its row");
	h->size = (uint64_t)h->pages * h->psz;
	h->sha = b + 36;
	if (h->format == SNAP_FORMAT) {
		if (h->size != len - SNAP_HDR)
			return damaged(seq, "a truncated snapshot");
		h->img = b + SNAP_HDR;
		return DOBJ_OK;
	}
	if (len != SNAP_HDR_PARTS)
		return damaged(seq, "a snapshot whose header does not match its row");
	h->part = dobj__be32(b + 68);
	h->nparts = dobj__be32(b + 72);
	if (h->part == 0 || h->nparts != (h->size + h->part - 1) / h->part)
		return damaged(seq, "a snapshot whose header does not match its row");
	return DOBJ_OK;
}

/* Where a snapshot's image goes, `n` bytes at `off` at a time. */
typedef int (*snap_sink)(void *arg, uint64_t off, const unsigned char *p, size_t n);

/* The image of the snapshot (ns, id, seq) whose header is h, to `sink`,
 * its checksum checked: at once in format 1, part by part in format 2 (one
 * part in memory at a time; what went to the sink before a bad part or a
 * checksum that does not match is the caller's to throw away). */
static int snap_image(dobj__pg *pg, const char *ns, size_t ns_len, const unsigned char *id,
	long long seq, const snap_head *h, snap_sink sink, void *arg)
{
	char cseq[32], cpart[32];
	const char *v[4] = { ns, (const char *)id, cseq, cpart };
	int lens[4] = { (int)ns_len, 32, 0, 0 };
	int fmts[4] = { 0, 1, 0, 0 };
	unsigned char sha[32];
	EVP_MD_CTX *md;
	PGresult *r = NULL;
	uint32_t i;
	int rc = DOBJ_OK;

	if (h->format == SNAP_FORMAT) {
		SHA256(h->img, (size_t)h->size, sha);
		if (memcmp(sha, h->sha, 32))
			return damaged(seq, "a snapshot whose checksum does not match");
		return sink(arg, 0, h->img, (size_t)h->size);
	}
	if (!(md = EVP_MD_CTX_new()) || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(md);
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	}
	snprintf(cseq, sizeof(cseq), "%lld", seq);
	for (i = 0; i < h->nparts && rc == DOBJ_OK; i++) {
		uint64_t off = (uint64_t)i * h->part;
		size_t want = (size_t)(h->size - off < h->part ? h->size - off : h->part);
		if (dobj__pg_halted(pg)) {
			rc = dobj_error_set(DOBJ_ECLOSED, DOBJ_MSG_CLOSED);
			break;
		}
		snprintf(cpart, sizeof(cpart), "%u", (unsigned)i);
		if ((rc = dobj__pg_exec_sized(pg, want, "SELECT data FROM dobj_snapshot_part WHERE "
			"ns = $1 AND object_id = $2 AND seq = $3::int8 AND part = $4::int4", 4, v, lens,
			fmts, 1, &r)) < 0)
			break;
		if (PQntuples(r) != 1)
			rc = damaged(seq, "a snapshot part missing");
		else if ((size_t)PQgetlength(r, 0, 0) != want)
			rc = damaged(seq, "a truncated snapshot");
		else if (EVP_DigestUpdate(md, PQgetvalue(r, 0, 0), want) != 1)
			rc = dobj_error_set(DOBJ_ENOMEM, "out of memory");
		else
			rc = sink(arg, off, (const unsigned char *)PQgetvalue(r, 0, 0), want);
		PQclear(r);
		r = NULL;
	}
	if (rc == DOBJ_OK && (EVP_DigestFinal_ex(md, sha, NULL) != 1 || memcmp(sha, h->sha, 32)))
		rc = damaged(seq, "a snapshot whose checksum does not match");
	EVP_MD_CTX_free(md);
	return rc;
}

static int write_at(int fd, uint64_t at, const unsigned char *p, size_t n, const char *path)
{
	size_t done = 0;

	while (done < n) {
		ssize_t w = pwrite(fd, p + done, n - done, (off_t)(at + done));
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return dobj_error_set(DOBJ_ERROR, "cluster: cannot write %s: %s", path,
				strerror(errno));
		done += (size_t)w;
	}
	return DOBJ_OK;
}

static int read_at(int fd, uint64_t at, unsigned char *p, size_t n, const char *path)
{
	size_t done = 0;

	while (done < n) {
		ssize_t got = pread(fd, p + done, n - done, (off_t)(at + done));
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return dobj_error_set(DOBJ_ERROR, "cluster: cannot read %s: %s", path,
				got < 0 ? strerror(errno) : "it ends early");
		done += (size_t)got;
	}
	return DOBJ_OK;
}

/* ----------------------------------------------------------------- images */

/* A database image being built.  A compaction's is in memory while it is
 * small (SNAP_HDR bytes reserved in front: a format-1 row is the header and
 * the image), in an unlinked file once it passes the part size, so that a
 * big database is never held in memory.  A restore's is the object's next
 * file (part 0, keep 1). */
typedef struct image {
	unsigned char *b;
	size_t cap;
	int fd;             /* the file (-1: in memory) */
	const char *spill;  /* where to make it */
	uint64_t part;      /* the size past which it goes to the file */
	int keep;           /* the file stays (a restore's) */
	uint32_t psz, pages;
} image;

static uint64_t image_size(const image *im)
{
	return (uint64_t)im->pages * im->psz;
}

/* From memory to the file. */
static int image_spill(image *im)
{
	int fd = open(im->spill, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, im->keep ? 0644 : 0600);
	int rc;

	if (fd < 0)
		return dobj_error_set(DOBJ_ERROR, "cluster: cannot write %s: %s", im->spill,
			strerror(errno));
	if (!im->keep)
		unlink(im->spill); /* nothing left behind, however the process ends */
	if (im->b && (rc = write_at(fd, 0, im->b + SNAP_HDR, (size_t)image_size(im), im->spill)) < 0) {
		close(fd);
		return rc;
	}
	free(im->b);
	im->b = NULL;
	im->cap = 0;
	im->fd = fd;
	return DOBJ_OK;
}

static int image_pages(image *im, uint32_t pages)
{
	uint64_t size = (uint64_t)pages * im->psz;
	int rc;

	if (im->fd < 0 && size > im->part && (rc = image_spill(im)) < 0)
		return rc;
	if (im->fd >= 0) {
		/* Grown with zeros, as the memory image is. */
		if (ftruncate(im->fd, (off_t)size) < 0)
			return dobj_error_set(DOBJ_ERROR, "cluster: cannot size %s: %s", im->spill,
				strerror(errno));
		im->pages = pages;
		return DOBJ_OK;
	}
	if (SNAP_HDR + (size_t)size > im->cap) {
		size_t cap = im->cap ? im->cap : 65536;
		unsigned char *b;
		while (cap < SNAP_HDR + (size_t)size)
			cap *= 2;
		if (!(b = realloc(im->b, cap)))
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		memset(b + im->cap, 0, cap - im->cap);
		im->b = b;
		im->cap = cap;
	}
	if (pages > im->pages)
		memset(im->b + SNAP_HDR + image_size(im), 0, (size_t)(pages - im->pages) * im->psz);
	im->pages = pages;
	return DOBJ_OK;
}

static int image_write(void *arg, uint64_t off, const unsigned char *p, size_t n)
{
	image *im = arg;

	if (im->fd >= 0)
		return write_at(im->fd, off, p, n, im->spill);
	memcpy(im->b + SNAP_HDR + off, p, n);
	return DOBJ_OK;
}

static void image_free(image *im)
{
	free(im->b);
	im->b = NULL;
	if (im->fd >= 0)
		close(im->fd);
	im->fd = -1;
}

/* A run or a page of a record, to the image (dobj__rec_walk's write). */
static int image_put(void *arg, uint32_t pgno, uint32_t off, const unsigned char *p, size_t n)
{
	image *im = arg;

	return image_write(im, (uint64_t)(pgno - 1) * im->psz + off, p, n);
}

static int image_apply(image *im, const unsigned char *rec, size_t len, long long seq)
{
	dobj__rec_info info;
	uint32_t top;
	int rc;

	/* Checked whole before a byte is applied. */
	if (dobj__rec_walk(rec, len, &info, NULL, NULL) != DOBJ_OK ||
	    (im->psz && info.psz != im->psz))
		return damaged(seq, "a malformed log row");
	/* The rest of a page changed in part is the rows' before it. */
	if (info.changed_top > im->pages)
		return damaged(seq, "a change to a page the log does not have");
	im->psz = info.psz;
	top = info.top > info.dbsize ? info.top : info.dbsize;
	if (top > im->pages && (rc = image_pages(im, top)) < 0)
		return rc;
	if ((rc = dobj__rec_walk(rec, len, &info, image_put, im)) != DOBJ_OK)
		return rc < 0 ? rc : damaged(seq, "a malformed log row");
	return image_pages(im, info.dbsize);
}

/* A finished image is the database its records say: page 1's header has
 * their page size and, when SQLite vouches for it (the in-header database
 * size is valid when the version-valid-for number equals the change
 * counter: sqlite.org/fileformat2.html#in_header_database_size), the
 * image's page count.  So sizes that lie under a valid checksum (a last
 * record that claims 4 G pages: a 16 TiB file, served, then uploaded by the
 * next compaction) are refused before the image is served or snapshotted. */
static int image_check(const image *im, long long seq)
{
	unsigned char h[100];
	uint32_t psz;
	int rc;

	if (im->pages == 0)
		return DOBJ_OK; /* nothing applied (a record or a snapshot has a page at least) */
	if (im->fd >= 0) {
		if ((rc = read_at(im->fd, 0, h, sizeof(h), im->spill)) < 0)
			return rc;
	} else {
		memcpy(h, im->b + SNAP_HDR, sizeof(h));
	}
	psz = (uint32_t)h[16] << 8 | h[17];
	if (psz == 1)
		psz = 65536;
	if (memcmp(h, "SQLite format 3", 16) || psz != im->psz ||
	    (dobj__be32(h + 92) == dobj__be32(h + 24) && dobj__be32(h + 28) && dobj__be32(h + 28) != im->pages))
		return damaged(seq, "pages that do not make the database they claim");
	return DOBJ_OK;
}

/* The image's header (SNAP_HDR or SNAP_HDR_PARTS bytes) at `h`. */
static void image_head(const image *im, unsigned char *h, long long seq, long long epoch,
	uint32_t format)
{
	memcpy(h, SNAP_MAGIC, 8);
	dobj__put32(h + 8, format);
	dobj__put32(h + 12, im->psz);
	put64(h + 16, seq);
	put64(h + 24, epoch);
	dobj__put32(h + 32, im->pages);
}

/* ---------------------------------------------- reading an object's state */

/*
 * Restore and compaction read the same thing: the object's latest snapshot
 * and its log after it, up to a seq, applied to an image.  The log comes in
 * pieces, keyset by seq: at most PIECE_ROWS rows, and no further row once
 * PIECE_BYTES of frames are in (the first row always comes: a row is as
 * big as its writer's transaction made it).  So what is in memory is one
 * piece (and a format-1 snapshot row, at most the part size) whatever the
 * log's length, and a long log is many statements, each within the node's
 * timeout, rather than one that outlives it.
 *
 * The first statement reads the head, the snapshot and the first piece:
 * when that is all (the usual case), one statement was one view of the
 * database.  Its size is not known before it runs, so it carries at most
 * FIRST_BYTES of the snapshot row and as much of the log (rows that do
 * not fit are left out), what the timeout alone bounds, as an append
 * smaller than DOBJ__PG_SIZED_FROM is.  (It carried a piece whatever its
 * rows' size, and a 4 MiB snapshot row: a big row, on a link a few times
 * slower than PostgreSQL's localhost, failed every activation of its
 * object with "did not answer within" the timeout.)  When there is more (a
 * longer log, a snapshot in parts, or a row that was left out), it is read
 * again in a read-only repeatable-read transaction, every statement in one
 * view: a compaction commits wholly before or after it.  There every
 * statement is bounded by the size it can carry, which the first one
 * told (dobj__pg_exec_sized), not by the timeout alone.
 * (libpq 15 has no chunked-rows mode, and its single-row mode would keep
 * one statement open for the whole log.)
 */
#define PIECE_ROWS 1024
#define PIECE_BYTES 4194304 /* 4 MiB */
#define FIRST_BYTES (DOBJ__PG_SIZED_FROM / 2)
#define STR_(x) #x
#define STR(x) STR_(x)

/* A piece of the log after seq AFTER, up to seq UPTO (SQL expressions),
 * its rows while KEEP holds (of `through`, the bytes up to the row's end);
 * the result's columns are the restore statement's. */
#define PIECE_SQL(after, upto, keep) \
	"SELECT 2::int4 AS k, seq, epoch, frames, 0::int8, 0::int8, sum, 0::int8 FROM (SELECT seq, " \
	"epoch, frames, sum, sum(octet_length(frames)::int8) OVER (ORDER BY seq) AS through " \
	"FROM dobj_wal WHERE ns = $1 AND object_id = $2 AND seq > " after " AND seq <= " \
	upto " ORDER BY seq LIMIT " STR(PIECE_ROWS) ") w WHERE " keep

/* The first statement: the head (latest seq and epoch, with the log's and
 * the snapshot's sizes, its parts included; in column 3 what vouches for
 * its content: the log row's checksum, or the snapshot's image checksum,
 * column 6 set when the head is the snapshot, and in column 7 the log's
 * largest row), then, unless the head is a cache's (seq $3, epoch $4, and
 * the log row's checksum $6 or the snapshot's image checksum $7: the
 * cached file's), the snapshot (its row's bytes only when they are no more
 * than $8; their length in column 4) and the log's first rows up to seq
 * $5, no more than $8 bytes of them (none when the first is bigger). */
static const char first_sql[] =
	"WITH s AS (SELECT seq, epoch, substring(db from 37 for 32) AS v, octet_length(db)::int8 + "
	"  coalesce((SELECT sum(octet_length(p.data)) FROM dobj_snapshot_part p WHERE p.ns = $1 AND "
	"  p.object_id = $2 AND p.seq = d.seq), 0)::int8 AS n FROM dobj_snapshot d "
	"  WHERE ns = $1 AND object_id = $2), "
	"l AS (SELECT seq, epoch, sum AS v, octet_length(frames)::int8 AS n FROM dobj_wal "
	"  WHERE ns = $1 AND object_id = $2 AND seq > coalesce((SELECT seq FROM s), 0)), "
	"h AS (SELECT seq, epoch, v, snap FROM (SELECT seq, epoch, v, true AS snap FROM s "
	"  UNION ALL SELECT seq, epoch, v, false FROM l) x ORDER BY seq DESC LIMIT 1), "
	"f AS (SELECT NOT EXISTS (SELECT 1 FROM h WHERE seq = $3::int8 AND epoch = $4::int8 AND "
	"  v = CASE WHEN snap THEN $7::bytea ELSE $6::bytea END) AS go) "
	"SELECT 0::int4 AS k, h.seq, h.epoch, h.v AS data, "
	"  (SELECT coalesce(sum(n + " STR(LOG_ROW_BYTES) "), 0) FROM l)::int8, coalesce((SELECT n FROM s), 0)::int8, "
	"  CASE WHEN h.snap THEN '\\x01'::bytea END, (SELECT coalesce(max(n), 0) FROM l)::int8 "
	"  FROM h "
	"UNION ALL SELECT 1, d.seq, d.epoch, CASE WHEN octet_length(d.db) <= $8::int8 "
	"  THEN d.db END, octet_length(d.db)::int8, 0, NULL, 0 FROM dobj_snapshot d, f "
	"  WHERE f.go AND d.ns = $1 AND d.object_id = $2 "
	"UNION ALL SELECT p.* FROM (" PIECE_SQL("coalesce((SELECT seq FROM s), 0)", "$5::int8",
	"through <= $8::int8") ") p, f WHERE f.go "
	"ORDER BY 1, 2";

/* The next piece: the log after $3 up to $4. */
static const char piece_sql[] = PIECE_SQL("$3::int8", "$4::int8",
	"through - octet_length(frames) < " STR(PIECE_BYTES)) " ORDER BY seq";

/* Row i of a first statement's result is a snapshot in parts, or one
 * whose row was held back (bigger than a piece): more statements. */
static int snap_more(const PGresult *r, int i)
{
	if (dobj__be32((const unsigned char *)PQgetvalue(r, i, 0)) != 1)
		return 0;
	return PQgetisnull(r, i, 3) || (PQgetlength(r, i, 3) >= 12 &&
		dobj__be32((const unsigned char *)PQgetvalue(r, i, 3) + 8) == SNAP_FORMAT_PARTS);
}

/* A snapshot row held back by the first statement, on its own (in the
 * transaction), bounded by its size: *out holds its bytes. */
static int snap_row(dobj__pg *pg, const char *ns, size_t ns_len, const unsigned char *id,
	long long seq, size_t len, PGresult **out)
{
	char cseq[32];
	const char *v[3] = { ns, (const char *)id, cseq };
	int lens[3] = { (int)ns_len, 32, 0 };
	int fmts[3] = { 0, 1, 0 };
	int rc;

	snprintf(cseq, sizeof(cseq), "%lld", seq);
	if ((rc = dobj__pg_exec_sized(pg, len, "SELECT db FROM dobj_snapshot WHERE ns = $1 AND "
		"object_id = $2 AND seq = $3::int8", 3, v, lens, fmts, 1, out)) < 0)
		return rc;
	if (PQntuples(*out) != 1) {
		PQclear(*out);
		*out = NULL;
		return damaged(seq, "a snapshot missing");
	}
	return DOBJ_OK;
}

/* What a read found. */
typedef struct state {
	long long head, head_epoch; /* the latest seq and its epoch (0: the object has none) */
	long long log_bytes;        /* of the log after the snapshot */
	long long snap_size;        /* of the snapshot, its parts included */
	long long seq, epoch;       /* the last seq in the image, its epoch (0: none) */
	unsigned char sum[32];      /* log row seq's checksum, when sum_ok (it was the last applied) */
	int sum_ok;
	int head_snap;              /* the head is the snapshot (no log row after it) */
	int cached;                 /* the head is the cache's: nothing else was read */
} state;

/* What the cache marker says of the cached file (cluster_snapshot.c's
 * "<file>-seq"): the state it is at, what vouches for it, its content. */
typedef struct cache_mark {
	long long seq, epoch;       /* -1: no usable marker */
	unsigned char sum[32];      /* log row seq's checksum, when sum_ok */
	int sum_ok;
	unsigned char sha[32];      /* the SHA-256 of the file (checked against it) */
} cache_mark;

/* The snapshot and log rows of result r from row `from` on, to im, after
 * st->seq: 1 when the snapshot is at or past `upto` (nothing to build). */
static int state_rows(dobj__pg *pg, const char *ns, size_t ns_len, const unsigned char *id,
	long long upto, const PGresult *r, int from, image *im, state *st)
{
	int i, n = PQntuples(r), rc;

	for (i = from; i < n; i++) {
		int kind = (int)dobj__be32((const unsigned char *)PQgetvalue(r, i, 0));
		long long s = be64((const unsigned char *)PQgetvalue(r, i, 1));
		const unsigned char *data = (const unsigned char *)PQgetvalue(r, i, 3);
		size_t len = (size_t)PQgetlength(r, i, 3);
		if (kind == 1) {
			PGresult *big = NULL;
			snap_head h;
			if (s >= upto)
				return 1;
			if (PQgetisnull(r, i, 3)) {
				if ((rc = snap_row(pg, ns, ns_len, id, s,
				    (size_t)be64((const unsigned char *)PQgetvalue(r, i, 4)), &big)) < 0)
					return rc;
				data = (const unsigned char *)PQgetvalue(big, 0, 0);
				len = (size_t)PQgetlength(big, 0, 0);
			}
			rc = snap_head_read(data, len, s, &h);
			/* Parts that do not hold the image the header claims (4 G
			 * pages in 4 G parts) are refused before the file is sized
			 * by it. */
			if (rc == DOBJ_OK && h.format == SNAP_FORMAT_PARTS &&
			    (uint64_t)st->snap_size != SNAP_HDR_PARTS + h.size) {
				char what[160];
				uint64_t held = (uint64_t)st->snap_size - SNAP_HDR_PARTS;
				if (held < h.size)
					snprintf(what, sizeof(what), "a snapshot part missing or cut short: its "
						"parts hold %llu of its %llu bytes", (unsigned long long)held,
						(unsigned long long)h.size);
				else
					snprintf(what, sizeof(what), "a snapshot whose parts hold more than its "
						"%llu bytes", (unsigned long long)h.size);
				rc = damaged(s, what);
			}
			if (rc == DOBJ_OK) {
				im->psz = h.psz;
				if ((rc = image_pages(im, h.pages)) == DOBJ_OK)
					rc = snap_image(pg, ns, ns_len, id, s, &h, image_write, im);
			}
			PQclear(big);
			if (rc < 0)
				return rc;
			st->sum_ok = 0;
		} else {
			if (s != st->seq + 1)
				return damaged(st->seq + 1, "a log row missing");
			/* A damaged row is never applied (nor becomes part of a
			 * snapshot, with a checksum of its own that would vouch
			 * for it). */
			if ((rc = row_check(r, i, id)) < 0 || (rc = image_apply(im, data, len, s)) < 0)
				return rc;
			memcpy(st->sum, PQgetvalue(r, i, 6), 32);
			st->sum_ok = 1;
		}
		st->seq = s;
		st->epoch = be64((const unsigned char *)PQgetvalue(r, i, 2));
	}
	return DOBJ_OK;
}

/* The head (row 0 of a first statement's result) is the cached file's
 * state: the same seq and epoch, and the same content (the log row's
 * checksum, or, when the head is the snapshot, the image's checksum is the
 * file's).  first_sql's `go` says the same in SQL. */
static int head_is(const PGresult *r, const state *st, const cache_mark *m)
{
	const unsigned char *want = st->head_snap ? m->sha : m->sum_ok ? m->sum : NULL;

	return m->seq > 0 && st->head == m->seq && st->head_epoch == m->epoch && want &&
		PQgetlength(r, 0, 3) == 32 && !memcmp(PQgetvalue(r, 0, 3), want, 32);
}

/* The object's state up to seq `upto` (LLONG_MAX: its head) into im, unless
 * the head is the cached file's, as `m` says (st->cached; NULL: no cache).
 * 1: the snapshot is at or past `upto`.  A log that ends before the head or
 * `upto` is the caller's to judge (st->seq). */
static int state_read(dobj__pg *pg, const char *ns, size_t ns_len, const unsigned char *id,
	long long upto, const cache_mark *m, image *im, state *st)
{
	static const cache_mark none = { .seq = -1, .epoch = -1 };
	char c3[32], c4[32], c5[32], c8[32];
	const char *v[8] = { ns, (const char *)id, c3, c4, c5, NULL, NULL, c8 };
	int lens[8] = { (int)ns_len, 32, 0, 0, 0, 0, 32, 0 };
	int fmts[8] = { 0, 1, 0, 0, 0, 1, 1, 0 };
	PGresult *r = NULL;
	long long target, last, max_row = 0;
	size_t first_bytes = 0, piece_bytes = PIECE_BYTES;
	int rc, n, from = 0, tx = 0;

	if (!m)
		m = &none;
	snprintf(c3, sizeof(c3), "%lld", m->seq);
	snprintf(c4, sizeof(c4), "%lld", m->epoch);
	snprintf(c5, sizeof(c5), "%lld", upto);
	v[5] = (const char *)m->sum;
	lens[5] = m->sum_ok ? 32 : 0; /* matches no checksum */
	v[6] = (const char *)m->sha;
	snprintf(c8, sizeof(c8), "%d", FIRST_BYTES);
again:
	memset(st, 0, sizeof(*st));
	/* Bounded by the timeout while it carries no more than FIRST_BYTES
	 * of each; again in the transaction, by what it carries (the sizes
	 * the first one read). */
	if ((rc = tx ? dobj__pg_exec_sized(pg, first_bytes, first_sql, 8, v, lens, fmts, 1, &r)
	    : dobj__pg_exec(pg, first_sql, 8, v, lens, fmts, 1, &r)) < 0)
		goto done;
	n = PQntuples(r);
	if (n > 0 && dobj__be32((const unsigned char *)PQgetvalue(r, 0, 0)) == 0) {
		st->head = be64((const unsigned char *)PQgetvalue(r, 0, 1));
		st->head_epoch = be64((const unsigned char *)PQgetvalue(r, 0, 2));
		st->log_bytes = be64((const unsigned char *)PQgetvalue(r, 0, 4));
		st->snap_size = be64((const unsigned char *)PQgetvalue(r, 0, 5));
		st->head_snap = !PQgetisnull(r, 0, 6);
		/* A piece carries less than PIECE_BYTES and the row that
		 * passes it. */
		max_row = be64((const unsigned char *)PQgetvalue(r, 0, 7));
		piece_bytes = (size_t)(st->log_bytes < PIECE_BYTES + max_row ? st->log_bytes
			: PIECE_BYTES + max_row);
		from = 1;
		if (head_is(r, st, m)) {
			st->cached = 1;
			goto done;
		}
	}
	target = st->head < upto ? st->head : upto;
	last = n > from ? be64((const unsigned char *)PQgetvalue(r, n - 1, 1)) : 0;
	if (!tx && ((n > from && snap_more(r, from)) || last < target)) {
		/* More than one statement: all of them in one view, the first
		 * again first, with up to a piece's bytes of each, its snapshot
		 * row and its log rows (and the log row that passes the piece).
		 * Bounded by the most it can carry, not by the sizes just read: a
		 * compaction that commits before the transaction starts can leave
		 * a bigger snapshot row than the one seen here. */
		first_bytes = (size_t)PIECE_BYTES * 2 + (size_t)max_row;
		snprintf(c8, sizeof(c8), "%d", PIECE_BYTES);
		PQclear(r);
		r = NULL;
		if ((rc = dobj__pg_simple(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")) < 0)
			goto done;
		tx = 1;
		pg->no_reconnect = 1; /* never a statement outside it */
		goto again;
	}
	if ((rc = state_rows(pg, ns, ns_len, id, upto, r, from, im, st)) != 0)
		goto done;
	snprintf(c4, sizeof(c4), "%lld", target);
	while (tx && st->seq < target) {
		PQclear(r);
		r = NULL;
		if (dobj__pg_halted(pg)) {
			rc = dobj_error_set(DOBJ_ECLOSED, DOBJ_MSG_CLOSED);
			goto done;
		}
		snprintf(c3, sizeof(c3), "%lld", st->seq);
		if ((rc = dobj__pg_exec_sized(pg, piece_bytes, piece_sql, 4, v, lens, fmts, 1, &r)) < 0)
			goto done;
		if (PQntuples(r) == 0)
			break; /* the log ends early: the caller's to judge */
		if ((rc = state_rows(pg, ns, ns_len, id, upto, r, 0, im, st)) != 0)
			goto done;
	}
done:
	PQclear(r);
	if (tx) {
		/* Read only: what was read stands; a failure leaves the
		 * transaction's state unknown, so the connection goes. */
		pg->no_reconnect = 0;
		if (rc < 0 || dobj__pg_simple(pg, "COMMIT") < 0)
			dobj__pg_drop(pg);
	}
	return rc;
}

/* --------------------------------------------------------------- restore */
/* --------------------------------------------------------------- restore */

/* The alarm record of a restored file, read without writing to it (any
 * write to the file must go through a commit that is shipped). */
static int read_alarm(const char *path, int64_t *when)
{
	sqlite3 *db = NULL;
	int rc;

	*when = 0;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		rc = dobj_error_set(DOBJ_ERROR, "cluster: cannot read the restored %s: %s", path,
			db ? sqlite3_errmsg(db) : "out of memory");
		sqlite3_close(db);
		return rc;
	}
	rc = dobj__storage_meta_read(db, when);
	sqlite3_close(db);
	return rc < 0 ? rc : DOBJ_OK;
}

/* The SHA-256 of the file open on fd, and its identity in *sb: -1 when it
 * cannot be read, or its worker is stopped meanwhile (pg halted; NULL:
 * never). */
long dobj__snap_hashed;

static int file_sha(int fd, struct stat *sb, unsigned char sha[32], const dobj__pg *pg)
{
	unsigned char *buf = malloc(262144);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	ssize_t got = -1;
	int ok;

	__atomic_add_fetch(&dobj__snap_hashed, 1, __ATOMIC_RELAXED);
	ok = buf && md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
	while (ok && (got = read(fd, buf, 262144)) != 0) {
		if (got < 0 && errno == EINTR)
			continue;
		ok = got > 0 && EVP_DigestUpdate(md, buf, (size_t)got) == 1 &&
			!(pg && dobj__pg_halted(pg));
	}
	ok = ok && EVP_DigestFinal_ex(md, sha, NULL) == 1 && fstat(fd, sb) == 0;
	EVP_MD_CTX_free(md);
	free(buf);
	return ok ? 0 : -1;
}

static void hex32(const unsigned char *b, char *out)
{
	int i;

	for (i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static int unhex32(const char *s, unsigned char *b)
{
	int i;

	for (i = 0; i < 32; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		b[i] = (unsigned char)v;
	}
	return 0;
}

/* The cache marker's text for the file at `path` in state (seq, epoch),
 * vouched for by log row seq's checksum `sum` (NULL: unknown), with the
 * file's identity and the SHA-256 of its content (a page changed behind
 * dobj's back, however its size and times look, is not the file PostgreSQL
 * vouches for); "" when the file cannot be used as a cache (absent, with a
 * -wal, unreadable, or `pg` halted meanwhile).  It reads the whole file:
 * 0.6-1 ms per MiB here, so it runs on the object's activator, never on the
 * runtime's thread. */
static void marker_text(const char *path, const char *wal, long long seq, long long epoch,
	const unsigned char *sum, char *buf, size_t n, const dobj__pg *pg)
{
	char hs[65] = "-", hf[65];
	unsigned char sha[32];
	struct stat sb;
	int fd;

	buf[0] = '\0';
	if (stat(path, &sb) < 0 || !S_ISREG(sb.st_mode) || access(wal, F_OK) == 0 ||
	    (fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0)
		return;
	if (file_sha(fd, &sb, sha, pg) < 0 || !S_ISREG(sb.st_mode)) {
		close(fd);
		return;
	}
	close(fd);
	if (sum)
		hex32(sum, hs);
	hex32(sha, hf);
	snprintf(buf, n, "dobj cache 2 seq %lld epoch %lld sum %s ino %llu size %lld "
		"mtime %lld.%09ld sha %s\n", seq, epoch, hs, (unsigned long long)sb.st_ino,
		(long long)sb.st_size, (long long)sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec, hf);
}

/* Read and remove the marker: before this incarnation writes anything, no
 * marker may vouch for the file (made durable: a marker that came back
 * after a power loss would vouch for a file with unconfirmed writes).
 * m->seq is -1 when there is none, or it is not one this dobj writes. */
static void marker_take(const char *mpath, char *buf, size_t n, cache_mark *m)
{
	int fd = open(mpath, O_RDONLY | O_CLOEXEC);
	char hs[80];
	const char *at;
	ssize_t got;
	char *slash;

	buf[0] = '\0';
	memset(m, 0, sizeof(*m));
	m->seq = m->epoch = -1;
	if (fd < 0)
		return;
	got = read(fd, buf, n - 1);
	close(fd);
	buf[got > 0 ? got : 0] = '\0';
	unlink(mpath);
	if ((slash = strrchr(mpath, '/'))) {
		char dir[4096];
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - mpath), mpath);
		if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
			if (fsync(fd) < 0)
				buf[0] = '\0';
			close(fd);
		}
	}
	/* (Format 1 markers, without the checksums, vouch for nothing now.) */
	if (sscanf(buf, "dobj cache 2 seq %lld epoch %lld sum %79s", &m->seq, &m->epoch, hs) != 3 ||
	    !(at = strstr(buf, " sha ")) || strlen(at + 5) < 64 || unhex32(at + 5, m->sha) < 0) {
		m->seq = m->epoch = -1;
		return;
	}
	m->sum_ok = strlen(hs) == 64 && unhex32(hs, m->sum) == 0;
}

/* `base` + `suffix`, malloc'd (NULL: out of memory). */
static char *with_suffix(const char *base, const char *suffix)
{
	size_t a = strlen(base), b = strlen(suffix);
	char *p = malloc(a + b + 1);

	if (p) {
		memcpy(p, base, a);
		memcpy(p + a, suffix, b + 1);
	}
	return p;
}

/* A cache marker to write (dobj__snap_release): all it needs, copied. */
struct dobj__mark {
	char *base;                 /* the object's file */
	long long seq, epoch;
	unsigned char sum[32];      /* log row seq's checksum, when sum_ok */
	int sum_ok;
};

void (*dobj__snap_mark_hook)(void);

dobj__mark *dobj__snap_release(dobj_obj *obj, struct dobj__cluster_obj *co)
{
	dobj__mark *m;

	/* Only an incarnation that ended cleanly (evicted, or the runtime
	 * closed) with every write confirmed leaves its file as PostgreSQL's
	 * state (seq, seq_epoch). */
	if ((obj->dead && !(obj->code == DOBJ_ECLOSED && obj->ns->rt->closing)) || co->last ||
	    co->seq <= 0 || obj->storage)
		return NULL;
	if (!(m = calloc(1, sizeof(*m))) || !(m->base = dobj__cluster_path(obj, ""))) {
		free(m);
		return NULL; /* no marker: the next activation rebuilds */
	}
	m->seq = co->seq;
	m->epoch = co->seq_epoch;
	m->sum_ok = co->seq_sum_ok;
	memcpy(m->sum, co->seq_sum, 32);
	return m;
}

void dobj__snap_mark_write(dobj__mark *m, const dobj__pg *pg)
{
	char *path, *wal, *mpath, *tmp, text[400];
	int fd;

	if (dobj__snap_mark_hook)
		dobj__snap_mark_hook();
	path = with_suffix(m->base, "");
	wal = with_suffix(m->base, "-wal");
	mpath = with_suffix(m->base, "-seq");
	tmp = with_suffix(m->base, "-seq.tmp");
	if (!path || !wal || !mpath || !tmp)
		goto done;
	marker_text(path, wal, m->seq, m->epoch, m->sum_ok ? m->sum : NULL, text, sizeof(text), pg);
	if (!text[0])
		goto done;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		goto done;
	if (write(fd, text, strlen(text)) != (ssize_t)strlen(text) || close(fd) < 0 ||
	    rename(tmp, mpath) < 0)
		unlink(tmp);
done:
	free(path);
	free(wal);
	free(mpath);
	free(tmp);
}

void dobj__snap_mark_free(dobj__mark *m)
{
	if (!m)
		return;
	free(m->base);
	free(m);
}

int dobj__snap_restore(dobj__pg *pg, const char *ns, size_t ns_len, const unsigned char *id,
	const char *base, struct dobj__cluster_obj *co)
{
	char *path = NULL, *tmp = NULL, *wal = NULL, *shm = NULL, *mpath = NULL;
	char mark[400], want[400];
	cache_mark m;
	/* The image goes to the file from its first page on. */
	image im = { .fd = -1, .part = 0, .keep = 1 };
	state st;
	int rc;

	co->seq = co->seq_epoch = co->log_bytes = co->snap_size = 0;
	co->seq_sum_ok = 0;
	co->alarm = 0;
	if (!(path = with_suffix(base, "")) || !(tmp = with_suffix(base, ".restore")) ||
	    !(wal = with_suffix(base, "-wal")) || !(shm = with_suffix(base, "-shm")) ||
	    !(mpath = with_suffix(base, "-seq"))) {
		rc = dobj_error_set(DOBJ_ENOMEM, "out of memory");
		goto done;
	}
	im.spill = tmp;
	marker_take(mpath, mark, sizeof(mark), &m);
	/* Used only when PostgreSQL vouches for the same content: a file at
	 * the latest seq and epoch is not enough (a history that PostgreSQL
	 * lost, a failover to a standby behind, gives the same seq and epoch
	 * to other writes).  PostgreSQL's head is read first: the file is
	 * hashed (all of it read) only when the head is the marker's. */
	if ((rc = state_read(pg, ns, ns_len, id, LLONG_MAX, &m, &im, &st)) < 0)
		goto done;
	if (st.cached) {
		marker_text(path, wal, m.seq, m.epoch, m.sum_ok ? m.sum : NULL, want, sizeof(want),
			pg);
		if (!want[0] || strcmp(want, mark)) {
			/* The file changed since: not a cache; PostgreSQL's state
			 * is read (the head was all the first read had). */
			m.seq = m.epoch = -1;
			if ((rc = state_read(pg, ns, ns_len, id, LLONG_MAX, &m, &im, &st)) < 0)
				goto done;
		}
	}
	if (st.head > SEQ_MAX) {
		/* The next writes' seq would wrap (and a write at a negative
		 * seq is never read back). */
		rc = damaged(st.head, "a seq at the end of its range");
		goto done;
	}
	co->log_bytes = st.log_bytes;
	co->snap_size = st.snap_size;
	if (st.cached) {
		/* The cached file is at the latest state: kept as it is. */
		co->seq = st.head;
		co->seq_epoch = st.head_epoch;
		co->seq_sum_ok = !st.head_snap && m.sum_ok;
		memcpy(co->seq_sum, m.sum, 32);
		rc = read_alarm(path, &co->alarm);
		goto done;
	}
	unlink(wal);
	unlink(shm);
	if (st.head == 0) {
		unlink(path); /* nothing in PostgreSQL: a new object */
		rc = DOBJ_OK;
		goto done;
	}
	if (st.seq != st.head) {
		rc = damaged(st.head, "a log that ends early");
		goto done;
	}
	if ((rc = image_check(&im, st.seq)) < 0)
		goto done;
	co->seq = st.seq;
	co->seq_epoch = st.epoch;
	co->seq_sum_ok = st.sum_ok;
	memcpy(co->seq_sum, st.sum, 32);
	if ((im.fd < 0 && (rc = image_spill(&im)) < 0))
		goto done; /* (an empty database has its file too) */
	if (rename(tmp, path) < 0) {
		rc = dobj_error_set(DOBJ_ERROR, "cluster: cannot replace %s: %s", path, strerror(errno));
		goto done;
	}
	rc = read_alarm(path, &co->alarm);
done:
	image_free(&im);
	if (rc < 0 && tmp)
		unlink(tmp);
	free(path);
	free(tmp);
	free(wal);
	free(shm);
	free(mpath);
	return rc;
}

/* ------------------------------------------------------------ compaction */

typedef struct snap_job snap_job;
struct snap_job {
	dobj__wjob job;     /* first: the compactor's queue */
	char *ns;
	size_t ns_len;
	unsigned char id[32];
	long long seq, epoch, node;
	long long part;     /* images past this size go in parts */
	char *spill;        /* the file for an image that big */
	/* the outcome (the compactor's) */
	int rc;             /* 0 written, 1 refused or not needed, < 0 failed */
	long long size;
	char msg[400];
	/* the runtime's thread only */
	dobj_obj *obj;      /* a reference */
};

static void job_free(snap_job *j)
{
	free(j->ns);
	free(j->spill);
	free(j);
}

/* The compactor was told to stop the job under way (dobj__worker_cancel). */
static int halted(const dobj__pg *pg)
{
	return dobj__pg_halted(pg) ? dobj_error_set(DOBJ_ECLOSED, DOBJ_MSG_CLOSED) : DOBJ_OK;
}

/* One statement of the compaction's transaction; *out may be NULL. */
static int step(dobj__pg *pg, const char *sql, int nparams, const char *const *v,
	const int *lens, const int *fmts, PGresult **out)
{
	PGresult *r;
	int rc = dobj__pg_exec(pg, sql, nparams, v, lens, fmts, 0, &r);

	if (rc < 0)
		return rc;
	if (out)
		*out = r;
	else
		PQclear(r);
	return DOBJ_OK;
}


/* An image in the file goes as parts of im->part bytes (dobj_snapshot_part,
 * in the compaction's transaction), one in memory at a time; `head` gets
 * the format-2 header with their checksum. */
static int image_upload(dobj__pg *pg, snap_job *j, image *im, const char *seq,
	unsigned char *head)
{
	uint64_t size = image_size(im), off;
	uint64_t nparts = (size + im->part - 1) / im->part;
	unsigned char *buf = NULL;
	PGresult *r;
	char cpart[32];
	const char *v[5] = { j->ns, (const char *)j->id, seq, cpart, NULL };
	int lens[5] = { (int)j->ns_len, 32, 0, 0, 0 };
	int fmts[5] = { 0, 1, 0, 0, 1 };
	EVP_MD_CTX *md = NULL;
	uint32_t i;
	int rc = DOBJ_OK;

	if (nparts > UINT32_MAX)
		return dobj_error_set(DOBJ_ERROR, "cluster: the database is too big for snapshots of "
			"%llu-byte parts; its log is kept", (unsigned long long)im->part);
	if (!(buf = malloc((size_t)(size < im->part ? size + 1 : im->part))) ||
	    !(md = EVP_MD_CTX_new()) ||
	    EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		rc = dobj_error_set(DOBJ_ENOMEM, "out of memory");
		goto done;
	}
	for (i = 0, off = 0; i < nparts; i++, off += im->part) {
		size_t n = (size_t)(size - off < im->part ? size - off : im->part);
		if (dobj__pg_halted(pg)) {
			rc = dobj_error_set(DOBJ_ECLOSED, DOBJ_MSG_CLOSED);
			goto done;
		}
		if ((rc = read_at(im->fd, off, buf, n, im->spill)) < 0)
			goto done;
		if (EVP_DigestUpdate(md, buf, n) != 1) {
			rc = dobj_error_set(DOBJ_ENOMEM, "out of memory");
			goto done;
		}
		snprintf(cpart, sizeof(cpart), "%u", (unsigned)i);
		v[4] = (const char *)buf;
		lens[4] = (int)n;
		/* A part's own bound, by its size (DOBJ__PG_MIN_RATE). */
		if ((rc = dobj__pg_exec_sized(pg, n, "INSERT INTO dobj_snapshot_part (ns, object_id, "
			"seq, part, data) VALUES ($1, $2, $3::int8, $4::int4, $5)", 5, v, lens, fmts, 0,
			&r)) < 0)
			goto done;
		PQclear(r);
	}
	if (EVP_DigestFinal_ex(md, head + 36, NULL) != 1) {
		rc = dobj_error_set(DOBJ_ENOMEM, "out of memory");
		goto done;
	}
	dobj__put32(head + 68, (uint32_t)im->part);
	dobj__put32(head + 72, (uint32_t)nparts);
done:
	EVP_MD_CTX_free(md);
	free(buf);
	return rc;
}

/* Build the image at j->seq from PostgreSQL's rows and write it, fenced. */
static void compact(struct dobj__cluster *cl, dobj__pg *pg, dobj__wjob *job)
{
	snap_job *j = (snap_job *)job;
	char seq[32], epoch[32], node[32];
	/* $1 ns, $2 id, $3 seq, then per statement: the epoch and the image
	 * (the insert) or the incarnation's epoch and node (the fence). */
	const char *v[5] = { j->ns, (const char *)j->id, seq, epoch, node };
	int lens[5] = { (int)j->ns_len, 32, 0, 0, 0 };
	int fmts[5] = { 0, 1, 0, 0, 0 };
	image im = { .fd = -1, .spill = j->spill, .part = (uint64_t)j->part };
	unsigned char parts_head[SNAP_HDR_PARTS];
	PGresult *r = NULL;
	long long last_epoch;
	state st;
	int rc;

	(void)cl;
	snprintf(seq, sizeof(seq), "%lld", j->seq);
	/* Read (in a transaction of its own when it takes more than one
	 * statement), then written: the rows read are confirmed and never
	 * change, and the insert below keeps whichever snapshot is newer. */
	if ((rc = state_read(pg, j->ns, j->ns_len, j->id, j->seq, NULL, &im, &st)) != 0)
		goto fail; /* (1: one as recent is there already) */
	if (st.seq != j->seq || !im.psz) {
		rc = 1; /* compacted meanwhile (by another incarnation), or nothing */
		goto fail;
	}
	if ((rc = image_check(&im, st.seq)) < 0)
		goto fail;
	last_epoch = st.epoch;
	if ((rc = dobj__pg_simple(pg, "BEGIN")) < 0)
		goto fail;
	/* Inside the transaction, a lost connection is a failure, never a
	 * statement retried on a new connection outside it. */
	pg->no_reconnect = 1;
	if (im.fd < 0) {
		/* Format 1: the header and the image, in the row. */
		image_head(&im, im.b, j->seq, last_epoch, SNAP_FORMAT);
		SHA256(im.b + SNAP_HDR, (size_t)image_size(&im), im.b + 36);
		v[4] = (const char *)im.b;
		lens[4] = (int)(SNAP_HDR + (size_t)image_size(&im));
	} else {
		/* Format 2: the parts, then the header in the row. */
		image_head(&im, parts_head, j->seq, last_epoch, SNAP_FORMAT_PARTS);
		if ((rc = image_upload(pg, j, &im, seq, parts_head)) < 0)
			goto fail;
		v[4] = (const char *)parts_head;
		lens[4] = SNAP_HDR_PARTS;
	}
	snprintf(epoch, sizeof(epoch), "%lld", last_epoch);
	fmts[4] = 1;
	/* The snapshot first, then the fence: a node that waits here (on a
	 * newer snapshot's row lock) holds no lock on the owner row, so a
	 * takeover never waits behind a compaction that is about to fail.
	 * A halted compaction (reset, close) writes nothing: checked before
	 * the row and again before the commit. */
	if ((rc = halted(pg)) < 0 || (rc = dobj__pg_exec_sized(pg, (size_t)lens[4],
		"INSERT INTO dobj_snapshot AS s (ns, object_id, seq, epoch, db) "
		"VALUES ($1, $2, $3::int8, $4::int8, $5) ON CONFLICT (ns, object_id) DO UPDATE "
		"SET seq = excluded.seq, epoch = excluded.epoch, db = excluded.db "
		"WHERE s.seq < excluded.seq", 5, v, lens, fmts, 0, &r)) < 0)
		goto fail;
	j->size = (long long)(im.fd < 0 ? (uint64_t)lens[4] : lens[4] + image_size(&im));
	if (atoi(PQcmdTuples(r)) != 1) {
		rc = 1;
		goto fail;
	}
	PQclear(r);
	r = NULL;
	image_free(&im);
	v[2] = epoch;
	v[3] = node;
	lens[4] = fmts[4] = 0;
	snprintf(epoch, sizeof(epoch), "%lld", j->epoch);
	snprintf(node, sizeof(node), "%lld", j->node);
	if ((rc = step(pg,
		"SELECT 1 FROM dobj_owner WHERE ns = $1 AND object_id = $2 AND epoch = $3::int8 "
		"AND node_id = $4::int8 FOR SHARE", 4, v, lens, fmts, &r)) < 0)
		goto fail;
	if (PQntuples(r) != 1) {
		snprintf(j->msg, sizeof(j->msg), "cluster: another node took the object over (fencing "
			"epoch %lld is stale): the snapshot was refused", j->epoch);
		rc = 1;
		goto fail;
	}
	PQclear(r);
	r = NULL;
	v[2] = seq;
	/* Row seq stays, without its pages, as a marker (see the top); the
	 * parts of older snapshots go. */
	if ((rc = step(pg,
		"DELETE FROM dobj_wal WHERE ns = $1 AND object_id = $2 AND seq < $3::int8", 3, v, lens,
		fmts, NULL)) < 0 ||
	    (rc = step(pg,
		"DELETE FROM dobj_snapshot_part WHERE ns = $1 AND object_id = $2 AND seq < $3::int8", 3,
		v, lens, fmts, NULL)) < 0 ||
	    (rc = step(pg,
		"UPDATE dobj_wal SET frames = '\\x'::bytea, sum = sha256(object_id || int8send(seq) || "
		"int8send(epoch) || sha256('\\x'::bytea)) WHERE ns = $1 AND object_id = $2 "
		"AND seq = $3::int8", 3, v, lens, fmts, NULL)) < 0 ||
	    (rc = halted(pg)) < 0 || (rc = dobj__pg_simple(pg, "COMMIT")) < 0)
		goto fail;
	pg->no_reconnect = 0;
	j->rc = 0;
	return;
fail:
	PQclear(r);
	image_free(&im);
	if (rc < 0)
		snprintf(j->msg, sizeof(j->msg), "%s", dobj_error_last());
	j->rc = rc < 0 ? rc : 1;
	/* The transaction's state is unknown: a new connection next time. */
	dobj__pg_drop(pg);
	pg->no_reconnect = 0;
}

static void maybe_queue(struct dobj__cluster *cl, dobj_obj *obj, struct dobj__cluster_obj *co);

/* The runtime's thread: a snapshot that ended. */
static void snap_done(struct dobj__cluster *cl, dobj__wjob *job)
{
	snap_job *j = (snap_job *)job;
	struct dobj__cluster_obj *co = j->obj->cluster;

	if (co && co->epoch == j->epoch) {
		co->snap_out = 0;
		if (j->rc == 0)
			co->snap_size = j->size;
		/* What was confirmed meanwhile may call for the next one now
		 * (the object may write nothing more for a while). */
		if (j->rc >= 0 && !j->obj->dead)
			maybe_queue(cl, j->obj, co);
	}
	/* A failure, or a refusal by the fence (this node lost the object). */
	if (j->rc < 0 || j->msg[0])
		dobj__cluster_log(cl->rt, j->node, "cluster: node %lld did not write a snapshot; "
			"the object's log is kept (%s)", j->node, j->msg);
	dobj__obj_unref(j->obj);
	job_free(j);
}

/* Stopping: a snapshot that did not run is dropped. */
static void snap_unrun(dobj__wjob *job)
{
	((snap_job *)job)->rc = 1;
}

void dobj__snap_confirmed(struct dobj__cluster *cl, dobj_obj *obj, long long seq,
	long long epoch, const unsigned char *sum, size_t len)
{
	struct dobj__cluster_obj *co = obj->cluster;

	if (!co || co->epoch != epoch || obj->dead)
		return;
	co->seq_epoch = epoch;
	memcpy(co->seq_sum, sum, 32);
	co->seq_sum_ok = 1;
	co->conf_seq = seq;
	co->log_bytes += (long long)len + LOG_ROW_BYTES;
	maybe_queue(cl, obj, co);
}

/* Queue a snapshot of obj at its last confirmed seq when its log calls for
 * one and none is out. */
static void maybe_queue(struct dobj__cluster *cl, dobj_obj *obj, struct dobj__cluster_obj *co)
{
	snap_job *j;

	if (!cl->snap || cl->snap_bytes < 0 || co->snap_out || cl->closing || co->conf_seq <= 0 ||
	    co->log_bytes < cl->snap_bytes || co->log_bytes < co->snap_size)
		return;
	if (!(j = calloc(1, sizeof(*j))) ||
	    !(j->ns = dobj__strndup(obj->ns->unique_key, obj->ns->unique_key_len)) ||
	    !(j->spill = dobj__cluster_path(obj, "-snapshot"))) {
		if (j)
			job_free(j);
		return; /* the next confirmed append tries again */
	}
	j->part = cl->snap_part;
	j->ns_len = obj->ns->unique_key_len;
	memcpy(j->id, obj->id.bytes, 32);
	j->seq = co->conf_seq;
	j->epoch = co->epoch;
	j->node = cl->node_id;
	j->obj = obj;
	obj->refs++;
	co->snap_out = 1;
	co->log_bytes = 0;
	dobj__worker_push(cl->snap, &j->job);
}

int dobj__snap_start(struct dobj__cluster *cl)
{
	return dobj__worker_start(&cl->snap, cl, "compactor", cl->pg.timeout_ms * 8, compact,
		snap_done);
}

/* A snapshot of an object that is still here (the runtime's thread). */
static int snap_live(dobj__wjob *job)
{
	dobj_obj *obj = ((snap_job *)job)->obj;

	return obj && !obj->dead && obj->mapped;
}

void dobj__snap_reset_halt(struct dobj__cluster *cl)
{
	/* reset() drops every object and deletes their files: a queued
	 * snapshot of one never starts, and the one under way is halted (it
	 * would go on after reset returned: spill its image into the folder
	 * reset emptied, hold the snapshot row and the owner row's share lock,
	 * and write a snapshot of an object the test has reset). */
	dobj__worker_cancel(cl->snap, snap_live, snap_unrun);
}

void dobj__snap_reset_wait(struct dobj__cluster *cl)
{
	/* The halted one ends at its next statement, or within the running
	 * one's bound. */
	dobj__worker_settle(cl->snap, snap_live);
}

void dobj__snap_stop(struct dobj__cluster *cl)
{
	/* What is queued may finish within a bound (each statement is bounded
	 * too); the rest is dropped. */
	dobj__worker_stop(&cl->snap, cl->pg.timeout_ms * 2 + 500, snap_unrun);
}
