import pytest

from policyforge.train.config import Config


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory) -> str:
    """A 2-layer, 64-wide built-in model saved with save_pretrained (loaded back through the HF path)."""
    from policyforge.models.tiny import TinySpec, char_tokenizer, tiny_model

    path = tmp_path_factory.mktemp("tiny-model")
    tok = char_tokenizer()
    tiny_model(tok, TinySpec(hidden=64, layers=2, heads=4, intermediate=128)).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture
def tiny_cfg(tmp_path, small_model_dir) -> Config:
    """A run of a second or two: a small saved model, 2 prompts x 4 completions, 4 new tokens."""
    cfg = Config()
    cfg.model.path = small_model_dir
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
