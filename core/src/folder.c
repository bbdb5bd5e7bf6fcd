/*
 * One namespace per storage folder.  Two namespaces on the same folder (same
 * storage root and unique key) would both activate the same object on one
 * SQLite file: the first write of one then waits out the other's busy
 * timeout (5 s) and fails with "database is locked".  Sharing a folder
 * properly (between processes) is the cluster issue; until then a folder is
 * claimed when a namespace is bound and released when its runtime closes:
 *
 * - in this process, through a registry of canonical folder paths guarded by
 *   a mutex (flock alone would do between two open() calls, but the
 *   registry gives a message that says which binding holds the folder, and
 *   does not depend on how the kernel treats locks within one process);
 * - between processes, with flock(LOCK_EX | LOCK_NB) on the folder itself,
 *   so a second process gets a clear error at bind instead of a stall.  The
 *   kernel drops the lock when the process dies, however it dies.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

typedef struct claim {
	char *path;      /* realpath of the folder */
	char *binding;   /* who holds it, for the message */
	const dobj_ns *ns;
	struct claim *next;
} claim;

static pthread_mutex_t claims_lock = PTHREAD_MUTEX_INITIALIZER;
static claim *claims;

/*
 * The one way a folder is held, for the three claims below: open it and
 * take flock(LOCK_EX | LOCK_NB).  0 with *fd, 1 when it is held elsewhere
 * (another process, or another runtime or node of this one: the lock
 * belongs to the open file description), < 0 with the message.  `made`: a
 * folder that dobj names and makes itself (a node's .node-N), which must be
 * a real folder: a symlink there is refused, never followed (a node deletes
 * and rewrites files in its cache folder; through a link that could be
 * anywhere, another project's storage, whose files are no cache).
 */
static int folder_lock(const char *path, int made, int *fd)
{
	struct stat sb;
	int f, e;

	*fd = -1;
	f = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (made ? O_NOFOLLOW : 0));
	if (f < 0) {
		e = errno;
		if (made && (e == ELOOP || e == ENOTDIR) && lstat(path, &sb) == 0 &&
		    !S_ISDIR(sb.st_mode))
			return dobj_error_set(DOBJ_ERROR, "%s is %s, not a folder; dobj makes this "
				"folder itself: remove it", path, S_ISLNK(sb.st_mode) ? "a symlink"
				: S_ISREG(sb.st_mode) ? "a file" : "a special file");
		return dobj_error_set(DOBJ_ERROR, "cannot lock the folder %s: %s", path,
			strerror(e));
	}
	if (flock(f, LOCK_EX | LOCK_NB) == 0) {
		*fd = f;
		return 0;
	}
	e = errno;
	close(f);
	if (e == EWOULDBLOCK)
		return 1;
	return dobj_error_set(DOBJ_ERROR, "cannot lock the folder %s: %s", path, strerror(e));
}

int dobj__folder_claim(dobj_ns *ns)
{
	char real[PATH_MAX];
	claim *c;
	int fd, rc = DOBJ_OK;

	if (!realpath(ns->dir, real))
		return dobj_error_set(DOBJ_ERROR, "cannot resolve the storage folder %s: %s", ns->dir,
			strerror(errno));
	pthread_mutex_lock(&claims_lock);
	for (c = claims; c; c = c->next) {
		if (strcmp(c->path, real) == 0) {
			rc = dobj_error_set(DOBJ_ESTATE, "the storage folder %s is already used by the "
				"namespace bound as %s in this process (same storage directory and "
				"unique key); close that runtime first", real, c->binding);
			goto done;
		}
	}
	if ((rc = folder_lock(real, 0, &fd)) != 0) {
		if (rc == 1)
			rc = dobj_error_set(DOBJ_ESTATE, "the storage folder %s is used by another "
				"process (it holds the folder's lock); one process at a time may use a "
				"folder", real);
		goto done;
	}
	c = calloc(1, sizeof(*c));
	if (!c || !(c->path = strdup(real)) || !(c->binding = strdup(ns->binding))) {
		if (c)
			free(c->path);
		free(c);
		close(fd);
		rc = dobj_error_set(DOBJ_ENOMEM, "out of memory");
		goto done;
	}
	c->ns = ns;
	c->next = claims;
	claims = c;
	ns->folder_fd = fd;
done:
	pthread_mutex_unlock(&claims_lock);
	return rc;
}

