/*
 * A storage folder belongs to one namespace at a time: two namespaces or two
 * runtimes of one process on the same folder and unique key are refused at
 * bind (they used to share one SQLite file and stall 5 s on "database is
 * locked"), and so is a second process (flock), with a message naming the
 * folder.  A bind that fails leaves nothing behind.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "testhost.h"

static int construct(dobj_obj *obj, void *data, void **instance, void **error)
{
	(void)obj; (void)data; (void)error;
	*instance = tv_new(V_INST, NULL, 0);
	return DOBJ_OK;
}

static int step(dobj_task *t, void *data)
{
	(void)data;
	dobj_task_return(t, tv_new(V_RES, "ok", 200));
	return DOBJ_OK;
}

static dobj_rt *new_rt(const char *dir)
{
	dobj_rt *rt;
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	o.host.retain = tv_retain;
	o.host.release = tv_release;
	o.virtual_time = 1;
	o.storage_dir = dir;
	CHECK_EQ_INT(dobj_rt_new(&rt, &o), DOBJ_OK);
	return rt;
}

/* `data` is a host value, so a bind that is undone must let it go. */
static int bind_ns(dobj_rt *rt, const char *binding, const char *key, tv *data)
{
	dobj_class k = { "Folder", DOBJ_CLASS_FETCH | DOBJ_CLASS_ALARM, NULL, construct, step, NULL };
	dobj_ns *ns;
	k.data = data;
	return dobj_ns_new(&ns, rt, binding, strlen(binding), key, strlen(key), &k);
}

static char dir[64];
static char self_path[PATH_MAX];

/* Run this binary as another process that binds `key` under dir: its exit
 * status is 0 if it could, 3 if it was refused because this process holds
 * the folder, 4 for anything else. */
static int other_process_binds(const char *key)
{
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		execl(self_path, self_path, "--bind", dir, key, (char *)NULL);
		_exit(5);
	}
	CHECK(pid > 0);
	CHECK_EQ_INT(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int child_bind(const char *root, const char *key)
{
	dobj_rt *rt = new_rt(root);
	int rc = bind_ns(rt, "CHILD", key, NULL);
	int out = rc == DOBJ_OK ? 0
		: rc == DOBJ_ESTATE && strstr(dobj_error_last(), "is used by another process") &&
		  strstr(dobj_error_last(), key) ? 3 : 4;
	if (out == 4)
		fprintf(stderr, "child: %d %s\n", rc, dobj_error_last());
	dobj_rt_free(rt);
	return out;
}

static void test_one_namespace_per_folder_in_a_process(void)
{
	dobj_rt *rt1 = new_rt(dir), *rt2 = new_rt(dir);

	CHECK_EQ_INT(bind_ns(rt1, "FIRST", "shared-key", NULL), DOBJ_OK);
	/* Another runtime of this process, same folder. */
	CHECK_EQ_INT(bind_ns(rt2, "SECOND", "shared-key", NULL), DOBJ_ESTATE);
	CHECK(strstr(dobj_error_last(), "/shared-key is already used by the namespace bound as FIRST"));
	/* The same runtime, another binding with the same unique key. */
	CHECK_EQ_INT(bind_ns(rt1, "THIRD", "shared-key", NULL), DOBJ_ESTATE);
	CHECK_EQ_INT(dobj_rt_ns_count(rt1), 1);
	CHECK_EQ_INT(dobj_rt_ns_count(rt2), 0);
	/* Other keys are other folders. */
	CHECK_EQ_INT(bind_ns(rt2, "OTHER", "other-key", NULL), DOBJ_OK);
	/* Closing the first runtime frees the folder. */
	dobj_rt_clear(rt1);
	CHECK_EQ_INT(bind_ns(rt2, "SECOND", "shared-key", NULL), DOBJ_OK);
	dobj_rt_free(rt1);
	dobj_rt_free(rt2);
}

static void test_one_process_per_folder(void)
{
	dobj_rt *rt = new_rt(dir);

	CHECK_EQ_INT(bind_ns(rt, "HELD", "held-key", NULL), DOBJ_OK);
	CHECK_EQ_INT(other_process_binds("held-key"), 3);
	CHECK_EQ_INT(other_process_binds("free-key"), 0);
	dobj_rt_free(rt);
	/* The lock goes with the runtime. */
	CHECK_EQ_INT(other_process_binds("held-key"), 0);
}

/* Loading the stored alarms fails (metadata.sqlite is not a database): the
 * bind is undone — no namespace, no claim on the folder, no reference to
 * the class data. */
static void test_failed_bind_leaves_nothing(void)
{
	char path[128];
	FILE *f;
	dobj_rt *rt = new_rt(dir);
	tv *data = tv_new(V_STATE, "class data", 0);
	int live = live_values;

	snprintf(path, sizeof(path), "%s/broken-key", dir);
	CHECK_EQ_INT(mkdir(path, 0777), 0);
	snprintf(path, sizeof(path), "%s/broken-key/metadata.sqlite", dir);
	f = fopen(path, "w");
	CHECK(f != NULL);
	fputs("this is not an SQLite database, it is long enough to be read as a header.....",
		f);
	fclose(f);
	CHECK(bind_ns(rt, "BROKEN", "broken-key", data) < 0);
	CHECK(strstr(dobj_error_last(), "metadata.sqlite") != NULL);
	CHECK_EQ_INT(dobj_rt_ns_count(rt), 0);
	CHECK_EQ_INT(data->refs, 1);
	CHECK_EQ_INT(live_values, live);
	/* Nothing holds the folder: once repaired, it binds. */
	CHECK_EQ_INT(unlink(path), 0);
	CHECK_EQ_INT(bind_ns(rt, "BROKEN", "broken-key", data), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_ns_count(rt), 1);
	dobj_rt_free(rt);
	tv_release(NULL, data);
	CHECK_EQ_INT(live_values, 0);
}

/* An empty storage directory is refused: it used to put every namespace
 * folder at the root of the filesystem ("" + "/" + unique key). */
static void test_an_empty_storage_folder_is_refused(void)
{
	dobj_rt *rt = NULL;
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;

	o.host.retain = tv_retain;
	o.host.release = tv_release;
	o.storage_dir = "";
	CHECK_EQ_INT(dobj_rt_new(&rt, &o), DOBJ_EARG);
	CHECK(rt == NULL);
	CHECK(strstr(dobj_error_last(), "the storage directory must not be empty") != NULL);
}

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	CHECK(d != NULL);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* Whether nobody holds `path`'s lock (taken and dropped at once). */
static int lock_is_free(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC), ok;

	CHECK(fd >= 0);
	ok = flock(fd, LOCK_EX | LOCK_NB) == 0;
	close(fd);
	return ok;
}

