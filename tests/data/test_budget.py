"""Knapsack RL's budget allocation (data/budget.py): the value, the knapsack against a dynamic programme, the
authors' rules for prompts without an estimate, always or never solved, and the fallback; the prompt history."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from policyforge.data.budget import (PromptHistory, allocate, allocation_value, info_gain, knapsack,
                                     marginal_value, nonzero_gradient_prob, rollouts_needed)


def test_the_value_is_the_chance_of_a_gradient_times_the_information_gain():
    assert nonzero_gradient_prob(8, 0.5) == pytest.approx(1 - 2 * 0.5**8)
    assert nonzero_gradient_prob(3, 0.0) == 0.0 and nonzero_gradient_prob(3, 1.0) == 0.0
    assert info_gain(1 / 3) == pytest.approx(4 / 27)
    grid = [k / 100 for k in range(1, 100)]
    assert max(grid, key=info_gain) == pytest.approx(0.33)  # peaks at p = 1/3
    assert allocation_value(4, 0.2) == pytest.approx((1 - 0.2**4 - 0.8**4) * 0.2 * 0.8**2)


def test_rollouts_needed_for_a_success_and_a_failure_at_90_percent():
    assert rollouts_needed(0.5, 2, 128) == 2 + int(math.log(0.1) / math.log(0.5)) == 5  # the authors' count
    assert rollouts_needed(0.9, 2, 128) == 2 + int(math.log(0.1) / math.log(0.9)) == 23
    assert rollouts_needed(0.01, 2, 128) == 128 and rollouts_needed(0.01, 2, 1000) == 231  # at most N_up


def test_the_marginal_value_is_the_difference_of_values_and_stays_positive_for_large_groups():
    for n, p in ((2, 0.5), (7, 0.1), (30, 0.9)):
        assert marginal_value(n, p) == pytest.approx(allocation_value(n + 1, p) - allocation_value(n, p), rel=1e-9)
    assert all(marginal_value(n, 0.5) > marginal_value(n + 1, 0.5) > 0 for n in range(2, 120))


def test_large_groups_of_alike_prompts_are_shared_out_evenly():
    assert knapsack([0.5] * 4, 256, 2, 128) == [64] * 4  # differences of values would round to 0 past n ~ 53
    assert allocate([0.5] * 4, 64, 2, 128) == [64] * 4


def _best_by_dynamic_programme(rates, budget, low, high) -> float:
    """The authors' form: the best summed value over every allocation with sum <= budget, by DP."""
    best = {0: 0.0}
    for p in rates:
        nxt = {}
        for spent, v in best.items():
            for n in range(low, high + 1):
                if spent + n <= budget:
                    nxt[spent + n] = max(nxt.get(spent + n, -1.0), v + allocation_value(n, p))
        best = nxt
    return max(best.values())


@pytest.mark.parametrize("seed", range(6))
def test_the_greedy_knapsack_reaches_the_dynamic_programme_s_optimum(seed):
    rng = random.Random(seed)
    rates = [rng.choice([0.05, 0.2, 1 / 3, 0.5, 0.7, 0.95]) for _ in range(rng.randint(2, 5))]
    budget, low, high = rng.randint(2 * len(rates), 8 * len(rates)), 2, rng.randint(6, 20)
    sizes = knapsack(rates, budget, low, high)
    assert all(low <= n <= high for n in sizes) and sum(sizes) == min(budget, high * len(rates))
    got = sum(allocation_value(n, p) for n, p in zip(sizes, rates))
    assert got == pytest.approx(_best_by_dynamic_programme(rates, budget, low, high), rel=1e-12)


def test_the_knapsack_gives_more_rollouts_to_rarer_successes_and_stops_at_the_cap():
    sizes = knapsack([0.5, 0.1], 40, 2, 128)
    assert sizes[1] > sizes[0] and sum(sizes) == 40
    assert knapsack([0.5, 0.1], 40, 2, 6) == [6, 6]  # the rest cannot be placed
    with pytest.raises(ValueError, match="cannot give 3 prompts 2 each"):
        knapsack([0.5] * 3, 5, 2, 8)


