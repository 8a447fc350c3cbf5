from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from activator.lb_policy import PowerOfTwoChoices, RoundRobin, first_available, policy_for


@dataclass
class Pod:
    name: str
    in_flight: int = 0
    limit: int = 1


class Scripted(random.Random):
    """A random source that returns the given values, to pin each choice down."""

    def __init__(self, ranges: list[int], bits: list[int] = ()) -> None:  # type: ignore[assignment]
        super().__init__(0)
        self.ranges, self.bits = list(ranges), list(bits)
        self.calls: list[tuple[str, int]] = []

    def randrange(self, n: int) -> int:  # type: ignore[override]
        self.calls.append(("randrange", n))
        return self.ranges.pop(0)

    def getrandbits(self, k: int) -> int:
        self.calls.append(("getrandbits", k))
        return self.bits.pop(0)


def test_power_of_two_with_one_pod_takes_it_without_drawing() -> None:
    rng = Scripted([])
    pods = [Pod("a", in_flight=5)]
    assert PowerOfTwoChoices(rng)(pods) is pods[0]
    assert rng.calls == []


def test_power_of_two_with_no_pods_finds_none() -> None:
    assert PowerOfTwoChoices(Scripted([]))([]) is None


def test_power_of_two_with_two_pods_compares_both_and_takes_the_lighter() -> None:
    a, b = Pod("a", in_flight=3), Pod("b", in_flight=1)
    rng = Scripted([])
    assert PowerOfTwoChoices(rng)([a, b]) is b
    assert PowerOfTwoChoices(rng)([b, a]) is b
    assert rng.calls == []


@pytest.mark.parametrize(("bit", "expected"), [pytest.param(0, "b", id="bit-0-takes-the-second"),
                                                pytest.param(1, "a", id="bit-1-keeps-the-first")])
def test_power_of_two_breaks_a_tie_with_a_random_bit(bit: int, expected: str) -> None:
    a, b = Pod("a", in_flight=2), Pod("b", in_flight=2)
    assert PowerOfTwoChoices(Scripted([], [bit]))([a, b]).name == expected


def test_power_of_two_draws_two_distinct_pods_among_many() -> None:
    pods = [Pod(str(i), in_flight=10 + i) for i in range(5)]
    # first draw 3, second draw 3 of range(4) -> shifted past 3 to 4: pods 3 and 4 compared
    rng = Scripted([3, 3])
    assert PowerOfTwoChoices(rng)(pods).name == "3"
    assert rng.calls == [("randrange", 5), ("randrange", 4)]
    # second draw below the first keeps its index: pods 4 and 1 compared
    assert PowerOfTwoChoices(Scripted([4, 1]))(pods).name == "1"


def test_power_of_two_spreads_load_and_avoids_the_busiest_pod() -> None:
    pods = [Pod(str(i)) for i in range(4)]
    pods[0].in_flight = 100
    policy = PowerOfTwoChoices(random.Random(7))
    seen = Counter()
    for _ in range(2000):
        pick = policy(pods)
        seen[pick.name] += 1
    assert seen["0"] == 0  # it always loses the comparison
    assert all(seen[n] > 400 for n in "123")


def test_power_of_two_keeps_in_flight_balanced_when_the_caller_counts_picks() -> None:
    pods = [Pod(str(i)) for i in range(8)]
    policy = PowerOfTwoChoices(random.Random(1))
    for _ in range(800):
        policy(pods).in_flight += 1
    counts = [p.in_flight for p in pods]
    assert max(counts) - min(counts) <= 3


def test_first_available_takes_the_first_pod_with_a_free_slot() -> None:
    pods = [Pod("a", 1, 1), Pod("b", 0, 1), Pod("c", 0, 1)]
    assert first_available(pods).name == "b"
    pods[1].in_flight = 1
    assert first_available(pods).name == "c"
    pods[2].in_flight = 1
    assert first_available(pods) is None


def test_round_robin_cycles_and_skips_full_pods() -> None:
    pods = [Pod("a", 0, 5), Pod("b", 5, 5), Pod("c", 0, 5)]
    rr = RoundRobin()
    assert [rr(pods).name for _ in range(4)] == ["a", "c", "a", "c"]


def test_round_robin_finds_none_when_every_pod_is_full() -> None:
    pods = [Pod("a", 4, 4), Pod("b", 4, 4)]
    assert RoundRobin()(pods) is None


def test_round_robin_starts_over_when_the_pod_list_shrinks() -> None:
    rr = RoundRobin()
    pods = [Pod(n, 0, 9) for n in "abcd"]
    assert [rr(pods).name for _ in range(3)] == ["a", "b", "c"]
    assert rr(pods[:2]).name == "a"


@pytest.mark.parametrize(("cc", "kind"), [
    pytest.param(0, PowerOfTwoChoices, id="cc0-power-of-two"),
    pytest.param(1, type(first_available), id="cc1-first-available"),
    pytest.param(3, type(first_available), id="cc3-first-available"),
    pytest.param(4, RoundRobin, id="cc4-round-robin"),
])
def test_policy_follows_container_concurrency(cc: int, kind: type) -> None:
    assert isinstance(policy_for(cc, random.Random(0)), kind)
