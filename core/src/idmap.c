/*
 * A hash map from object IDs to core structures (objects, storages):
 * open addressing with linear probing and backward-shift deletion, so probe
 * chains stay intact without tombstones.  Keys point into the values.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static size_t id_hash(const dobj_id *id)
{
	uint64_t h;

	/* IDs are HMAC outputs: their bytes are already uniformly distributed. */
	memcpy(&h, id->bytes, sizeof(h));
	return (size_t)h;
}

void *dobj__idmap_get(const dobj__idmap *m, const dobj_id *id)
{
	size_t mask, i;

	if (!m->cap)
		return NULL;
	mask = m->cap - 1;
	for (i = id_hash(id) & mask; m->slots[i].key; i = (i + 1) & mask)
		if (dobj_id_equal(m->slots[i].key, id))
			return m->slots[i].value;
	return NULL;
}

static int grow(dobj__idmap *m)
{
	size_t cap = m->cap ? m->cap * 2 : 16, i, j;
	dobj__idmap_slot *slots = calloc(cap, sizeof(*slots));

	if (!slots)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	for (i = 0; i < m->cap; i++) {
		if (!m->slots[i].key)
			continue;
		for (j = id_hash(m->slots[i].key) & (cap - 1); slots[j].key; j = (j + 1) & (cap - 1))
			;
		slots[j] = m->slots[i];
	}
	free(m->slots);
	m->slots = slots;
	m->cap = cap;
	return DOBJ_OK;
}

int dobj__idmap_put(dobj__idmap *m, const dobj_id *key, void *value)
{
	size_t i;

	if ((m->len + 1) * 4 > m->cap * 3 && grow(m) < 0)
		return DOBJ_ENOMEM;
	for (i = id_hash(key) & (m->cap - 1); m->slots[i].key; i = (i + 1) & (m->cap - 1))
		;
	m->slots[i].key = key;
	m->slots[i].value = value;
	m->len++;
	return DOBJ_OK;
}

void *dobj__idmap_del(dobj__idmap *m, const dobj_id *id)
{
	size_t mask, i, j;
	void *value = NULL;

	if (!m->cap)
		return NULL;
	mask = m->cap - 1;
	for (i = id_hash(id) & mask; m->slots[i].key; i = (i + 1) & mask)
		if (dobj_id_equal(m->slots[i].key, id))
			break;
	if (!m->slots[i].key)
		return NULL;
	value = m->slots[i].value;
	m->slots[i].key = NULL;
	m->slots[i].value = NULL;
	for (j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
		size_t home = id_hash(m->slots[j].key) & mask;
		/* Move j back into the hole at i unless its home lies in (i, j]. */
		int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (!stays) {
			m->slots[i] = m->slots[j];
			m->slots[j].key = NULL;
			m->slots[j].value = NULL;
			i = j;
		}
	}
	m->len--;
	return value;
}

void *dobj__idmap_any(const dobj__idmap *m)
{
	size_t i;

	for (i = 0; i < m->cap; i++)
		if (m->slots[i].key)
			return m->slots[i].value;
	return NULL;
}

void dobj__idmap_free(dobj__idmap *m)
{
	free(m->slots);
	m->slots = NULL;
	m->cap = m->len = 0;
}
