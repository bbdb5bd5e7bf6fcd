"""A counter per name, as a Python Worker with a Durable Object.

GET /increment?name=a, /decrement?name=a, /?name=a (the current count).
"""
from urllib.parse import parse_qs, urlparse

from workers import DurableObject, Response, WorkerEntrypoint


class Counter(DurableObject):
    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        self.value = 0
        # No request reaches the object before the stored count is loaded.
        ctx.blockConcurrencyWhile(self.load)

    async def load(self):
        self.value = await self.ctx.storage.get("value") or 0

    async def getCounterValue(self):
        return self.value

    async def increment(self, amount=1):
        self.value += amount
        await self.ctx.storage.put("value", self.value)
        return self.value

    async def decrement(self, amount=1):
        self.value -= amount
        await self.ctx.storage.put("value", self.value)
        return self.value


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        url = urlparse(request.url)
        name = parse_qs(url.query).get("name", [None])[0]
        if not name:
            return Response("Select a Durable Object to contact by using the `name` "
                            "URL query string parameter, for example, ?name=A", status=400)

        stub = self.env.COUNTERS.get(self.env.COUNTERS.idFromName(name))
        if url.path == "/increment":
            count = await stub.increment()
        elif url.path == "/decrement":
            count = await stub.decrement()
        else:
            count = await stub.getCounterValue()
        return Response(f"Durable Object '{name}' count: {count}")
