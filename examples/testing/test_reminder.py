import pytest

import dobj
from dobj import testing


class Reminder(dobj.DurableObject):
    deliver = staticmethod(lambda text, info: True)  # replaced by the tests

    def remind_at(self, when, text):                  # an RPC method
        self.ctx.storage.put("text", text)
        self.ctx.storage.set_alarm(when)

    def alarm(self, info):
        if not Reminder.deliver(self.ctx.storage.get("text"), info):
            raise RuntimeError("delivery failed")     # the alarm is retried
        self.ctx.storage.put("sent_after", info.retry_count + 1)


@pytest.fixture
def reminders(dobj_runtime):  # per test: a fresh runtime, virtual time, its own storage folder
    return dobj_runtime.bind("REMINDER", Reminder)


@pytest.mark.asyncio
async def test_retries_a_failed_delivery_in_no_wall_clock_time(dobj_runtime, reminders,
                                                               monkeypatch, caplog):
    tries = []

    def deliver(text, info):
        tries.append((text, info.retry_count))
        return len(tries) == 3                        # the third try gets through

    monkeypatch.setattr(Reminder, "deliver", staticmethod(deliver))
    stub = reminders.get_by_name("ada")
    await stub.remind_at(dobj_runtime.now() + 60 * 1000, "call Bob")
    await dobj_runtime.advance(59)
    assert tries == []                                # never early
    await dobj_runtime.advance(1 + (2 + 4) * 1.25)    # its time, then both retries
    assert tries == [("call Bob", 0), ("call Bob", 1), ("call Bob", 2)]
    assert len([r for r in caplog.records if r.name == "dobj"]) == 2  # each failure logged
    sent_after = await testing.run_in_durable_object(
        stub, lambda instance, ctx: ctx.storage.get("sent_after"))
    assert sent_after == 3


def test_runs_a_scheduled_alarm_now(dobj_runtime, reminders, monkeypatch):  # a plain def test
    sent = []
    monkeypatch.setattr(Reminder, "deliver", staticmethod(lambda text, info: sent.append(text) or True))
    assert dobj_runtime.list_durable_object_ids(reminders) == []  # nothing from the last test
    stub = reminders.get_by_name("ada")
    dobj_runtime.run(stub.remind_at(dobj_runtime.now() + 24 * 3600 * 1000, "tomorrow"))
    assert dobj_runtime.run_durable_object_alarm(stub) is True
    assert sent == ["tomorrow"]
    assert dobj_runtime.run_durable_object_alarm(stub) is False  # it ran and is gone
