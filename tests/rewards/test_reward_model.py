"""Reward models and ensembles: a batch scores as each row alone, what is refused, and how an ensemble
adds a verifier and a model into components."""

import json
from dataclasses import replace

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from policyforge.data.tasks import Example
from policyforge.models.tiny import TinySpec, char_tokenizer, tiny_model
from policyforge.rewards.model import Ensemble, RewardModel
from policyforge.rewards.score import RewardError, score_parts


def save_reward_model(path, num_labels: int = 1, seed: int = 0, positions: int = 2048) -> str:
    """A 2-layer sequence classifier on the built-in character tokenizer, saved as a user's model would be."""
    tok = char_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, num_labels=num_labels,
                         max_position_embeddings=positions,
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
    with pytest.raises(RewardError, match="'.*nowhere' does not exist"):
        RewardModel(str(tmp_path / "nowhere"))
    with pytest.raises(RewardError, match="not a model folder"):
        RewardModel(str(tmp_path))  # a folder, but no model in it
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


def test_the_model_s_share_never_makes_a_row_solved(rm_dir):
    rm = RewardModel(rm_dir)
    exs, outs = _examples(), ["cba", "dog"]
    learned = rm.scores([e.prompt for e in exs], outs)
    big = 5.0 / float(learned.abs().min())  # weight so that each row's model share alone is above 1 in size
    s = score_parts(Ensemble(lambda p, c, **_: {"exact": 0.0, "fmt": 0.5}, rm, weight=big), exs, outs)
    assert s.correct().tolist() == [False, False]  # the function gave 0.5 to both: nothing solved
    s = score_parts(Ensemble(lambda p, c, **_: {"exact": 1.0, "fmt": 0.0}, rm, weight=big), exs, outs)
    assert s.correct().tolist() == [True, True]


def test_the_config_pad_id_follows_the_tokenizer_so_a_row_scores_the_same_in_any_batch(tmp_path):
    # a tokenizer without a pad token pads with EOS; a config naming another pad id would make the model read
    # a padding position as the row's last token
    path = save_reward_model(tmp_path / "rm")
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    config["pad_token_id"] = 0
    (tmp_path / "rm" / "config.json").write_text(json.dumps(config))
    tok_config = json.loads((tmp_path / "rm" / "tokenizer_config.json").read_text())
    tok_config.pop("pad_token", None)
    (tmp_path / "rm" / "tokenizer_config.json").write_text(json.dumps(tok_config))
    rm = RewardModel(path)
    assert rm.tokenizer.pad_token_id == rm.tokenizer.eos_token_id == rm.model.config.pad_token_id
    together = rm.scores(["rev:abc=", "rev:hello="], ["cba", "olleh"])
    alone = [float(rm.scores([p], [c])[0]) for p, c in (("rev:abc=", "cba"), ("rev:hello=", "olleh"))]
    assert together.tolist() == pytest.approx(alone, abs=1e-5)


def test_bos_is_added_once_and_a_row_too_long_is_named(rm_dir, tmp_path):
    from tokenizers.processors import TemplateProcessing

    save_reward_model(tmp_path / "bos")
    tok = char_tokenizer()
    tok._tokenizer.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    tok.save_pretrained(tmp_path / "bos")  # a tokenizer that adds BOS, as Llama's does
    with_bos = RewardModel(str(tmp_path / "bos"))
    bos_id = with_bos.tokenizer.bos_token_id
    for text in ("rev:abc=cba", "<bos>rev:abc=cba"):  # plain, and a chat-rendered prompt that starts with it
        ids = with_bos._encode([text], ["row 0"])["input_ids"][0].tolist()
        assert ids[0] == bos_id and ids.count(bos_id) == 1, (text, ids)
    rm = RewardModel(rm_dir)
    long = "a" * (rm.max_tokens + 5)
    with pytest.raises(RewardError, match="data.jsonl, line 3 with its completion is .* tokens, more than the model's"):
        rm.scores([long], ["x"], ["data.jsonl, line 3"])


# a reward model's own chat format, unlike the policy's (tests/data/test_chat.py's TEMPLATE): it writes BOS itself,
# and its tokenizer adds BOS to plain text as Llama's does, so a doubled BOS would show
RM_TEMPLATE = "{{ bos_token }}{% for m in messages %}({{ m['role'] }}){{ m['content'] }};{% endfor %}"


def save_chat_reward_model(path, template: str = RM_TEMPLATE, positions: int = 2048) -> str:
    from tokenizers.processors import TemplateProcessing

    save_reward_model(path, positions=positions)
    tok = char_tokenizer()
    tok._tokenizer.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    tok.chat_template = template
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def chat_rm(tmp_path_factory):
    return save_chat_reward_model(tmp_path_factory.mktemp("chat-rm"))


SYSTEM, USER = {"role": "system", "content": "be brief"}, {"role": "user", "content": "rev:abc="}
# as data/chat.py leaves a conversation rendered with the policy's template: its text, and the messages kept
RENDERED = Example("<system>be brief<user>rev:abc=<assistant>", None, {}, 0, "chat.jsonl, line 1", [SYSTEM, USER])


def _alone(rm, ids) -> float:
    with torch.no_grad():
        return float(rm.model(input_ids=torch.tensor([ids])).logits[0, 0])


