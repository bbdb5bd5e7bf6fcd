"""The native rate limiter (examples/native/ratelimit.c) from Python."""
import asyncio
import os
import sys

import dobj

LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "librate.so")


class Api(dobj.DurableObject):
    """A Python object that asks the C limiter before answering."""

    async def fetch(self, request):
        who = request.url.rsplit("/", 1)[1]
        if not await self.env.LIMITER.get_by_name(who).take(1):
            return dobj.Response(f"slow down, {who}", status=429)
        return dobj.Response(f"hello {who}")


async def main():
    rt = dobj.Runtime(virtual_time=True)
    limiter = rt.bind_native("LIMITER", LIB, "RateLimiter")
    api = rt.bind("API", Api).get_by_name("front")
    await limiter.get_by_name("ada").configure(2, 1)
    for _ in range(3):
        r = await api.fetch("https://api/ada")
        print(r.status, r.text())
    rt.advance(1)
    print("one second later:", await limiter.get_by_name("ada").remaining(), "token(s)")
    try:
        await limiter.get_by_name("ada").take("lots")
    except TypeError as e:
        print("refused in the caller:", e)


if not os.path.exists(LIB):
    sys.exit("build/librate.so is missing: run make build")
asyncio.run(main())
