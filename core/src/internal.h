/* Private declarations shared between core files. */
#ifndef DOBJ_INTERNAL_H
#define DOBJ_INTERNAL_H

#include "dobj.h"

#define DOBJ__UNUSED(x) ((void)(x))

/** strdup that tolerates NULL and reports ENOMEM through the error slot. */
char *dobj__strndup(const char *s, size_t len);

/** Fill `out` with `len` bytes from the CSPRNG (buffered, fork-safe). */
int dobj__random(unsigned char *out, size_t len);

#endif