void dobj__folder_release(dobj_ns *ns)
{
	claim **pp, *c;

	if (ns->folder_fd < 0)
		return;
	pthread_mutex_lock(&claims_lock);
	for (pp = &claims; (c = *pp); pp = &c->next) {
		if (c->ns == ns) {
			*pp = c->next;
			free(c->path);
			free(c->binding);
			free(c);
			break;
		}
	}
	close(ns->folder_fd); /* drops the flock */
	ns->folder_fd = -1;
	pthread_mutex_unlock(&claims_lock);
}

/*
 * A namespace folder holds either a runtime's own data or a cluster node's
 * cache of PostgreSQL's data, and neither may be taken for the other: a node
 * replaces a file its markers do not vouch for with PostgreSQL's state (none,
 * for an object PostgreSQL never had: the file is deleted), so a project that
 * ran without the cluster and is started as a node lost each object on its
 * first call; and a runtime without the cluster on a node's cache served old
 * copies as its own data, its writes never reaching PostgreSQL.  A node's
 * folder carries this mark, written when a node first binds it.  A folder
 * without the mark is a node's all the same if it holds no object's file, or
 * one of cluster_snapshot.c's cache markers (a node of a dobj from before
 * the mark).  Runs with the folder claimed: no other process is in it.
 */
#define CACHE_MARK ".dobj-cluster-cache"

int dobj__folder_vet(dobj_ns *ns)
{
	static const char why[] = "This folder is a dobj cluster node's cache of PostgreSQL's "
		"data (docs/cluster.md): a runtime without the cluster refuses it.\n";
	size_t n = strlen(ns->dir) + sizeof(CACHE_MARK) + 1;
	char *mark = malloc(n);
	int marked, own = 0, cache = 0, fd, rc = DOBJ_OK;
	struct dirent *e;
	DIR *d;

	if (!mark)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	snprintf(mark, n, "%s/%s", ns->dir, CACHE_MARK);
	marked = access(mark, F_OK) == 0;
	if (!ns->rt->cluster) {
		if (marked)
			rc = dobj_error_set(DOBJ_ESTATE, "the storage folder %s is a cluster node's cache "
				"of PostgreSQL's data, not data of its own (without the cluster, old copies "
				"would be served and writes never reach PostgreSQL): start this runtime as a "
				"node of the cluster, or give it another storage folder", ns->dir);
		goto done;
	}
	if (marked)
		goto done;
	if (!(d = opendir(ns->dir))) {
		rc = dobj_error_set(DOBJ_ERROR, "cannot read the storage folder %s: %s", ns->dir,
			strerror(errno));
		goto done;
	}
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);
		if (!dobj__storage_is_object_file(e->d_name))
			continue;
		if (len > 4 && strcmp(e->d_name + len - 4, "-seq") == 0)
			cache = 1;
		else
			own = 1;
	}
	closedir(d);
	if (own && !cache) {
		rc = dobj_error_set(DOBJ_ESTATE, "the storage folder %s holds the objects of a runtime "
			"without the cluster: a node's folder is a cache of PostgreSQL's data, and a node "
			"would replace them with PostgreSQL's state; move them out of the folder, or start "
			"without the cluster (a node's cache left by a dobj from before this check: "
			"remove the folder)", ns->dir);
		goto done;
	}
	fd = open(mark, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, why, sizeof(why) - 1) != (ssize_t)(sizeof(why) - 1) ||
	    fsync(fd) < 0) {
		rc = dobj_error_set(DOBJ_ERROR, "cannot write %s: %s", mark, strerror(errno));
		unlink(mark);
	}
	if (fd >= 0)
		close(fd);
done:
	free(mark);
	return rc;
}

