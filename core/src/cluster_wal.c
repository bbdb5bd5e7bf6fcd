/*
 * What a committed step changed, as page images read from SQLite's WAL.
 *
 * Why pages and not the session extension's changesets: pages cover
 * everything a step can change (SQL schema changes, tables without a
 * primary key, the alarm row), and replaying them rebuilds a byte-for-byte
 * copy of the file.  In cluster mode a storage runs with
 * wal_autocheckpoint=0, so the -wal file only grows between the
 * checkpoints cluster.c asks for; after each commit the frames past the
 * last shipped one, up to the last commit frame, are this commit's pages
 * (a page written twice keeps its last image).  Frames after the last
 * commit frame belong to a transaction that did not commit.
 *
 * WAL layout (sqlite.org/fileformat2.html#walformat): a 32-byte header
 * (magic, version, page size, checkpoint sequence, salt-1, salt-2,
 * checksums), then frames of a 24-byte header (page number, database size
 * in pages for a commit frame else 0, salt-1, salt-2, checksums) and the
 * page.  Frames whose salts differ from the header's are left over from an
 * earlier generation of the file.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1 /* SHA256_Init and its kin: see dobj__wal_sum */
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster_int.h"

typedef struct frame_ref {
	uint32_t pgno;
	size_t at; /* offset of the page in buf */
} frame_ref;

static int by_page_then_position(const void *a, const void *b)
{
	const frame_ref *x = a, *y = b;

	if (x->pgno != y->pgno)
		return x->pgno < y->pgno ? -1 : 1;
	return x->at < y->at ? -1 : x->at > y->at;
}

