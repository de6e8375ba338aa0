import pytest

from policyforge.train.config import Config


@pytest.fixture
def tiny_cfg(tmp_path) -> Config:
    """A run of seconds: the built-in tiny model, 2 prompts x 4 completions, 4 new tokens."""
    cfg = Config()
    cfg.data.task = "reversal"
    cfg.data.task_size = 4
    cfg.data.eval_size = 4
    cfg.rollout.prompts_per_step = 2
    cfg.rollout.group_size = 4
    cfg.rollout.max_new_tokens = 4
    cfg.train.steps = 2
    cfg.train.eval_every = 0
    cfg.train.pass_k = 2
    cfg.train.out_dir = str(tmp_path / "runs")
    cfg.train.run_name = "run"
    cfg.train.progress = False
    cfg.optim.lr = 1e-3
    return cfg
