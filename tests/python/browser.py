"""Debian's headless Chromium for the page tests, driven over the DevTools
protocol (CDP) with the pinned `websockets` client: no browser download, no
driver binary.  `Browser.start()` runs `chromium --headless` on a port the
browser picks (it prints "DevTools listening on ws://..."); each `Page` is a
tab attached in flattened mode (one socket, a sessionId per tab).

A page is used the way a person does: clicks at an element's position
(Input.dispatchMouseEvent), typing (Input.insertText) and Enter
(Input.dispatchKeyEvent).  Waiting is event driven: `Page.wait_for` runs a
promise in the page that a MutationObserver resolves, with a deadline.
Every browser is stopped by `close()` (Browser.close, then SIGKILL)."""
import asyncio
import itertools
import json
import os
import re
import shutil
import tempfile

import websockets

START_TIMEOUT = 30.0
CALL_TIMEOUT = 30.0


class BrowserUnavailable(Exception):
    """Chromium is not installed or cannot run here (the reason says why)."""


def chromium_path():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    def __init__(self, proc, ws, profile, stderr_task, errors):
        self.proc = proc
        self.ws = ws
        self.profile = profile
        self._stderr_task = stderr_task
        self.stderr = errors
        self._ids = itertools.count(1)
        self._calls = {}
        self._waiters = []  # [method, sessionId, future]: the next such event
        self._listeners = {}  # (method, sessionId): a callback for every such event
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls):
        exe = chromium_path()
        if exe is None:
            raise BrowserUnavailable("chromium is not installed (apt-get install chromium; "
                                     "`make deps` installs it)")
        profile = tempfile.mkdtemp(prefix="dobj-browser-")
        args = [exe, "--headless", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--mute-audio", "--user-data-dir=" + profile,
                "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses root with its sandbox on
        # The sanitizer runs preload ASan into the interpreter: not into the browser.
        env = {k: v for k, v in os.environ.items()
               if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS")}
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True)
        errors = []
        try:
            url = await asyncio.wait_for(_devtools_url(proc, errors), START_TIMEOUT)
        except BaseException:
            await _kill(proc)
            shutil.rmtree(profile, ignore_errors=True)
            raise
        if url is None:
            await _kill(proc)
            shutil.rmtree(profile, ignore_errors=True)
            text = "".join(errors)
            if "sandbox" in text.lower():
                raise BrowserUnavailable("chromium cannot start its sandbox here:\n" + text)
            raise AssertionError(f"chromium exited ({proc.returncode}) before DevTools "
                                 f"listened:\n{text}")
        stderr_task = asyncio.ensure_future(_drain(proc.stderr, errors))
        try:
            ws = await websockets.connect(url, max_size=None, open_timeout=START_TIMEOUT)
        except BaseException:
            stderr_task.cancel()
            await _kill(proc)
            shutil.rmtree(profile, ignore_errors=True)
            raise
        return cls(proc, ws, profile, stderr_task, errors)

    async def _read(self):
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if "id" in msg:
                    fut = self._calls.pop(msg["id"], None)
                    if fut is None or fut.done():
                        continue
                    if "error" in msg:
                        fut.set_exception(AssertionError(f"CDP error: {msg['error']}"))
                    else:
                        fut.set_result(msg.get("result", {}))
                    continue
                key = (msg.get("method"), msg.get("sessionId"))
                if key in self._listeners:
                    self._listeners[key](msg.get("params", {}))
                for w in list(self._waiters):
                    if w[0] == msg.get("method") and w[1] == msg.get("sessionId"):
                        self._waiters.remove(w)
                        if not w[2].done():
                            w[2].set_result(msg.get("params", {}))
        except websockets.ConnectionClosed:
            pass
        finally:
            gone = AssertionError("the browser's DevTools connection closed; stderr:\n"
                                  + "".join(self.stderr[-20:]))
            for fut in [*self._calls.values(), *(w[2] for w in self._waiters)]:
                if not fut.done():
                    fut.set_exception(gone)

    async def call(self, method, session=None, **params):
        """One CDP command; its result, or AssertionError with the browser's error."""
        cid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._calls[cid] = fut
        msg = {"id": cid, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        await self.ws.send(json.dumps(msg))
        return await asyncio.wait_for(fut, CALL_TIMEOUT)

    def expect(self, method, session=None):
        """A future for the next event `method` (register before causing it)."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append([method, session, fut])
        return fut

    async def new_page(self):
        target = (await self.call("Target.createTarget", url="about:blank"))["targetId"]
        session = (await self.call("Target.attachToTarget", targetId=target,
                                   flatten=True))["sessionId"]
        page = Page(self, target, session)
        await page.call("Page.enable")
        await page.call("Runtime.enable")
        return page

    async def close(self):
        """Stops the browser: Browser.close, SIGKILL if it lingers; removes its profile."""
        try:
            if self.proc.returncode is None:
                try:
                    await asyncio.wait_for(self.call("Browser.close"), 5)
                except (AssertionError, asyncio.TimeoutError, websockets.ConnectionClosed):
                    pass
                try:
                    await asyncio.wait_for(self.proc.wait(), 5)
                except asyncio.TimeoutError:
                    pass
            await self.ws.close()
        finally:
            await _kill(self.proc)
            self._reader.cancel()
            self._stderr_task.cancel()
            shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    def __init__(self, browser, target, session):
        self.browser = browser
        self.target = target
        self.session = session
        self.exceptions = []
        # Uncaught JavaScript errors of the page (the tests assert there are none).
        browser._listeners[("Runtime.exceptionThrown", session)] = \
            lambda params: self.exceptions.append(params.get("exceptionDetails", params))

    def call(self, method, **params):
        return self.browser.call(method, self.session, **params)

    def expect(self, method):
        return self.browser.expect(method, self.session)

    async def goto(self, url):
        loaded = self.expect("Page.loadEventFired")
        res = await self.call("Page.navigate", url=url)
        if res.get("errorText"):
            raise AssertionError(f"navigating to {url}: {res['errorText']}")
        await asyncio.wait_for(loaded, CALL_TIMEOUT)

    async def reload(self):
        loaded = self.expect("Page.loadEventFired")
        await self.call("Page.reload", ignoreCache=True)
        await asyncio.wait_for(loaded, CALL_TIMEOUT)

    async def eval(self, expression):
        """The value of a JavaScript expression (a promise is awaited)."""
        res = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                              returnByValue=True)
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            raise AssertionError(d.get("exception", {}).get("description") or d.get("text"))
        return res["result"].get("value")

    async def click(self, selector):
        """A left click at the middle of the element (as a mouse does)."""
        x, y = await self.eval(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                            clickCount=1)

    async def type(self, selector, text):
        """Clicks into a field, selects what it holds and types `text` over it."""
        await self.click(selector)
        await self.eval(f"document.querySelector({json.dumps(selector)}).select()")
        await self.call("Input.insertText", text=text)

    async def press_enter(self):
        await self.call("Input.dispatchKeyEvent", type="keyDown", key="Enter", code="Enter",
                        windowsVirtualKeyCode=13, text="\r")
        await self.call("Input.dispatchKeyEvent", type="keyUp", key="Enter", code="Enter",
                        windowsVirtualKeyCode=13)

    async def wait_for(self, container, pattern, count=1, timeout=20.0):
        """The texts of `container`'s children once `count` of them match the
        regular expression `pattern` (a MutationObserver in the page, no polling)."""
        js = f"""new Promise((resolve, reject) => {{
          const box = document.querySelector({json.dumps(container)});
          const rx = new RegExp({json.dumps(pattern)});
          const texts = () => [...box.children].map((e) => e.textContent);
          const ready = () => texts().filter((t) => rx.test(t)).length >= {int(count)};
          if (ready()) return resolve(texts());
          const ob = new MutationObserver(() => {{
            if (ready()) {{ ob.disconnect(); clearTimeout(timer); resolve(texts()); }}
          }});
          const timer = setTimeout(() => {{
            ob.disconnect();
            reject(new Error("no " + {int(count)} + " lines matching " + rx + " in "
                             + JSON.stringify(texts())));
          }}, {int(timeout * 1000)});
          ob.observe(box, {{childList: true, subtree: true, characterData: true}});
        }})"""
        return await self.eval(js)


async def _devtools_url(proc, errors):
    """The ws:// address Chromium prints on stderr, or None if it exited first."""
    rx = re.compile(r"DevTools listening on (ws://\S+)")
    while True:
        line = await proc.stderr.readline()
        if not line:
            return None
        text = line.decode("utf-8", "replace")
        errors.append(text)
        m = rx.search(text)
        if m:
            return m.group(1)


async def _drain(stream, into):
    """Keeps reading the browser's stderr (a full pipe would block it)."""
    while True:
        line = await stream.readline()
        if not line:
            return
        into.append(line.decode("utf-8", "replace"))
        del into[:-200]


async def _kill(proc):
    """SIGKILL to the browser's process group (its renderers and helpers too)."""
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass
    await proc.wait()
