"""HeRL in the RL step: hindsight rewrites of a failed group's best answers take the place of some of its rows
(data/hindsight.py holds the rules and where each comes from).

After a round is scored, each group none of whose rows is solved (with rollout.critique rubric: none met every
rubric item) has its best answers (those tied with its best score, most items met first, at most 16) shown their
hindsight (rubric: the items met and missed; else the critique rollout.critique writes) in the refinement prompt;
the policy rewrites each once at temperature 0.3, and the rewrites are scored as answers to the question. Each
rewritten answer's reward r becomes r + alpha (r_rewrite - r). Then, per group, up to rollout.refinements rewrites
that beat or equal the group's best score (higher first), else copies of its best answers, take the place of as
many of its rows, chosen at random: the group keeps its size. A rewrite is trained as the authors' script does,
under the rewrite prompt it was sampled from (at the run's temperature), with -A r/(r + gamma)
(algos.hindsight_shaping), tagged "refined"; a copied answer is an answer like the others.
"""

from __future__ import annotations

import random
from dataclasses import replace

import torch

from policyforge.data import hindsight as he
from policyforge.data.critique import refine_example
from policyforge.data.user import DataError
from policyforge.rewards.score import same_components, solved_rows
from policyforge.rollout.batch import RolloutBatch
from policyforge.train.hints import renderer
from policyforge.train.refine import critic, sampled_once, with_current_behaviour


def with_hindsight(p, step: int, batch: RolloutBatch, score) -> tuple[RolloutBatch, list]:
    """`batch` (scored, one process's rows) with hindsight rewrites in place of some rows of each failed group,
    and the Logged of the scoring it ran. `score(batch)` scores a batch as the round's rows were. `p` is the
    loop's StepParts."""
    rc = p.cfg.rollout
    groups, scores = batch.group.tolist(), batch.scores.tolist()
    met = rubric_of(batch) if rc.critique == "rubric" else None
    solved = (he.rubric_solved(batch.reward_components, batch.reward_names) if met is not None
              else solved_rows(batch)).tolist()
    met_counts = met.sum(-1).tolist() if met is not None else [0] * len(batch)
    rows_of = {g: [i for i, h in enumerate(groups) if h == g] for g in dict.fromkeys(groups)}
    failed = [g for g, mine in rows_of.items() if not any(solved[i] for i in mine)]
    shown = [mine[j] for g in failed for mine in [rows_of[g]]
             for j in he.candidates([scores[i] for i in mine], [met_counts[i] for i in mine])]
    if not shown:
        return batch, []
    texts = hindsights(rc.critique, batch, shown, met)
    asked = [refine_example(batch.examples[i], batch.completions[i], text, rc.refine_template,
                            renderer(p.cfg) if batch.examples[i].messages else None) for i, text in zip(shown, texts)]
    sampled = sampled_once(p, asked, temperature=he.TEMPERATURE)
    # scored as answers to the question (the row's own prompt and columns) but kept under the rewrite prompt
    rewrites = replace(sampled, examples=[batch.examples[i] for i in shown], group=batch.group[shown],
                       source=["refined"] * len(shown),
                       temperature=torch.full_like(sampled.temperature, float(rc.temperature)))
    logs = [score(rewrites)]
    rewrites.extra = [{**cells, "critique": text, "critiqued": batch.completions[i]}
                      for cells, text, i in zip(rewrites.extra, texts, shown)]
    rewrites = with_current_behaviour(p, same_components(rewrites, batch))
    # the code drops a rewrite whose text is empty: it neither joins a group nor earns a bonus
    usable = [n for n, text in enumerate(rewrites.completions) if text.strip()]
    batch = with_bonus(batch, {shown[n]: float(rewrites.scores[n]) for n in usable}, rc.hindsight_bonus)

    joining, drop = [], torch.zeros(len(batch), dtype=torch.bool, device=batch.group.device)
    for g in dict.fromkeys(groups[i] for i in shown):
        mine = rows_of[g]
        mine_rw = [n for n in usable if groups[shown[n]] == g]
        picks = [("rewrite", mine_rw[j]) for j in
                 he.chosen_rewrites([float(rewrites.scores[n]) for n in mine_rw], max(scores[i] for i in mine),
                                    rc.refinements)]
        order = he.best_answers([scores[i] for i in mine], [met_counts[i] for i in mine])
        picks += [("copy", mine[j]) for j in order][:max(rc.refinements - len(picks), 0)]
        prompt = batch.examples[mine[0]].prompt  # the seed names the prompt: a resume picks the same rows
        slots = he.replaced_rows(len(mine), min(len(picks), len(mine)), random.Random(
            f"{p.cfg.train.seed}-{step}-{prompt}-hindsight"))
        for slot in slots:
            drop[mine[slot]] = True
        joining += picks[:len(slots)]
    copies = batch.select(torch.tensor([i for kind, i in joining if kind == "copy"], dtype=torch.long))
    copies.extra = [{**cells, "hindsight_copy": True} for cells in copies.extra]  # rollouts.jsonl tells them apart
    parts = [rewrites.select(torch.tensor([n for kind, n in joining if kind == "rewrite"], dtype=torch.long)), copies]
    width = max(part.prompt_ids.shape[1] for part in parts)
    new = RolloutBatch.concat(*(part.left_padded(width) for part in parts))  # group ids kept
    return batch.regrouped(new, drop), logs


