"""The HTTP bench's reference row: a bare ASGI app on uvicorn (no dobj), the
ceiling of any Python server built on uvicorn here.  It answers every
request with "1" as text/plain, as the counter's first answer looks."""

HEADERS = [(b"content-type", b"text/plain")]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": b"1"})