def test_prompts_without_an_estimate_keep_the_uniform_size_and_the_total_is_the_uniform_budget():
    assert allocate([None] * 4, 8, 2, 128) == [8] * 4
    sizes = allocate([None, 0.5, 0.25, None], 8, 2, 128)  # 16 left, 5 + 10 needed: the 1 more goes to the others
    assert sizes == [8 + 1, *knapsack([0.5, 0.25], 15, 2, 128), 8] and sum(sizes) == 32


def test_always_solved_prompts_get_the_minimum_and_the_never_solved_the_surplus():
    # 0.5 needs 2 + 3, 0.25 needs 2 + 8 rollouts: the knapsack gets 15 of the 32 - 2 - 2 = 28 left, and the 13 more
    # go to the never-solved prompt
    sizes = allocate([1.0, 0.0, 0.5, 0.25], 8, 2, 128)
    assert sizes[0] == 2 and sum(sizes) == 32
    assert sizes[2] + sizes[3] == rollouts_needed(0.5, 2, 128) + rollouts_needed(0.25, 2, 128) == 15
    assert sizes[1] == 2 + 13
    assert sizes[2:] == knapsack([0.5, 0.25], 15, 2, 128)


def test_without_never_solved_prompts_the_surplus_goes_to_every_prompt_outside_0_p_1():
    sizes = allocate([1.0, None, 0.5], 8, 2, 128)  # left 24 - 2 - 8 = 14 for 0.5, which needs 5: 9 spread
    assert sizes == [2 + 5, 8 + 4, 5]


def test_with_no_prompt_in_0_p_1_the_budget_goes_to_the_never_solved_or_stays_uniform():
    assert allocate([0.0, 1.0, 0.0], 8, 2, 128) == [2 + 9, 2, 2 + 9]  # 24 - 6 = 18 more, half each
    assert allocate([1.0, 1.0, None], 8, 2, 128) == [8, 8, 8]


def test_when_the_mixed_prompts_need_more_than_is_left_the_knapsack_gets_it_all():
    rates = [0.05, 0.1, 0.9]  # they need 45 + 22 + 22 rollouts, more than 24
    sizes = allocate(rates, 8, 2, 128)
    assert sizes == knapsack(rates, 24, 2, 128) and sum(sizes) == 24


def test_what_the_knapsack_cannot_place_is_spread_over_its_prompts():
    sizes = allocate([0.5, 0.5], 40, 2, 6)  # 80 left, 10 needed, no other prompt to explore: the knapsack gets 80
    assert sizes == [40, 40]


def test_every_allocation_spends_exactly_the_uniform_budget():
    rng = random.Random(0)
    for _ in range(200):
        est = [rng.choice([None, 0.0, 1.0, rng.random()]) for _ in range(rng.randint(1, 9))]
        group, high = rng.randint(2, 16), rng.randint(16, 64)  # 2 <= group_size <= N_up, as check_allocation asks
        sizes = allocate(est, group, 2, high)
        assert sum(sizes) == len(est) * group and min(sizes) >= 2
        mixed = [n for n, p in zip(sizes, est) if p is not None and 0 < p < 1]
        assert all(n <= high for n in mixed)  # the knapsack's prompts stay within N_up


def test_the_history_estimates_from_the_last_visit_or_the_latest_16_rollouts():
    h = PromptHistory()
    h.observe(["a"] * 4, [True, False, False, False])
    assert h.estimate("a") is None and h.estimate("b") is None  # fewer than 8 rollouts on record
    h.observe(["a"] * 4 + ["b"] * 20, [True] * 4 + [True] * 5 + [False] * 15)
    assert h.estimate("a") == 5 / 8  # the last visit had 4 (< 16): the latest 8 (all there are)
    assert h.estimate("b") == 5 / 20  # a visit of 20: its own rate
    h.observe(["a"] * 16, [False] * 16)
    assert h.estimate("a") == 0.0
    copy = PromptHistory()
    copy.load_state_dict(h.state_dict())
    assert all(copy.estimate(k) == h.estimate(k) for k in ("a", "b"))
    assert list(itertools.islice(copy.recent["a"], 3)) == [0, 0, 0]
