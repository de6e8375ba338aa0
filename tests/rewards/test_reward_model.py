"""Reward models and ensembles: a batch scores as each row alone, what is refused, and how an ensemble
adds a verifier and a model into components."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from policyforge.data.tasks import Example
from policyforge.models.tiny import TinySpec, char_tokenizer, tiny_model
from policyforge.rewards.model import Ensemble, RewardModel
from policyforge.rewards.score import RewardError, score_parts


def save_reward_model(path, num_labels: int = 1, seed: int = 0) -> str:
    """A 2-layer sequence classifier on the built-in character tokenizer, saved as a user's model would be."""
    tok = char_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, num_labels=num_labels,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaForSequenceClassification(config)
    torch.nn.init.normal_(model.score.weight, std=1.0)  # scores of order 1, so rows differ clearly
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    return save_reward_model(tmp_path_factory.mktemp("rm"))


def test_a_batch_scores_each_row_as_it_scores_alone(rm_dir):
    rm = RewardModel(rm_dir, batch_size=2)  # 3 rows: two batches, padding in the first
    prompts, completions = ["rev:abc=", "rev:hello=", "1+2="], ["cba", "ol", "3"]
    together = rm.scores(prompts, completions)
    tok = rm.tokenizer
    alone = []
    for p, c in zip(prompts, completions):
        ids = torch.tensor([tok(p + c)["input_ids"]])  # no padding at all
        with torch.no_grad():
            alone.append(float(rm.model(input_ids=ids).logits[0, 0]))
    assert together.tolist() == pytest.approx(alone, abs=1e-5)
    assert len(set(round(x, 3) for x in alone)) == 3  # the rows really differ: padding could not hide


def test_what_is_not_a_reward_model_is_refused_by_name(tmp_path, rm_dir):
    with pytest.raises(RewardError, match="not a model folder"):
        RewardModel(str(tmp_path / "nowhere"))
    lm = tmp_path / "lm"
    tok = char_tokenizer()
    tiny_model(tok, TinySpec(hidden=32, layers=1, heads=2, intermediate=64)).save_pretrained(lm)
    tok.save_pretrained(lm)
    # loaded as a classifier it would get a fresh random head and score noise
    with pytest.raises(RewardError, match="is a LlamaForCausalLM, not a reward model"):
        RewardModel(str(lm))
    with pytest.raises(RewardError, match="has 2 outputs; a reward model has one"):
        RewardModel(save_reward_model(tmp_path / "two", num_labels=2))


def _examples():
    return [Example("rev:abc=", "cba", {}, 0), Example("rev:dog=", "god", {}, 1)]


def test_an_ensemble_adds_the_verifier_and_the_weighted_model_as_components(rm_dir):
    rm = RewardModel(rm_dir)
    exs, outs = _examples(), ["cba", "dog"]
    learned = rm.scores([e.prompt for e in exs], outs)
    answers = {"rev:abc=": "cba", "rev:dog=": "god"}
    s = score_parts(Ensemble(lambda prompt, completion, **_: float(completion == answers[prompt]), rm, weight=0.5),
                    exs, outs)
    a, b = learned.tolist()
    assert s.names == ("correct", "reward_model")
    assert s.components.flatten().tolist() == pytest.approx([1.0, 0.5 * a, 0.0, 0.5 * b])
    assert s.scores.tolist() == pytest.approx([1.0 + 0.5 * a, 0.5 * b])
    assert s.correct().tolist() == [True, False]  # the verifier decides what is solved, not the model's share


def test_a_dict_reward_keeps_its_components_and_a_model_alone_is_a_number_reward(rm_dir):
    rm = RewardModel(rm_dir)
    exs, outs = _examples(), ["cba", "dog"]
    learned = rm.scores([e.prompt for e in exs], outs)
    s = score_parts(Ensemble(lambda p, c, **_: {"fmt": 1.0, "len": float(len(c))}, rm), exs, outs)
    assert s.names == ("fmt", "len", "reward_model") and s.scores.tolist() == pytest.approx((4.0 + learned).tolist())
    alone = score_parts(Ensemble(None, rm, weight=2.0), exs, outs)
    assert alone.names == () and alone.components is None and alone.scores.tolist() == pytest.approx((2 * learned).tolist())
    with pytest.raises(RewardError, match="component named 'reward_model'"):
        score_parts(Ensemble(lambda p, c, **_: {"reward_model": 1.0}, rm), exs, outs)
