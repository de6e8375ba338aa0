"""DAPO's soft overlong punishment (eq. 13) against hand values and a row-by-row reading of the equation."""

import pytest
import torch

from policyforge.rewards.overlong import soft_overlong_punishment


def eq13(length: int, l_max: int, l_cache: int) -> float:
    """The paper's three cases, one completion at a time."""
    if length <= l_max - l_cache:
        return 0.0
    if length <= l_max:
        return ((l_max - l_cache) - length) / l_cache
    return -1.0


def test_hand_values():
    lengths = torch.tensor([0, 80, 81, 90, 99, 100, 130])
    got = soft_overlong_punishment(lengths, max_len=100, buffer=20)
    torch.testing.assert_close(got, torch.tensor([0.0, 0.0, -0.05, -0.5, -0.95, -1.0, -1.0]))


def test_equals_the_equation_case_by_case():
    for l_max, l_cache in ((20, 4), (16, 16), (7, 1), (4096, 1024)):
        lengths = torch.arange(0, l_max + 5)
        want = torch.tensor([eq13(int(n), l_max, l_cache) for n in lengths])
        torch.testing.assert_close(soft_overlong_punishment(lengths, l_max, l_cache), want)


def test_factor_scales_the_whole_penalty():
    lengths = torch.tensor([10, 14, 16, 18])
    plain = soft_overlong_punishment(lengths, 16, 4)
    torch.testing.assert_close(soft_overlong_punishment(lengths, 16, 4, factor=0.5), 0.5 * plain)
    torch.testing.assert_close(soft_overlong_punishment(lengths, 16, 4, factor=0.0), torch.zeros(4))


def test_float_lengths_from_a_mask_give_the_same_values():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.float32)
    torch.testing.assert_close(soft_overlong_punishment(mask.sum(-1), 4, 2), torch.tensor([-0.5, -1.0]))


@pytest.mark.parametrize("buffer", [0, -1, 9])
def test_a_buffer_outside_one_to_max_len_is_refused(buffer):
    with pytest.raises(ValueError, match=f"buffer={buffer}"):
        soft_overlong_punishment(torch.tensor([3]), 8, buffer)
