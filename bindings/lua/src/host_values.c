/* How the core holds Lua values: slots in the runtime's anchor table, and
 * the pooled coroutines that run tasks (see dobj_lua.h). */
#include "dobj_lua.h"

/* ------------------------------------------------------------------ slots */

/* Anchor the value on top of A (popped); returns the slot, 0 if out of memory. */
int slot_new(runtime_ud *r, int kind)
{
	int s;

	if (r->freehead) {
		s = r->freehead;
		r->freehead = -r->slot_refs[s];
	} else {
		if (r->nslots + 1 >= r->capslots) {
			int cap = r->capslots ? 2 * r->capslots : 64;
			int *rc = realloc(r->slot_refs, (size_t)cap * sizeof(*rc));
			unsigned char *k;
			if (!rc) {
				lua_pop(r->A, 1);
				return 0;
			}
			r->slot_refs = rc;
			k = realloc(r->slot_kind, (size_t)cap);
			if (!k) {
				lua_pop(r->A, 1);
				return 0;
			}
			r->slot_kind = k;
			r->capslots = cap;
		}
		s = ++r->nslots;
	}
	r->slot_refs[s] = 1;
	r->slot_kind[s] = (unsigned char)kind;
	lua_rawseti(r->A, ANCHOR_SLOTS, s);
	return s;
}

void *anchor(runtime_ud *r, lua_State *L, int idx, int kind)
{
	int s;

	lua_pushvalue(L, idx);
	lua_xmove(L, r->A, 1);
	s = slot_new(r, kind);
	return s ? SLOT_TO_HOST(s) : NULL;
}

void push_slot(runtime_ud *r, lua_State *L, void *v)
{
	if (!v || !IS_SLOT(v)) {
		lua_pushnil(L);
		return;
	}
	lua_rawgeti(r->A, ANCHOR_SLOTS, HOST_TO_SLOT(v));
	lua_xmove(r->A, L, 1);
}

void slot_unref(runtime_ud *r, int s)
{
	lua_State *A = r->A;

	if (r->closed || s <= 0 || s > r->nslots || r->slot_refs[s] <= 0)
		return;
	if (--r->slot_refs[s] > 0)
		return;
	if (r->slot_kind[s] == SLOT_CTX) {
		/* The instance is gone: a ctx kept by the script must not reach a
		 * freed object. */
		ctx_ud *x;
		lua_rawgeti(A, ANCHOR_SLOTS, s);
		x = lua_touserdata(A, -1);
		if (x)
			x->obj = NULL;
		lua_pop(A, 1);
	}
	lua_pushnil(A);
	lua_rawseti(A, ANCHOR_SLOTS, s);
	r->slot_refs[s] = -r->freehead;
	r->freehead = s;
}

void push_mt_rt(runtime_ud *r, lua_State *L, int which)
{
	lua_getiuservalue(r->A, ANCHOR_MODULE, which);
	lua_xmove(r->A, L, 1);
}

/* ------------------------------------------------------------- coroutines */

task_coro *coro_get(runtime_ud *r)
{
	task_coro *c = r->pool;

	if (c) {
		r->pool = c->next;
		r->npool--;
		c->next = NULL;
		c->h.refs = 1;
		return c;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->h.kind = HOST_CORO;
	c->h.refs = 1;
	c->r = r;
	c->co = lua_newthread(r->A);
	c->slot = slot_new(r, SLOT_THREAD);
	if (!c->slot) {
		free(c);
		return NULL;
	}
	return c;
}

void coro_release(runtime_ud *r, task_coro *c)
{
	if (--c->h.refs > 0)
		return;
	if (c->timer)
		dobj_timer_cancel(r->rt, c->timer); /* its callback clears c->timer */
	if (c->wait) {
		dobj_task *w = c->wait;
		c->wait = NULL;
		dobj_task_on_done(w, NULL, NULL);
		dobj_task_unref(w);
	}
	if (c->task) {
		dobj_task *t = c->task;
		c->task = NULL;
		dobj_task_unref(t);
	}
	if (!r->closed && c->state == CORO_START)
		lua_settop(c->co, 0); /* spawned but never run */
	c->state = CORO_IDLE;
	if (!r->closed && !r->dying && r->npool < POOL_MAX && lua_status(c->co) == LUA_OK &&
	    lua_gettop(c->co) == 0) {
		c->next = r->pool;
		r->pool = c;
		r->npool++;
		return;
	}
	/* Suspended (its task was aborted) or errored: let the collector have it. */
	slot_unref(r, c->slot);
	free(c);
}

/* ------------------------------------------------------------- host values */

void host_retain(void *data, void *v)
{
	runtime_ud *r = data;

	if (!v)
		return;
	if (IS_SLOT(v)) {
		if (!r->closed && r->slot_refs[HOST_TO_SLOT(v)] > 0)
			r->slot_refs[HOST_TO_SLOT(v)]++;
	} else {
		((host_struct *)v)->refs++;
	}
}

void host_release(void *data, void *v)
{
	runtime_ud *r = data;
	host_struct *h = v;

	if (!v)
		return;
	if (IS_SLOT(v)) {
		slot_unref(r, HOST_TO_SLOT(v));
	} else if (h->kind == HOST_CORO) {
		coro_release(r, (task_coro *)h);
	} else if (h->kind == HOST_CLASS) {
		bound_class *k = (bound_class *)h;
		if (--h->refs > 0)
			return;
		slot_unref(r, k->slot);
		free(k);
	}
}

