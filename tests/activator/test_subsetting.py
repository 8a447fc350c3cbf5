from __future__ import annotations

import pytest

from activator.subsetting import assign_slice, infer_index

PODS = [f"10.0.0.{i}:8012" for i in range(10, 30)]  # already in string order


def test_index_is_the_position_among_string_sorted_ips() -> None:
    ips = ["10.0.0.9", "10.0.0.10", "10.0.0.2"]
    # string order: 10.0.0.10 < 10.0.0.2 < 10.0.0.9
    assert infer_index(ips, "10.0.0.10") == (0, 3)
    assert infer_index(ips, "10.0.0.2") == (1, 3)
    assert infer_index(ips, "10.0.0.9") == (2, 3)


def test_index_is_minus_one_when_this_activator_is_not_listed() -> None:
    assert infer_index(["10.0.0.1", "10.0.0.3"], "10.0.0.2") == (-1, 2)
    assert infer_index([], "10.0.0.2") == (-1, 0)


def test_duplicate_ips_count_once() -> None:
    assert infer_index(["a", "b", "a"], "b") == (1, 2)


@pytest.mark.parametrize(("index", "n"), [(-1, 3), (0, 1), (2, 1)])
def test_unassigned_or_single_activator_takes_every_pod(index: int, n: int) -> None:
    assert assign_slice(PODS, index, n) == PODS


def test_a_single_pod_is_shared_by_all_activators() -> None:
    assert assign_slice(PODS[:1], 3, 5) == PODS[:1]


def test_more_activators_than_pods_take_one_pod_each_modulo() -> None:
    pods = PODS[:3]
    assert [assign_slice(pods, i, 5) for i in range(5)] == [
        [pods[0]], [pods[1]], [pods[2]], [pods[0]], [pods[1]]]


def test_twenty_pods_three_activators_slice_plus_remnant() -> None:
    # 20 // 3 = 6 each; 20 % 3 = 2 remnants go to activators 0 and 1
    a0, a1, a2 = (assign_slice(PODS, i, 3) for i in range(3))
    assert a0 == PODS[0:6] + [PODS[18]]
    assert a1 == PODS[6:12] + [PODS[19]]
    assert a2 == PODS[12:18]


def test_every_pod_is_assigned_exactly_once_when_pods_outnumber_activators() -> None:
    for n in range(1, 8):
        for p in range(n, 25):
            pods = PODS[:p] if p <= len(PODS) else [f"p{i:03}" for i in range(p)]
            taken = [x for i in range(n) for x in assign_slice(pods, i, n)]
            assert sorted(taken) == sorted(pods), (n, p)
