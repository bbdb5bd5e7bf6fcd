"""The entry of the python-counter example: GET /<name> reaches the Counter
named <name>, which counts the requests it got, in its storage."""
from urllib.parse import urlsplit

import dobj


class Counter(dobj.DurableObject):
    async def fetch(self, request):
        n = (self.ctx.storage.get("count") or 0) + 1
        self.ctx.storage.put("count", n)  # committed before the response leaves
        return dobj.Response(str(n), headers={"content-type": "text/plain"})


class Default(dobj.WorkerEntrypoint):
    async def fetch(self, request):
        name = urlsplit(request.url).path.strip("/") or "default"
        return await self.env.COUNTER.get_by_name(name).fetch(request)
