"""The chat page (examples/chat/index.html) in a real browser, Debian's
headless Chromium (tests/python/browser.py), served over HTTP by the real
servers: `dobj dev` (the core's server and uvicorn) for examples/chat/python and `dobj-lua dev` for
examples/chat/lua.  Two tabs join one room through the page's form, type and
send messages, and must show every message in one broadcast order; the room
hibernates (evicted after a short --idle-timeout) and one tab reloads: the
room still knows everybody's name (the sockets' attachments); closes show on
the page, the server's own at stop too.

Skipped only when Chromium is missing or cannot run here (the reason is
printed); `make deps` installs Debian's chromium."""
import asyncio
import re

import pytest

pytest.importorskip("websockets")

from browser import Browser, BrowserUnavailable  # noqa: E402

IDLE = 0.2  # seconds: the servers' --idle-timeout
NAP = 3 * IDLE  # long enough for the room to be evicted (hibernate)


@pytest.fixture
def chat(chat_server):
    """The chat example on one server (conftest.py), with a short idle timeout."""
    return chat_server("--idle-timeout", str(IDLE))


@pytest.fixture
async def browser():
    try:
        b = await Browser.start()
    except BrowserUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield b
    finally:
        await b.close()


async def join(page, url, name):
    """Opens the page and joins the default room through its form."""
    await page.goto(url)
    await page.type("#name", name)
    await page.click("#join button")
    await page.wait_for("#log", "^joined lobby$")


async def say(page, text):
    await page.type("#text", text)
    await page.press_enter()


def messages(lines):
    return [t for t in lines if re.match(r"^(ann|bob): ", t)]


async def test_two_tabs_chat_through_hibernation_and_reload(chat, browser):
    url = f"http://127.0.0.1:{chat.port}/"
    ann, bob = await browser.new_page(), await browser.new_page()
    await join(ann, url, "ann")
    await join(bob, url, "bob")
    await ann.wait_for("#log", "^bob joined$")

    # Both type at once: every tab shows the room's one order, and each
    # sender's own order.
    async def chatter(page, name):
        for k in range(5):
            await say(page, f"{name} {k}")

    await asyncio.gather(chatter(ann, "ann"), chatter(bob, "bob"))
    seen = [messages(await p.wait_for("#log", "^(ann|bob): ", count=10)) for p in (ann, bob)]
    assert seen[0] == seen[1], seen
    for name in ("ann", "bob"):
        assert [t for t in seen[0] if t.startswith(name + ":")] == \
            [f"{name}: {name} {k}" for k in range(5)]

    # The room hibernates; bob's tab reloads: its socket's close wakes the
    # room, which names him from the socket's attachment.
    await asyncio.sleep(NAP)
    await bob.reload()
    await ann.wait_for("#log", "^bob left$")
    assert await bob.eval("document.querySelectorAll('#log p').length") == 0
    await join(bob, url, "bob")
    await ann.wait_for("#log", "^bob joined$", count=2)

    # Asleep again: the names come back from both sockets' attachments, and
    # messages still reach both tabs in one order.
    await asyncio.sleep(NAP)
    await say(ann, "/who")
    await ann.wait_for("#log", "^here: ann, bob$")
    await asyncio.sleep(NAP)
    await say(bob, "back after a nap")
    await say(ann, "welcome back")
    after = [messages(await p.wait_for("#log", "^ann: welcome back$"))[-2:] for p in (ann, bob)]
    assert after[0] == after[1] == ["bob: back after a nap", "ann: welcome back"]

    # Closes show on the page: ann joins again (her tab closes its socket
    # with 1000), bob's tab shows her leave and come back.
    await ann.click("#join button")
    await ann.wait_for("#log", r"^disconnected \(1000\)$")
    await ann.wait_for("#log", "^joined lobby$", count=2)
    await bob.wait_for("#log", "^ann left$")
    await bob.wait_for("#log", "^ann joined$")

    # The server stops: both tabs show the close it sent (1001 going away
    # or 1012 service restart).
    chat.proc.terminate()
    for page, closes in ((ann, 2), (bob, 1)):
        lines = await page.wait_for("#log", r"^disconnected \(", count=closes)
        assert lines[-1] in ("disconnected (1001)", "disconnected (1012)"), lines
    assert chat.wait() == 0, chat.output()
    assert ann.exceptions == [] and bob.exceptions == []
