"""Simulated process groups for part-file tests: one thread per rank and a barrier a killed rank can break.

``threading.Barrier.abort`` can also break a barrier the other ranks have just passed (they re-check its
state on waking), which real processes never see; this one counts arrivals per generation instead.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable


class Stopped(Exception):
    """A rank's barrier gave up: another rank was killed (the launcher would stop this one)."""


class Group:
    def __init__(self, world: int) -> None:
        self.world = world
        self.cond = threading.Condition()
        self.arrived: dict[int, int] = defaultdict(int)
        self.killed = False

    def barrier(self) -> Callable[[], None]:
        """A fresh rank's barrier (each rank counts its own generations)."""
        generation = [0]

        def wait() -> None:
            with self.cond:
                number = generation[0]
                generation[0] += 1
                self.arrived[number] += 1
                self.cond.notify_all()
                while self.arrived[number] < self.world:
                    if self.killed:
                        raise Stopped
                    self.cond.wait(0.5)

        return wait

    def kill(self) -> None:
        with self.cond:
            self.killed = True
            self.cond.notify_all()

    def run(self, rank_main: Callable[[int, Callable[[], None]], object], killed: type[BaseException]) -> dict:
        """Run ``rank_main(rank, barrier)`` for every rank in threads; {rank: result} of the ranks that finished."""
        results: dict[int, object] = {}

        def target(rank: int) -> None:
            try:
                results[rank] = rank_main(rank, self.barrier())
            except (killed, Stopped):
                self.kill()

        threads = [threading.Thread(target=target, args=(rank,)) for rank in range(self.world)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results
