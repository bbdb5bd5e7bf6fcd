/*
 * values.h — Python values <-> JS values, for storage (V8 blobs through the
 * core's streaming codec, dobj/value.h) and for RPC (dobj_val, dobj/val.h).
 *
 * One mapping serves both (docs/python.md, "Values"):
 *
 *   None <-> null            bool <-> boolean
 *   numbers by the core's integer rule (docs/value-format.md): int -> `I`
 *   in the Smi range, `N` within 2^53, BigInt beyond (dobj_ser_integer);
 *   float -> `N` (so 1.0 stays a float); reading: `I` -> int, `N` -> int
 *   when dobj_number_is_integer says so (whole, past the Smi range, within
 *   2^53), else float; BigInt -> int; undefined -> None
 *   str <-> string (lone surrogates kept: surrogatepass / WTF-8)
 *   bytes, bytearray, memoryview -> Uint8Array; Uint8Array, ArrayBuffer -> bytes
 *   list, tuple -> Array -> list         set, frozenset -> Set -> set
 *   dict with only str keys -> Object -> dict;  other dicts -> Map -> dict
 *   datetime -> Date (naive = UTC) -> aware datetime in UTC
 *
 * Containers met twice are written once and referenced after, so shared
 * parts and cycles come back shared (a list that holds itself reads back as
 * a list that holds itself).  Map keys and Set items that read back as
 * lists or sets become tuples and frozensets, so that they can be hashed.
 *
 * Errors: an unsupported type is a TypeError naming it; a value the codec
 * refuses (too deep) a ValueError; a corrupt or unsupported blob the
 * module's error type ("cannot read the stored value: <reason>").
 */
#ifndef DOBJPY_VALUES_H
#define DOBJPY_VALUES_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "dobj.h"

/* What the mapping keeps per module (in the module state). */
typedef struct dobjpy_values {
	PyObject *error;      /* raised for corrupt blobs (dobj.Error) */
	PyObject *utc;        /* datetime.timezone.utc */
	PyObject *from_bytes; /* int.from_bytes */
	dobj_ser *ser;        /* a writer and a reader kept for reuse... */
	dobj_de *de;
	int ser_busy, de_busy;/* ...unless in use (a tzinfo may call back into storage) */
} dobjpy_values;

/* Fill `v` (zeroed by the caller); `error` is borrowed and kept. -1 with an
 * exception on failure. */
int dobjpy_values_init(dobjpy_values *v, PyObject *error);
int dobjpy_values_traverse(dobjpy_values *v, visitproc visit, void *arg);
void dobjpy_values_clear(dobjpy_values *v);

/* ------------------------------------------------------------ V8 blobs */

/*
 * Encode `o`.  Returns the writer holding the blob (*data, *len borrowed
 * from it) or NULL with an exception.  Give the writer back with
 * dobjpy_encode_done as soon as the blob has been used.
 */
dobj_ser *dobjpy_encode(dobjpy_values *v, PyObject *o, const unsigned char **data, size_t *len);
void dobjpy_encode_done(dobjpy_values *v, dobj_ser *ser);
/* Encode `o` into a new bytes object. */
PyObject *dobjpy_encode_bytes(dobjpy_values *v, PyObject *o);
/* Decode a blob: a new reference, or NULL with an exception. */
PyObject *dobjpy_decode(dobjpy_values *v, const void *data, size_t len);

/* A str's UTF-8 as the core takes a JavaScript string (lone surrogates as
 * WTF-8); *tmp receives the bytes object that owns it, or NULL.  NULL with
 * an exception on failure. */
const char *dobjpy_str_utf8(PyObject *s, Py_ssize_t *n, PyObject **tmp);
/* A str argument for the core, by the rule of every str the core takes:
 * dobjpy_str_utf8's bytes, so that the core judges the text (a lone
 * surrogate where text must be UTF-8 gets the core's message, as in Lua);
 * a TypeError naming `what` for anything but a str. */
const char *dobjpy_str_arg(PyObject *o, const char *what, Py_ssize_t *n, PyObject **tmp);

/* Text from the core as a str: WTF-8 (a str's lone surrogates as the binding
 * passed them) gives those surrogates back; other bytes that are not UTF-8
 * (a Lua string's, a file name's) come back by surrogateescape. */
PyObject *dobjpy_text_str(const char *p, size_t n);

/* A path (str, bytes or os.PathLike) as bytes, a PyArg "O&" converter:
 * os.fsencode's bytes (a name read from a directory that is not UTF-8 comes
 * back by surrogateescape), and a str (or an os.PathLike's str) os.fsencode
 * cannot take (a lone surrogate outside U+DC80..U+DCFF) as its WTF-8, the
 * bytes a Lua string
 * would hold: never a UnicodeEncodeError.  *(PyObject **)out owns them. */
int dobjpy_fs_path(PyObject *o, void *out);

/* ms since the epoch of a datetime (naive ones are UTC); -1 with an exception. */
int dobjpy_datetime_ms(dobjpy_values *v, PyObject *dt, double *ms);
/* Is `o` a datetime.datetime? */
int dobjpy_is_datetime(PyObject *o);

/* ------------------------------------------------------------ dobj_val */

/*
 * Hooks for what the storage mapping does not know: stubs and IDs in RPC
 * arguments and results.  NULL hooks (or a NULL table) refuse them.
 */
typedef struct dobjpy_val_hooks {
	/* A Python object no rule above covers: return a new dobj_val
	 * (DOBJ_VAL_STUB / DOBJ_VAL_ID), or NULL with no exception set to let
	 * the caller raise its TypeError, or NULL with an exception. */
	dobj_val *(*to_val)(void *data, PyObject *o);
	/* A DOBJ_VAL_STUB or DOBJ_VAL_ID: a new reference, or NULL with an
	 * exception. */
	PyObject *(*from_val)(void *data, const dobj_val *val);
	void *data;
} dobjpy_val_hooks;

/*
 * Python -> dobj_val (a new value, or NULL with an exception).  The same
 * mapping as blobs (ints through dobj_val_integer, floats through
 * dobj_val_double, so numbers keep int vs float), except that cycles cannot
 * be represented (ValueError).  Shared parts stay shared.
 */
dobj_val *dobjpy_to_val(dobjpy_values *v, PyObject *o, const dobjpy_val_hooks *hooks);
/* dobj_val -> Python (a new reference, or NULL with an exception). */
PyObject *dobjpy_from_val(dobjpy_values *v, const dobj_val *val, const dobjpy_val_hooks *hooks);

#endif