def rubric_of(batch: RolloutBatch) -> torch.Tensor:
    """(B, K) bool: the rubric items each row met; DataError when the reward has no components to be items."""
    if batch.reward_components is None or not he.rubric_items(batch.reward_names):
        raise DataError(no_rubric(batch.reward_names))
    return he.rubric_met(batch.reward_components, batch.reward_names)


def no_rubric(names) -> str:
    got = f"the components {list(names)}" if names else "one number a row"
    return (f"rollout.critique rubric shows an answer the reward's components it met and missed, and the reward gave "
            f"{got}: return a dict of rubric items (e.g. {{'correct': 1.0, 'length': 0.0}}), or give several "
            "functions in data.reward, one an item")


def check_rubric(rc, reward, example) -> tuple[str, ...] | None:
    """With rollout.critique rubric, the reward's component names (its answer to a training row, the start-up
    check's stand-in); ConfigError before anything is written when none is a rubric item. None otherwise."""
    from policyforge.rewards.score import probe
    from policyforge.train.config import ConfigError

    if not (rc.refinements and rc.refine_method == "herl" and rc.critique == "rubric"):
        return None
    names = probe(reward, [example]).names
    if not he.rubric_items(names):
        raise ConfigError(no_rubric(names))
    return names


def hindsights(kind: str, batch: RolloutBatch, rows: list[int], met: torch.Tensor | None) -> list[str]:
    """What each of `rows` is shown: its rubric items met and missed (rollout.critique rubric), else the critique
    rollout.critique writes of it."""
    if met is not None:
        return [he.rubric_critique(met[i].tolist(), batch.reward_names) for i in rows]
    critique = critic(kind)
    return [critique(batch.examples[i], batch.completions[i], float(batch.scores[i])) for i in rows]


def with_bonus(batch: RolloutBatch, rewrite_scores: dict[int, float], alpha: float) -> RolloutBatch:
    """`batch` with each rewritten row's reward moved toward its rewrite's, r + alpha (r_rewrite - r); the bonus
    goes to rollouts.jsonl beside the row."""
    scores, extra = batch.scores.clone(), list(batch.extra or [{}] * len(batch))
    for i, rewrite_score in rewrite_scores.items():
        gain = he.bonus(float(batch.scores[i]), rewrite_score, alpha)
        scores[i] += gain
        extra[i] = {**extra[i], "hindsight_bonus": round(gain, 6)}
    return replace(batch, scores=scores, extra=extra)