static int read_all(int fd, long long from, size_t n, unsigned char *buf)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = pread(fd, buf + got, n - got, (off_t)(from + (long long)got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

/* The record of the committed frames in buf (n bytes read at `off` of a
 * file of generation salt1/salt2, pages of psz bytes): *rec and *len, the
 * end of the last commit frame in *end; nothing when there is none. */
static int frames_to_record(const unsigned char *buf, size_t n, long long off, uint32_t psz,
	uint32_t salt1, uint32_t salt2, unsigned char **rec, size_t *len, long long *end)
{
	frame_ref *frames;
	unsigned char *out;
	size_t nframes = 0, ncommitted = 0, i, frame = 24 + (size_t)psz;
	uint32_t dbsize = 0;
	long long commit_end = off;

	if (!(frames = malloc((n / frame + 1) * sizeof(*frames))))
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	for (i = 0; i + frame <= n; i += frame) {
		if (dobj__be32(buf + i + 8) != salt1 || dobj__be32(buf + i + 12) != salt2)
			break;
		frames[nframes].pgno = dobj__be32(buf + i);
		frames[nframes].at = i + 24;
		nframes++;
		if (dobj__be32(buf + i + 4)) {
			dbsize = dobj__be32(buf + i + 4);
			ncommitted = nframes;
			commit_end = off + (long long)(i + frame);
		}
	}
	if (!ncommitted) {
		free(frames);
		return DOBJ_OK;
	}
	/* One image per page: the last one written. */
	qsort(frames, ncommitted, sizeof(*frames), by_page_then_position);
	n = 0;
	for (i = 0; i < ncommitted; i++)
		if (i + 1 == ncommitted || frames[i + 1].pgno != frames[i].pgno)
			frames[n++] = frames[i];
	if (!(out = malloc(12 + n * (4 + (size_t)psz)))) {
		free(frames);
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	}
	dobj__put32(out, psz);
	dobj__put32(out + 4, dbsize);
	dobj__put32(out + 8, (uint32_t)n);
	for (i = 0; i < n; i++) {
		unsigned char *p = out + 12 + i * (4 + (size_t)psz);
		dobj__put32(p, frames[i].pgno);
		memcpy(p + 4, buf + frames[i].at, psz);
	}
	free(frames);
	*rec = out;
	*len = 12 + n * (4 + (size_t)psz);
	*end = commit_end;
	return DOBJ_OK;
}

/*
 * The frames SQLite said the file holds (`frames`, its WAL hook's count
 * after the commit), read past w->off in one read: no stat, no header.
 * Taken only when everything agrees with what the last capture saw (the
 * generation's salts in every frame read, a commit frame last, nothing
 * short); anything else (a new generation, a file replaced, a count not
 * known) is left to the full read, which finds out.  1: done; 0: not taken.
 */
static int capture_known(int fd, const dobj__wal_pos *w, long long frames, unsigned char **rec,
	size_t *len, dobj__wal_pos *next)
{
	size_t frame = 24 + (size_t)w->psz, n;
	long long last;
	unsigned char *buf;
	int rc;

	if (fd < 0 || !w->psz || w->off < 32 || frames <= 0 ||
	    frames > (LLONG_MAX - 32) / (long long)frame)
		return 0;
	last = 32 + frames * (long long)frame;
	if (last <= w->off || (last - w->off) % (long long)frame || last - w->off > (1LL << 30))
		return 0;
	n = (size_t)(last - w->off);
	if (!(buf = malloc(n)))
		return 0;
	if (read_all(fd, w->off, n, buf) < 0) {
		free(buf);
		return 0;
	}
	*next = *w;
	rc = frames_to_record(buf, n, w->off, w->psz, w->salt1, w->salt2, rec, len, &next->off);
	free(buf);
	/* Every frame read must be in the record, the last a commit frame:
	 * one that was not (another generation's salts anywhere, the count
	 * not ending on a commit) sends the capture to the full read. */
	if (rc < 0 || next->off != last) {
		free(*rec);
		*rec = NULL;
		*len = 0;
		return 0;
	}
	return 1;
}

long dobj__wal_header_reads;

int dobj__wal_capture(int *fd, const char *wal_path, const dobj__wal_pos *w, long long frames,
	unsigned char **rec, size_t *len, dobj__wal_pos *next)
{
	unsigned char hdr[32], *buf = NULL;
	size_t n;
	uint32_t psz, salt1, salt2;
	long long off = w->off;
	struct stat sb;
	int rc = DOBJ_OK;

	*rec = NULL;
	*len = 0;
	if (capture_known(*fd, w, frames, rec, len, next))
		return DOBJ_OK;
	*next = *w;
	/* The file stays open from one commit to the next (an open and a close
	 * per commit were ~3% of a node's CPU per increment); one that was
	 * removed since (SQLite deletes it when its last connection closes) is
	 * let go and the path opened again. */
	if (*fd >= 0 && (fstat(*fd, &sb) < 0 || sb.st_nlink == 0)) {
		close(*fd);
		*fd = -1;
	}
	if (*fd < 0) {
		if (!wal_path)
			return DOBJ__WAL_NEED_PATH;
		*fd = open(wal_path, O_RDONLY | O_CLOEXEC);
		if (*fd < 0) {
			if (errno == ENOENT)
				return DOBJ_OK; /* nothing written since the last checkpoint */
			return dobj_error_set(DOBJ_ERROR, "cluster: cannot read %s: %s", wal_path,
				strerror(errno));
		}
		if (fstat(*fd, &sb) < 0)
			return DOBJ_OK;
	}
	__atomic_add_fetch(&dobj__wal_header_reads, 1, __ATOMIC_RELAXED);
	if (sb.st_size < 32 || read_all(*fd, 0, 32, hdr) < 0)
		return DOBJ_OK;
	psz = dobj__be32(hdr + 8);
	salt1 = dobj__be32(hdr + 16);
	salt2 = dobj__be32(hdr + 20);
	if (dobj__bad_page_size(psz))
		return DOBJ_OK;
	if (off < 32 || salt1 != w->salt1 || salt2 != w->salt2)
		off = 32; /* a new generation of the file: every frame is new */
	if (sb.st_size <= off)
		return DOBJ_OK;
	n = (size_t)(sb.st_size - off);
	if (!(buf = malloc(n)))
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	if (read_all(*fd, off, n, buf) < 0) {
		free(buf);
		return dobj_error_set(DOBJ_ERROR, "cluster: cannot read %s",
			wal_path ? wal_path : "the -wal file");
	}
	rc = frames_to_record(buf, n, off, psz, salt1, salt2, rec, len, &next->off);
	free(buf);
	if (rc == DOBJ_OK && *len) {
		next->psz = psz;
		next->salt1 = salt1;
		next->salt2 = salt2;
	}
	return rc;
}

void dobj__wal_sum(const unsigned char *id, long long seq, long long epoch,
	const unsigned char *rec, size_t len, unsigned char sum[32])
{
	/* Two digests rather than one over a copy: a record can be large.
	 * SHA256_* rather than the one-shot SHA256(): OpenSSL 3 looks the
	 * algorithm up in its provider store on every one-shot call, which
	 * cost more than hashing an increment's 4 KiB (perf, one-object
	 * loop). */
	unsigned char in[32 + 8 + 8 + 32];
	SHA256_CTX c;

	memcpy(in, id, 32);
	dobj__put32(in + 32, (uint32_t)((unsigned long long)seq >> 32));
	dobj__put32(in + 36, (uint32_t)seq);
	dobj__put32(in + 40, (uint32_t)((unsigned long long)epoch >> 32));
	dobj__put32(in + 44, (uint32_t)epoch);
	SHA256_Init(&c);
	SHA256_Update(&c, rec ? rec : (const unsigned char *)"", len);
	SHA256_Final(in + 48, &c);
	SHA256_Init(&c);
	SHA256_Update(&c, in, sizeof(in));
	SHA256_Final(sum, &c);
}

int dobj__wal_sum_ok(const unsigned char *id, long long seq, long long epoch,
	const unsigned char *rec, size_t len, const unsigned char *sum, size_t sum_len)
{
	unsigned char want[32];

	if (sum_len != 32)
		return 0;
	dobj__wal_sum(id, seq, epoch, rec, len, want);
	return memcmp(want, sum, 32) == 0;
}
