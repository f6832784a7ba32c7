"""The fake core behind feature tests answers as the real hub does (same calls, same answers)."""
from __future__ import annotations

from concurrent.futures import Future

from controller.core.context import Realization
from tests.unit.fakecontext import FakeCore, fake_context
from tests.unit.hubtest import A, B, Fabric, run
from controller.store import open_store

UNKNOWN = 0xDEAD


def scenario(ctx, realize, answer) -> list:
    """Calls a feature makes, with the two points where the core does its work."""
    seen = []
    g1 = ctx.changed()
    g2 = ctx.changed()
    seen.append(g2 > g1)
    seen.append(ctx.realization([A], g2))          # not reconciled yet
    realize()
    seen.append(ctx.realization([A], g2))          # reconciled
    seen.append(ctx.realization([A, B], g1))       # an older generation is held too
    seen.append(ctx.realization([A, UNKNOWN], g2))  # a switch that is not there
    seen.append(ctx.realization([], g2))           # nothing to wait for
    seen.append(ctx.ready(A))
    seen.append(ctx.ready(UNKNOWN))
    seen.append(A in ctx.view().switches and UNKNOWN not in ctx.view().switches)
    answers: list[Future] = []
    seen.append(ctx.request(A, lambda channel: channel.aggregate(63, 0, 0), answers.append))
    seen.append(ctx.request(UNKNOWN, lambda channel: 1, answers.append))
    answer()
    seen.append([f.result()[0] for f in answers])
    return seen


def test_fake_core_answers_like_the_hub():
    fab = Fabric()
    fab.connect()
    fab.settle()
    real = scenario(fab.hub.features[0].ctx, lambda: run(fab.hub), lambda: run(fab.hub))

    class Switch:
        def aggregate(self, *a):
            return 0, 0, 0
    core = FakeCore(switches={A, B})
    fake = scenario(fake_context(core, open_store(":memory:")), core.realize,
                    lambda: core.answer(Switch()))
    assert fake == real
    assert real[1] is Realization.PENDING and real[2] is Realization.DONE
    assert real[4] is Realization.FAILED and real[-1] == [0]
