"""Critique-GRPO in the RL step (data/critique.py holds the critiques and the refinement prompt).

After a round is scored, every group with no correct completion (held-out accuracy's rule) gets a critique of each
of its completions; the policy samples one refinement of each from the refinement prompt (question, its answer,
the critique), the refinements are scored as answers to the question, and rollout.refinements of them (k; correct
ones first) join the group, tagged "refined". As in the paper and the authors' code, a refined row is trained as
an answer to the original question (its tokens after the question's prompt, not after the refinement prompt),
and the loss on its tokens is the policy-shaped -A f(pi_theta), f(x) = x / (x + gamma) (algos.refinement_shaping;
no importance ratio, no clip), while the group's own rows keep the run's loss, which sees them alone; a drift
term, if the run has one, applies to every row (the paper removes the KL term). The group's advantages are computed
over its own and its refined rows together: the paper's A = R - mean over the n + k rows is algo.advantage
dr_grpo. The paper adds k = 1 refinement to n = 7 completions; the authors' code puts it in place of one of 8.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

import torch

from policyforge.data.critique import CRITIQUES, REFINE_TEMPLATE, built_in_critique, chosen_refinements, refine_example
from policyforge.data.user import DataError
from policyforge.rewards.score import RewardError, is_correct, load_reward_fn, same_components
from policyforge.rollout.batch import RolloutBatch
from policyforge.train.config import ConfigError, refuse
from policyforge.train.hints import renderer, steered_by_success, unsolved_groups


def with_refinements(p, step: int, batch: RolloutBatch, score) -> tuple[RolloutBatch, list]:
    """`batch` (scored, one process's rows) with refined rows added to each unsolved group, and the Logged of the
    scoring it ran. `score(batch)` scores a batch as the round's rows were. `p` is the loop's StepParts."""
    rc = p.cfg.rollout
    failed = set(unsolved_groups(batch))
    rows = [i for i, g in enumerate(batch.group.tolist()) if g in failed]
    if not rows:
        return batch, []
    critique = critic(rc.critique)
    critiques = [critique(batch.examples[i], batch.completions[i], float(batch.scores[i])) for i in rows]
    asked = [refine_example(batch.examples[i], batch.completions[i], text, rc.refine_template,
                            renderer(p.cfg) if batch.examples[i].messages else None) for i, text in zip(rows, critiques)]
    refined = under_question(p, sampled_once(p, asked), [batch.examples[i] for i in rows])
    refined.group = batch.group[rows]
    logs = [score(refined)]
    # rollouts.jsonl shows each refinement's critique (and answer critiqued) beside what the reward logged
    refined.extra = [{**cells, "critique": text, "critiqued": batch.completions[i]}
                     for cells, text, i in zip(refined.extra, critiques, rows)]
    refined = same_components(refined, batch)
    solved = is_correct(refined.scores, refined.reward_components, refined.reward_names).tolist()
    chosen = []
    for g in dict.fromkeys(refined.group.tolist()):  # the paper: prefer correct refinements, else any at random
        mine = [n for n, h in enumerate(refined.group.tolist()) if h == g]
        prompt = refined.examples[mine[0]].prompt  # the seed names the prompt: a resume picks the same rows
        picks = chosen_refinements([solved[n] for n in mine], rc.refinements,
                                   random.Random(f"{p.cfg.train.seed}-{step}-{prompt}-refine"))
        chosen += [mine[j] for j in picks]
    return batch.regrouped(refined.select(torch.tensor(chosen, device=batch.group.device))), logs


def sampled_once(p, asked: list, temperature: float | None = None) -> RolloutBatch:
    """One completion of each refinement prompt in `asked` (at `temperature`, else the run's), sampled
    prompts_per_step x group_size at a time (a step's rollout size)."""
    from policyforge.train.setup import rollout

    rc = p.cfg.rollout
    chunk = max(rc.prompts_per_step * rc.group_size, 1)
    settings = replace(rc, group_size=1, temperature=rc.temperature if temperature is None else temperature)
    return RolloutBatch.joined([rollout(p.model, p.tok, asked[i:i + chunk], settings, p.gen)
                                for i in range(0, len(asked), chunk)])


def under_question(p, sampled: RolloutBatch, originals: list) -> RolloutBatch:
    """The sampled refinements as answers to the original questions: the same completion tokens after each
    question's own prompt, tagged "refined" (with_current_behaviour gives their behav_logp)."""
    from policyforge.train.evaluate import encode_prompts

    ids, attn = encode_prompts(p.tok, [ex.prompt for ex in originals], sampled.completion_ids.device)
    return with_current_behaviour(p, replace(sampled, prompt_ids=ids, prompt_mask=attn, examples=list(originals),
                                             source=["refined"] * len(sampled)))


def with_current_behaviour(p, batch: RolloutBatch) -> RolloutBatch:
    """Refined rows with their behav_logp, when a chosen function reads it, the current policy's under the prompt
    they are trained under (the sampler's was under another prompt, or at another temperature), else 0."""
    from policyforge.train.logprobs import logprobs_in_chunks
    from policyforge.train.step import micro_batches

    batch = replace(batch, behav_logp=torch.zeros_like(batch.behav_logp))
    if {"behav_logp", "seq_logp"} & p.algo.needs():
        chunks = micro_batches(batch, p.cfg.optim.micro_batch_size, p.cfg.optim.micro_batch_tokens)
        batch.behav_logp = logprobs_in_chunks(p.model, batch, p.cfg.rollout.temperature, chunks)["logp"]
    return batch


REFINE_METHODS = ("critique_grpo", "herl")  # rollout.refine_method's choices
_CRITICS: dict = {}
PROBED_CRITIQUES = 4  # rows whose critique a critic function writes at start-up


def critic(spec: str):
    """rollout.critique as a function of (row, its incorrect answer, its reward) -> critique text: a built-in kind,
    or 'module:function' called fn(prompt, completion, reward, **columns) -> str (loaded once a run)."""
    if spec in CRITIQUES:
        return lambda ex, completion, reward: built_in_critique(spec, ex)
    if spec not in _CRITICS:
        _CRITICS[spec] = load_reward_fn(spec)
    fn = _CRITICS[spec]

    def call(ex, completion: str, reward: float) -> str:
        try:
            text = fn(ex.prompt, completion, reward, **ex.extra)
        except Exception as e:  # a critic's bug, said in one line with the row it met (a reward's are said so too)
            raise DataError(f"rollout.critique {spec!r} raised {type(e).__name__}: {e} on {ex.where()}") from e
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"rollout.critique {spec!r} returned {text!r}"[:200] + f" for {ex.where()}: a critique "
                            "is text")
        return text
    return call


def check_refinements(cfg, algo, source, reward) -> None:
    """ConfigError for a rollout.refinements setting this run cannot use; DataError when a training row cannot
    be critiqued (no reference solution for the ground_truth critique)."""
    rc = cfg.rollout
    if rc.refinements < 0:
        raise ConfigError(f"rollout.refinements={rc.refinements}: 0 (off) or more refinements a failed group")
    defaults = {"refine_method": "critique_grpo", "critique": "ground_truth", "refine_template": REFINE_TEMPLATE,
                "refine_shaping_gamma": 0.1}
    changed = [k for k, v in defaults.items() if getattr(rc, k) != v]
    if rc.refinements == 0:
        if changed:
            raise ConfigError(f"rollout.{changed[0]} is read only by Critique-GRPO and HeRL (rollout.refinements > 0; "
                              "it is 0): set that, or leave it out")
    check_hindsight(rc)
    if rc.refinements == 0:
        return
    if rc.refinements > rc.group_size:
        raise ConfigError(f"rollout.refinements={rc.refinements}: at most rollout.group_size={rc.group_size}, the "
                          "refinements a failed group has to choose from (one of each completion; HeRL: the rows "
                          "it gives up); lower it or raise --rollout.group-size")
    if not rc.refine_shaping_gamma > 0:
        raise ConfigError(f"rollout.refine_shaping_gamma={rc.refine_shaping_gamma}: the gamma of f(x) = x / (x + "
                          "gamma), greater than 0 (0.1 in the paper)")
    missing = [k for k in ("{question}", "{response}", "{critique}") if k not in rc.refine_template]
    if missing:
        raise ConfigError(f"rollout.refine_template={rc.refine_template!r} lacks {', '.join(missing)}: the question "
                          "(a chat prompt's last user message), the answer and its critique each go in one")
    if rc.critique not in CRITIQUES + ("rubric",) and ":" not in rc.critique:
        raise ConfigError(f"rollout.critique={rc.critique!r}: indicative, ground_truth, rubric (HeRL's), or "
                          "'module:function' called fn(prompt, completion, reward, **columns) -> critique text")
    if rc.critique not in CRITIQUES + ("rubric",):
        try:
            critic(rc.critique)  # an import that fails, fails now
        except RewardError as e:
            raise ConfigError(f"rollout.critique={rc.critique!r}: {str(e).split(': ', 1)[-1]}") from None
    refuse(f"rollout.refinements={rc.refinements}", {
        **steered_by_success(algo, reward, cfg.data, solved_by_rubric=rc.critique == "rubric"),
        "rollout.hints (both act on the groups with no correct completion)": rc.hints != "off",
        "data.replay_pool (RLEP's replayed rows would make every group look solved)": cfg.data.replay_pool is not None,
        f"algo.advantage={cfg.algo.advantage} (it reads the reward's components, which HeRL's bonus does not move; "
        "set rollout.hindsight_bonus 0 to keep it)": rc.refine_method == "herl" and rc.hindsight_bonus > 0
        and "reward_components" in algo.advantage.needs},
        "set rollout.refinements to 0")
    if rc.critique == "ground_truth" and hasattr(source, "rows"):  # a data file's rows (a built-in task's have answers)
        from policyforge.train.setup import probe_rows

        for ex in probe_rows(source):
            built_in_critique("ground_truth", ex)


def check_refine_prompts(model, tokenizer, source, cfg, rubric: tuple[str, ...] | None = None) -> None:
    """DataError before the first step when a training prompt's refinement prompt cannot fit the model's context:
    the template with the question and its critique (a critic function's text is unknown: none is counted), plus
    an answer and a refinement of rollout.max_new_tokens each; or has characters the tokenizer does not know
    (the critique a critic function writes for the first rows, with an empty answer, is checked too; a rubric's,
    `rubric` the reward's component names, with every item unmet, which names them all)."""
    from types import SimpleNamespace

    from policyforge.train.setup import check_prompt_lengths, probe_rows

    rc = cfg.rollout
    if not rc.refinements:
        return
    rows = probe_rows(source)
    # a critic function may call a model: only the first rows' critiques are asked for; every row is measured
    if rc.critique == "rubric":
        from policyforge.data.hindsight import rubric_critique, rubric_items

        every_item = rubric_critique([False] * len(rubric_items(rubric or ())), rubric or ())
    asked = [refine_example(ex, "", every_item if rc.critique == "rubric" else critique_text(rc.critique, ex)
                            if n < PROBED_CRITIQUES or rc.critique in CRITIQUES else "",
                            rc.refine_template, renderer(cfg) if ex.messages else None)
             for n, ex in enumerate(rows)]
    try:
        check_prompt_lengths(model, tokenizer, SimpleNamespace(rows=asked), [], 2 * rc.max_new_tokens)
    except DataError as e:
        raise DataError(f"rollout.refinements: the refinement prompt (rollout.refine_template, with an answer of up "
                        f"to rollout.max_new_tokens={rc.max_new_tokens} tokens in it): {e}") from None


def check_hindsight(rc) -> None:
    """ConfigError for rollout.refine_method, and for HeRL's settings where HeRL does not run."""
    from policyforge.data.hindsight import BONUS

    if rc.refine_method not in REFINE_METHODS:
        raise ConfigError(f"rollout.refine_method={rc.refine_method!r}: one of {', '.join(REFINE_METHODS)}")
    herl = rc.refinements > 0 and rc.refine_method == "herl"
    if not herl and rc.hindsight_bonus != BONUS:
        raise ConfigError("rollout.hindsight_bonus is read only by HeRL (rollout.refine_method herl, "
                          "rollout.refinements > 0): set those, or leave it out")
    if not herl and rc.critique == "rubric":
        raise ConfigError("rollout.critique rubric is HeRL's hindsight: set rollout.refine_method herl (and "
                          "rollout.refinements > 0), or choose another critique")
    if not (rc.hindsight_bonus >= 0 and math.isfinite(rc.hindsight_bonus)):
        raise ConfigError(f"rollout.hindsight_bonus={rc.hindsight_bonus}: alpha of r + alpha (r_rewrite - r), 0 or "
                          "more (0.05 in the authors' script)")


def critique_text(spec: str, ex) -> str:
    """The critique a start-up check puts in `ex`'s refinement prompt: a built-in one's, or a critic function's of
    an empty answer with reward 0 (so that a critic that fails, or writes characters the tokenizer does not
    know, is found before the first step)."""
    try:
        return critic(spec)(ex, "", 0.0)
    except DataError as e:
        raise DataError(f"{e} (the start-up check's probe: an empty answer with reward 0)") from None
