"""dobj demo in Python: two classes, objects calling objects, errors, IDs."""
import asyncio

import dobj


class Counter(dobj.DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        self.n = 0

    async def fetch(self, request):
        if request.method == "POST":
            self.n += 1
        return dobj.Response(str(self.n), headers={"content-type": "text/plain"})


class Greeter(dobj.DurableObject):
    """Reads a counter object through env, then greets."""

    async def fetch(self, request):
        counter = self.env.COUNTER.get_by_name("visits")
        visits = (await counter.fetch("https://counter/inc", method="POST")).text()
        if request.url.endswith("/fail"):
            raise ValueError("the greeter was asked to fail")
        return dobj.Response.json({"greeting": self.env.GREETING, "visits": int(visits),
                                   "me": str(self.ctx.id), "name": self.ctx.id.name})


async def main():
    rt = dobj.Runtime(env={"GREETING": "hello from Python"})
    counter = rt.bind("COUNTER", Counter, unique_key="counter")
    greeter = rt.bind("GREETER", Greeter)

    foo = counter.id_from_name("foo")
    print("id_from_name('foo')     =", foo)
    print("same id from its string =", counter.id_from_string(str(foo)) == foo)
    print("new_unique_id()         =", counter.new_unique_id())
    try:
        counter.id_from_string("not-an-id")
    except dobj.InvalidIdError as e:
        print("id_from_string('not-an-id') ->", e)

    stub = counter.get(foo)
    for _ in range(3):
        resp = await stub.fetch("https://counter/inc", method="POST")
    print("counter 'foo' after 3 POSTs:", resp.status, resp.text(), resp.headers["Content-Type"])

    # 100 concurrent calls arrive in order and see one instance.
    results = await asyncio.gather(*(stub.fetch("https://counter/inc", method="POST") for _ in range(100)))
    print("100 concurrent POSTs, last count:", results[-1].text())

    alice = greeter.get_by_name("alice")
    print("greeter:", (await alice.fetch("https://greeter/")).json())
    try:
        await alice.fetch("https://greeter/fail")
    except ValueError as e:
        print(f"remote error: {type(e).__name__}: {e} (remote={e.remote}, id={e.durable_object_id[:16]}...)")


asyncio.run(main())
