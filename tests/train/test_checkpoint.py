"""RNG state round trips, and a checkpoint whose sampler ran on another device type is refused by name."""

import pytest
import torch

from policyforge.train.checkpoint import load_trainer_state, rng_state, set_rng_state
from policyforge.train.config import ConfigError


def test_rng_state_round_trip_through_trainer_pt_continues_the_streams(tmp_path):
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(4)
    torch.save({"rng": rng_state(gen)}, tmp_path / "trainer.pt")
    expected = (torch.rand(3, generator=gen), torch.rand(3))
    fresh = torch.Generator().manual_seed(99)
    set_rng_state(load_trainer_state(tmp_path)["rng"], fresh)
    assert torch.equal(torch.rand(3, generator=fresh), expected[0]) and torch.equal(torch.rand(3), expected[1])


def test_sampler_state_from_another_device_type_is_refused():
    gen = torch.Generator().manual_seed(0)
    state = rng_state(gen)
    with pytest.raises(ConfigError, match="sampler ran on cuda, this run's model.device puts it on cpu"):
        set_rng_state({**state, "sampler_device": "cuda"}, gen)
    # a checkpoint from before the device was recorded: a CUDA generator's state is 16 bytes (seed, offset)
    legacy = {k: v for k, v in state.items() if k != "sampler_device"}
    with pytest.raises(ConfigError, match="another device type"):
        set_rng_state({**legacy, "sampler": torch.zeros(16, dtype=torch.uint8)}, gen)
    set_rng_state(legacy, gen)  # the same kind of generator: restored


def test_only_step_folders_with_ascii_digits_are_checkpoints(tmp_path):
    from policyforge.train.checkpoint import complete_checkpoints, step_of

    for name in ("step_000002", "step_000010", "step_²", "step_000003.tmp", "step_", "other"):
        (tmp_path / name).mkdir()
    assert [step_of(tmp_path / n) for n in ("step_000002", "step_²", "step_", "step_000003.tmp")] == [2, None, None,
                                                                                                      None]
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_000002", "step_000010"]
