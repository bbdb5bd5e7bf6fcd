"""route_node.py's node with two more methods: `stuck(seconds)` blocks the
node's event loop (its runtime) while the node's network thread still
answers pings, as a handler in a busy loop does; `name_of()` is the
object's ctx.id.name.  Same arguments and commands as route_node.py."""
import asyncio
import time

import route_node


class Box(route_node.Box):
    async def stuck(self, seconds):
        time.sleep(seconds)  # noqa: ASYNC251 - the point: the runtime cannot run
        return "unstuck"

    async def name_of(self):
        return self.ctx.id.name


route_node.Box = Box

if __name__ == "__main__":
    asyncio.run(route_node.main())
