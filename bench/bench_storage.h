/* bench_storage.c: the storage ops of build/bench_ids (see there). */
#ifndef BENCH_STORAGE_H
#define BENCH_STORAGE_H

/** Run storage op `op` with count `n`: 1 and *seconds when done, 0 if `op`
 *  is not a storage op, < 0 on error (dobj_error_last). */
int bench_storage_op(const char *op, long n, double *seconds);
/** Free the runtime and remove a temporary directory made here. */
void bench_storage_close(void);

#endif
