import gc

import pytest

import dobj

GOLDEN = [
    ("mykey", "http://foo/", "59002eb8cf872e541722977a258a12d6a93bbe8192b502e1c0cb250aa91af234"),
    ("test-unique-key", "foo", "6a248adcdc1638376a64c74646a2ea589649c6cb40bb459a775f741671d6f99e"),
    ("test-unique-key", "bar", "f83eca8872c7745307e563de8981cda073df756760148d2245d75c07d20ed717"),
    ("test-unique-key", "", "b9724b681bce7a32c115e2a48e41945c9f779d558c7c9af0aa2acb3959ba450f"),
    ("test-unique-key", "hello world", "daae68144c0ceee69f4abc3b191574e94f89e87ef1eb599149ff716cf78da8df"),
    ("my-unique-key", "foo", "6d0b43246317379a4509e873874250fac7a6c5f99e6a3ce081ddc890532854b3"),
]


class Counter(dobj.DurableObject):
    constructed = 0

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        type(self).constructed += 1
        self.n = 0

    async def fetch(self, request):
        n = self.n
        self.n += 1
        return dobj.Response(str(n))


@pytest.fixture
def rt():
    runtime = dobj.Runtime(env={"GREETING": "hi"})
    yield runtime
    runtime.close()
    gc.collect()


@pytest.fixture
def counter(rt):
    Counter.constructed = 0
    return rt.bind("COUNTER", Counter, unique_key="test-unique-key")