def test_a_rendered_row_is_scored_in_the_reward_model_s_own_template(chat_rm):
    rm = RewardModel(chat_rm)
    expected = "<bos>(system)be brief;(user)rev:abc=;(assistant)cba;"
    assert rm.scored_text(RENDERED, "cba") == expected
    ids = rm.tokenizer(expected, add_special_tokens=False)["input_ids"]
    assert ids[0] == rm.tokenizer.bos_token_id and ids.count(ids[0]) == 1 and len(ids) == len(expected) - 4
    (got,) = rm.score_examples([RENDERED], ["cba"]).tolist()
    assert got == pytest.approx(_alone(rm, ids), abs=1e-5)
    assert got == pytest.approx(float(rm.scores([expected], [""])[0]), abs=1e-5)  # the string scored directly
    assert got != pytest.approx(float(rm.scores([RENDERED.prompt], ["cba"])[0]), abs=1e-3)  # not the policy's text
    learned = score_parts(Ensemble(None, rm, weight=2.0), [RENDERED], ["cba"]).scores.tolist()
    assert learned == pytest.approx([2 * got], abs=1e-5)  # what an ensemble adds


def test_a_continued_assistant_message_ends_with_the_completion(chat_rm):
    prefill = Example("<user>rev:abc=<assistant>c", messages=[USER, {"role": "assistant", "content": "c"}])
    assert RewardModel(chat_rm).scored_text(prefill, "ba") == "<bos>(user)rev:abc=;(assistant)cba;"
    assert prefill.messages[-1] == {"role": "assistant", "content": "c"}  # the row's own message is unchanged


def test_plain_rows_and_a_model_without_a_template_score_prompt_plus_completion(chat_rm, rm_dir):
    rm, plain = RewardModel(chat_rm), Example("rev:abc=", index=1)
    assert rm.scored_text(plain, "cba") == "rev:abc=cba"
    no_template = RewardModel(rm_dir)
    assert no_template.template is None and no_template.scored_text(RENDERED, "cba") == RENDERED.prompt + "cba"
    assert no_template.score_examples([RENDERED], ["cba"]).tolist() == pytest.approx(
        no_template.scores([RENDERED.prompt], ["cba"]).tolist(), abs=1e-6)


def test_bos_is_added_row_by_row_so_a_mixed_batch_scores_each_row_as_alone(chat_rm):
    rm = RewardModel(chat_rm, batch_size=2)  # one batch: a templated row starting with BOS, a plain one lacking it
    rows, outs = [RENDERED, Example("rev:hello=", index=1)], ["cba", "olleh"]
    together = rm.score_examples(rows, outs).tolist()
    bos = rm.tokenizer.bos_token_id
    first = rm.tokenizer(rm.scored_text(RENDERED, "cba"), add_special_tokens=False)["input_ids"]
    second = [bos] + rm.tokenizer("rev:hello=olleh", add_special_tokens=False)["input_ids"]
    assert together == pytest.approx([_alone(rm, first), _alone(rm, second)], abs=1e-5)


def test_the_length_check_measures_the_reward_model_s_rendering(tmp_path):
    # "<bos>(system)be brief;(user)rev:abc=;(assistant);" is 45 tokens (BOS once) with an empty completion; the
    # policy's text "<system>be brief<user>rev:abc=<assistant>" is 42 with BOS, so measuring it would let 4 through
    rm = RewardModel(save_chat_reward_model(tmp_path / "rm", positions=48))
    assert rm.scored_text(RENDERED, "") == "<bos>(system)be brief;(user)rev:abc=;(assistant);"  # 1 + 44 characters
    rm.check_fits([RENDERED], 3)  # 45 + 3 = 48 fits
    with pytest.raises(RewardError, match="takes at most 48 tokens, but chat.jsonl, line 1's prompt is 45 in this "
                                          "model's chat template and a completion may add rollout.max_new_tokens=4"):
        rm.check_fits([RENDERED], 4)
    plain = Example("rev:" + "a" * 41 + "=", index=2)  # 46 characters, 47 tokens with the BOS its tokenizer adds
    with pytest.raises(RewardError, match="row 2's prompt is 47 and a completion may add rollout.max_new_tokens=2"):
        rm.check_fits([RENDERED, plain], 2)


def test_a_reward_model_template_that_refuses_a_conversation_names_the_row(tmp_path):
    refuses = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}"
               "{% endif %}({{ m['role'] }}){{ m['content'] }};{% endfor %}")
    rm = RewardModel(save_chat_reward_model(tmp_path / "rm", refuses))
    message = ("its chat template refused the conversation of chat.jsonl, line 1 with the completion as the "
               "assistant's message: TemplateError: no system role")
    with pytest.raises(RewardError, match=message):
        rm.check_fits([RENDERED], 4)  # at start-up
    with pytest.raises(RewardError, match=message):
        rm.score_examples([RENDERED], ["cba"])
    assert rm.scored_text(replace(RENDERED, messages=[USER]), "cba") == "(user)rev:abc=;(assistant)cba;"


def test_a_reward_model_tokenizer_needs_a_pad_token_not_an_eos(tmp_path):
    """A reward model generates nothing: an encoder's tokenizer without EOS (BERT's [SEP]/[PAD]) scores as one with
    it; only a tokenizer with neither pad nor EOS is refused, as nothing could pad a batch."""
    from policyforge.models.load import ModelError

    path = save_reward_model(tmp_path / "rm")
    with_eos = RewardModel(path, batch_size=2).scores(["rev:abc=", "rev:hello="], ["cba", "ol"])
    config = json.loads((tmp_path / "rm" / "tokenizer_config.json").read_text())
    config.pop("eos_token", None)
    (tmp_path / "rm" / "tokenizer_config.json").write_text(json.dumps(config))
    no_eos = RewardModel(path, batch_size=2)
    assert no_eos.tokenizer.eos_token_id is None
    assert no_eos.scores(["rev:abc=", "rev:hello="], ["cba", "ol"]).tolist() == pytest.approx(with_eos.tolist(),
                                                                                                 abs=1e-5)
    config.pop("pad_token", None)
    (tmp_path / "rm" / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="reward model .* has neither a pad nor an EOS token"):
        RewardModel(path)
