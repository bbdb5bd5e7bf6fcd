/*
 * A storage folder belongs to one namespace at a time: two namespaces or two
 * runtimes of one process on the same folder and unique key are refused at
 * bind (they used to share one SQLite file and stall 5 s on "database is
 * locked"), and so is a second process (flock), with a message naming the
 * folder.  A bind that fails leaves nothing behind.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

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
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	CHECK_EQ_INT(system(cmd), 0);
	return DONE();
}