/* A cluster node's folder (dobj__folder_node): the storage folder, else
 * STORAGE/.node-N, which dobj makes itself.  Whatever else is found under
 * such a name is refused with a message that names it, never followed: a
 * node deletes and rewrites files in its cache folder, and a symlink would
 * put that cache anywhere (another project's storage, whose files are not
 * a cache).  Nothing is left open on a refusal. */
static void test_a_node_folder_that_is_not_a_folder_is_refused(void)
{
	char d[64], node2[96], other[96], *got;
	int held, fd, fds;

	testhost_tmpdir(d, "dobj-nodefolder");
	snprintf(node2, sizeof(node2), "%s/.node-2", d);
	snprintf(other, sizeof(other), "%s/other", d);
	CHECK_EQ_INT(mkdir(other, 0777), 0);
	CHECK_EQ_INT(dobj__folder_node(d, &got, &held), DOBJ_OK);
	CHECK_STR(got, d);
	free(got);
	fds = open_fds();

	CHECK_EQ_INT(symlink(other, node2), 0);
	CHECK(dobj__folder_node(d, &got, &fd) < 0);
	CHECK(got == NULL && fd == -1);
	CHECK(strstr(dobj_error_last(), "/.node-2 is a symlink, not a folder") != NULL);
	CHECK(lock_is_free(other));
	CHECK_EQ_INT(unlink(node2), 0);

	CHECK_EQ_INT(symlink("/nonexistent/dobj", node2), 0); /* dangling */
	CHECK(dobj__folder_node(d, &got, &fd) < 0);
	CHECK(strstr(dobj_error_last(), "/.node-2 is a symlink, not a folder") != NULL);
	CHECK_EQ_INT(unlink(node2), 0);

	CHECK_EQ_INT(symlink(node2, node2), 0); /* a loop */
	CHECK(dobj__folder_node(d, &got, &fd) < 0);
	CHECK(strstr(dobj_error_last(), "/.node-2 is a symlink, not a folder") != NULL);
	CHECK_EQ_INT(unlink(node2), 0);

	fclose(fopen(node2, "w"));
	CHECK(dobj__folder_node(d, &got, &fd) < 0);
	CHECK(strstr(dobj_error_last(), "/.node-2 is a file, not a folder") != NULL);
	CHECK_EQ_INT(unlink(node2), 0);
	CHECK_EQ_INT(open_fds(), fds);

	/* Once it is gone, a folder is made there and taken. */
	CHECK_EQ_INT(dobj__folder_node(d, &got, &fd), DOBJ_OK);
	CHECK_STR(got, node2);
	free(got);
	close(fd);
	close(held);
	testhost_rm_rf(d);
}

/* The storage folder itself may be a symlink (the operator's choice of
 * disk): it is followed, and the lock is on the folder it points to.  A
 * storage "folder" that is a file is refused by name. */
static void test_a_storage_folder_given_as_a_symlink_is_followed(void)
{
	char d[64], real[96], link_[96], file[96], *got;
	int fd, fd2;

	testhost_tmpdir(d, "dobj-nodefolder");
	snprintf(real, sizeof(real), "%s/real", d);
	snprintf(link_, sizeof(link_), "%s/link", d);
	snprintf(file, sizeof(file), "%s/file", d);
	CHECK_EQ_INT(mkdir(real, 0777), 0);
	CHECK_EQ_INT(symlink(real, link_), 0);
	CHECK_EQ_INT(dobj__folder_node(link_, &got, &fd), DOBJ_OK);
	CHECK_STR(got, link_);
	free(got);
	CHECK(!lock_is_free(real));
	/* The next node, by the other name, is held off the same folder. */
	CHECK_EQ_INT(dobj__folder_node(real, &got, &fd2), DOBJ_OK);
	CHECK(strstr(got, "/real/.node-2") != NULL);
	free(got);
	close(fd2);
	close(fd);

	fclose(fopen(file, "w"));
	CHECK(dobj__folder_node(file, &got, &fd) < 0);
	CHECK(strstr(dobj_error_last(), "/file: Not a directory") != NULL);
	testhost_rm_rf(d);
}