/*
 * Move a namespace's folder to a new name (a class renamed by a migration):
 * only while nobody uses it, checked the way a bind claims it (the registry
 * in this process, the folder's flock between processes), and with
 * rename(2), which moves everything inside at once or nothing.  `to` must
 * not exist, not even as a dangling symlink (rename would replace an empty
 * folder or a link silently).  `from` itself is renamed: when it is a
 * symlink, the link moves, never the folder it points to (which may be
 * anywhere, outside the state folder).
 */
int dobj__folder_move(const char *from, const char *to)
{
	char real[PATH_MAX];
	struct stat sb;
	claim *c;
	int fd, rc = DOBJ_OK;

	if (!realpath(from, real))
		return dobj_error_set(DOBJ_ERROR, "cannot resolve the storage folder %s: %s", from,
			strerror(errno));
	pthread_mutex_lock(&claims_lock);
	for (c = claims; c; c = c->next) {
		if (strcmp(c->path, real) == 0) {
			rc = dobj_error_set(DOBJ_ESTATE, "cannot move the storage folder %s of a renamed "
				"class: the namespace bound as %s in this process uses it", real, c->binding);
			goto done;
		}
	}
	if ((rc = folder_lock(real, 0, &fd)) != 0) {
		if (rc == 1)
			rc = dobj_error_set(DOBJ_ESTATE, "cannot move the storage folder %s of a "
				"renamed class: another process uses it (it holds the folder's lock)", real);
		goto done;
	}
	if (lstat(to, &sb) == 0) {
		rc = dobj_error_set(DOBJ_ESTATE, "cannot move the storage folder %s to %s: %s exists",
			from, to, to);
	} else if (rename(from, to) < 0) {
		rc = dobj_error_set(DOBJ_ERROR, "cannot move the storage folder %s to %s: %s", from, to,
			strerror(errno));
	}
	close(fd); /* drops the flock */
done:
	pthread_mutex_unlock(&claims_lock);
	return rc;
}

/*
 * A cluster node's folder.  A node's local files are a cache of what
 * PostgreSQL holds (docs/cluster.md), and each node needs a cache of its own:
 * one object's file written by two processes would be corrupted (hence the
 * namespace folder's lock above).  The processes of one machine started alike
 * (`uvicorn --workers 4`, gunicorn, a worker started again after a crash) all
 * get the same storage setting, so a node takes the first folder no other node
 * holds: the storage folder itself, else STORAGE/.node-2, STORAGE/.node-3, ...
 * It holds it with flock until its runtime has closed (its last cache markers
 * written); the lock is on an open file description of its own, so a second
 * node in this process is held off too, and the kernel drops it when the
 * process dies, however it dies: a worker started again finds a folder free,
 * and the cache in it, which the cache markers vet (a file they do not vouch
 * for is rebuilt from PostgreSQL).
 */
#define NODE_FOLDERS 256

int dobj__folder_node(const char *storage, char **dir, int *fd)
{
	size_t n = strlen(storage) + 32;
	int k, rc;

	*dir = NULL;
	*fd = -1;
	for (k = 1; k <= NODE_FOLDERS; k++) {
		char *path = malloc(n);
		int f;
		if (!path)
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		if (k == 1)
			snprintf(path, n, "%s", storage);
		else
			snprintf(path, n, "%s/.node-%d", storage, k);
		if ((rc = dobj__mkdir_p(path)) < 0) {
			free(path);
			return rc;
		}
		/* The storage folder may be a link (the operator's choice of
		 * disk); a .node-N is dobj's own. */
		if ((rc = folder_lock(path, k > 1, &f)) == 0) {
			*dir = path;
			*fd = f;
			return DOBJ_OK;
		}
		free(path);
		if (rc < 0)
			return rc;
	}
	return dobj_error_set(DOBJ_ESTATE, "cluster: the %d node folders of %s (the storage folder "
		"and .node-2 to .node-%d in it) are all held by other nodes", NODE_FOLDERS, storage,
		NODE_FOLDERS);
}
