"""What the "dobj" logger says during a part of a test (test_cluster.py,
test_cluster_dev.py, test_cluster_hostile.py): lines the tests wait for
(a lease lost, a row ignored), logged from the runtime on the event loop."""
import asyncio
import logging
import re


class DobjLog(logging.Handler):
    """`with DobjLog() as log:` collects the logger's messages (WARNING and
    up) in log.lines while the block runs."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []
        self._new = None

    def emit(self, record):
        self.lines.append(record.getMessage())
        if self._new is not None:
            self._new.set()

    async def wait(self, pattern="", timeout=10):
        """The first line that matches `pattern` (re.search), once it came."""
        async def seen():
            while True:
                for line in self.lines:
                    if re.search(pattern, line):
                        return line
                self._new = asyncio.Event()
                await self._new.wait()
        return await asyncio.wait_for(seen(), timeout)

    def __enter__(self):
        logging.getLogger("dobj").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("dobj").removeHandler(self)