/* All 256 taken: a clear error, and nothing left open. */
static void test_all_node_folders_taken_is_a_clear_error(void)
{
	enum { N = 256 };
	char d[64], *got;
	int fds[N], i, fd, before;

	testhost_tmpdir(d, "dobj-nodefolder");
	before = open_fds();
	for (i = 0; i < N; i++) {
		CHECK_EQ_INT(dobj__folder_node(d, &got, &fds[i]), DOBJ_OK);
		free(got);
	}
	CHECK_EQ_INT(dobj__folder_node(d, &got, &fd), DOBJ_ESTATE);
	CHECK(strstr(dobj_error_last(), "(the storage folder and .node-2 to .node-256 in it) are "
		"all held by other nodes") != NULL);
	CHECK_EQ_INT(open_fds(), before + N);
	for (i = 0; i < N; i++)
		close(fds[i]);
	testhost_rm_rf(d);
}

enum { THREADS = 8 };

typedef struct racer {
	pthread_barrier_t *go;
	char *dir;    /* the node folder it took */
	int fd, rc;
	int bound;    /* whether its runtime bound "raced-key" */
} racer;

static void *race_node(void *arg)
{
	racer *r = arg;

	pthread_barrier_wait(r->go);
	r->rc = dobj__folder_node(dir, &r->dir, &r->fd);
	return NULL;
}

/* (No CHECK on these threads: its counters are the main thread's.) */
static void *race_bind(void *arg)
{
	racer *r = arg;
	dobj_rt *rt = NULL;
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;

	o.host.retain = tv_retain;
	o.host.release = tv_release;
	o.virtual_time = 1;
	o.storage_dir = dir;
	r->rc = dobj_rt_new(&rt, &o);
	pthread_barrier_wait(r->go);
	r->bound = r->rc == DOBJ_OK && bind_ns(rt, "RACED", "raced-key", NULL) == DOBJ_OK;
	pthread_barrier_wait(r->go); /* every bind tried before any runtime closes */
	dobj_rt_free(rt);
	return NULL;
}

/* Threads that claim at once: each node gets a folder of its own, and of
 * the runtimes that bind one folder at once, exactly one gets it. */
static void test_threads_claiming_at_once_never_share_a_folder(void)
{
	pthread_barrier_t go;
	pthread_t th[THREADS];
	racer r[THREADS];
	int i, j, bound = 0;

	pthread_barrier_init(&go, NULL, THREADS);
	memset(r, 0, sizeof(r));
	for (i = 0; i < THREADS; i++) {
		r[i].go = &go;
		CHECK_EQ_INT(pthread_create(&th[i], NULL, race_node, &r[i]), 0);
	}
	for (i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	for (i = 0; i < THREADS; i++) {
		CHECK_EQ_INT(r[i].rc, DOBJ_OK);
		for (j = 0; j < i; j++)
			CHECK(r[i].dir && r[j].dir && strcmp(r[i].dir, r[j].dir) != 0);
	}
	for (i = 0; i < THREADS; i++) {
		free(r[i].dir);
		close(r[i].fd);
	}
	memset(r, 0, sizeof(r));
	for (i = 0; i < THREADS; i++) {
		r[i].go = &go;
		CHECK_EQ_INT(pthread_create(&th[i], NULL, race_bind, &r[i]), 0);
	}
	for (i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		CHECK_EQ_INT(r[i].rc, DOBJ_OK);
		bound += r[i].bound;
	}
	CHECK_EQ_INT(bound, 1);
	pthread_barrier_destroy(&go);
}

int main(int argc, char **argv)
{
	char cmd[128];

	if (argc == 4 && strcmp(argv[1], "--bind") == 0)
		return child_bind(argv[2], argv[3]);
	if (!realpath(argv[0], self_path))
		return 2;
	snprintf(dir, sizeof(dir), "/tmp/dobj-folder-XXXXXX");
	if (!mkdtemp(dir))
		return 2;
	RUN(test_one_namespace_per_folder_in_a_process);
	RUN(test_one_process_per_folder);
	RUN(test_failed_bind_leaves_nothing);
	RUN(test_an_empty_storage_folder_is_refused);
	RUN(test_a_node_folder_that_is_not_a_folder_is_refused);
	RUN(test_a_storage_folder_given_as_a_symlink_is_followed);
	RUN(test_all_node_folders_taken_is_a_clear_error);
	RUN(test_threads_claiming_at_once_never_share_a_folder);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	CHECK_EQ_INT(system(cmd), 0);
	return DONE();
}
