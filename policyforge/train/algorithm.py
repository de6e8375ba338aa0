"""The chosen math of a run, resolved from the config once, at start-up.

Every name and hyper-parameter is checked against the registry here, before any
model is loaded, so a typo fails in the first second with the list of valid names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from policyforge.algos.contract import check_entry
from policyforge.algos.registry import Entry, check_kwargs, get, is_builtin
from policyforge.train.config import AlgoConfig, ConfigError


@dataclass
class Algorithm:
    advantage: Entry
    advantage_kwargs: dict[str, Any]
    loss: Entry
    loss_kwargs: dict[str, Any]
    aggregation: Entry
    drift: list[tuple[Entry, float, dict[str, Any]]]  # (term, coefficient, hyper-parameters)
    states: dict[str, Any] = field(default_factory=dict)  # "kind:name" -> persistent state object
    drift_unbiased: bool = False  # each drift penalty weighted by pi/pi_old (algo.drift_unbiased)

    def needs(self) -> set[str]:
        """Every batch input some chosen function asks for."""
        out = set(self.advantage.needs) | set(self.loss.needs)
        for entry, _, _ in self.drift:
            out |= set(entry.needs)
        return out

    def uses_reference(self) -> bool:
        return bool(self.drift) or bool({"ref_logp", "ref_logits", "teacher_logp"} & self.needs())

    def tempered_temperature(self) -> float | None:
        """Temperature of the extra "tempered" rows the loss asks for (AEPO), or None."""
        pick = getattr(self.loss.fn, "tempered_rollout", None)
        # the loss's hyper-parameters go along: before the first step the state has seen none of them
        return None if pick is None else float(pick(self.states[f"loss:{self.loss.name}"], **self.loss_kwargs))

    def check_reward_components(self, n: int) -> None:
        """ConfigError when the advantage's per-component weights (gdpo) do not match the reward's `n`
        components, which the estimator would only find at the first step."""
        weights = self.advantage_kwargs.get("weights")
        if weights is not None and len(weights) != n:
            raise ConfigError(f"algo.advantage_kwargs weights {list(weights)} has {len(weights)} entries, but the "
                              f"reward gives {n} component(s): one weight per component, in the order it returns them")

    def notes(self, top_p: float = 1.0, top_k: int = 0) -> list[str]:
        """Start-up lines about choices that depart from the chosen loss's paper, or that it cannot see."""
        out, paper = [], self.loss.aggregation
        if paper and paper != self.aggregation.name:
            out.append(f"algo.loss={self.loss.name} is defined with algo.aggregation={paper} in its paper; this run "
                       f"uses {self.aggregation.name}, which weights a sequence by its length (set "
                       f"--algo.aggregation {paper} for the paper's loss)")
        if "behav_logp" in self.loss.needs and (top_p < 1.0 or top_k > 0):
            out.append(f"algo.loss={self.loss.name} weighs tokens by the sampler's log-probs, which are recorded "
                       "before top-p/top-k filtering: it corrects numeric sampler/trainer mismatch, not the "
                       "truncation rollout.top_p / rollout.top_k add")
        return out

    def teacher_forced(self) -> bool:
        """Supervised-style losses (psft, otr) train on the reference solutions instead of samples."""
        return bool(getattr(self.loss.fn, "teacher_forced", False))

    def state_dict(self) -> dict[str, Any]:
        return {k: s.state_dict() for k, s in self.states.items()}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore the states of a checkpoint; ConfigError when it was saved by other stateful algorithms."""
        if set(d) != set(self.states):
            # A resume that changes a stateful algorithm would start it from nothing (or drop the saved one)
            # while claiming to continue the run exactly.
            held = f"algorithm state for {_named(d)}" if d else "no algorithm state"
            trained = _named(d) if d else "other, stateless algorithms"
            raise ConfigError(f"the checkpoint holds {held}, but this run asks for {_named(self.states)}: the run "
                              f"was trained with {trained}; resume it with the same algorithm (see its config.yaml)")
        for k, s in self.states.items():
            s.load_state_dict(d[k])


def check_length_options(cfg: AlgoConfig, algo: Algorithm) -> None:
    """ConfigError for DAPO's length options where they would do nothing, be lost or change an estimator's
    meaning: a teacher-forced loss trains on reference solutions, which are never cut and get no reward; gdpo
    normalises a dict reward's own components, which the overlong penalty (added to their sum) is not one of;
    an estimator that reads the reward as success (Entry.success_reward) would count a penalised row wrongly."""
    used = [name for name, on in (("mask_truncated", cfg.mask_truncated), ("overlong_buffer", cfg.overlong_buffer))
            if on]
    if used and algo.teacher_forced():
        raise ConfigError(f"algo.{used[0]} with algo.loss={cfg.loss!r}: it trains on reference solutions, not "
                          "sampled completions, so the option would do nothing")
    if cfg.overlong_penalty != 1.0 and not cfg.overlong_buffer:
        raise ConfigError(f"algo.overlong_penalty={cfg.overlong_penalty} without algo.overlong_buffer: the penalty "
                          "is of the soft overlong punishment, which the buffer turns on")
    if cfg.overlong_buffer and "reward_components" in algo.advantage.needs:
        raise ConfigError(f"algo.overlong_buffer with algo.advantage={cfg.advantage!r}: it normalises each reward "
                          "component on its own, and the penalty is added to their sum, where a reward with "
                          "components would lose it; make it a component instead, a reward function of its own in "
                          "data.reward (e.g. TRL's get_soft_overlong_punishment: README \"Your own model, data and reward\")")
    if cfg.overlong_buffer and algo.advantage.success_reward:
        raise ConfigError(f"algo.overlong_buffer with algo.advantage={cfg.advantage!r}: it reads the reward as "
                          "success (1 solved, 0 not), and the penalty makes it a number that also depends on "
                          "length; pair the penalty with grpo, dr_grpo, rloo or another estimator of any reward")


def check_reward_model_weight(algo: Algorithm, weight: float | None) -> None:
    """ConfigError for data.reward_model_weight other than 1 with an estimator that normalises each reward component
    within its group (gdpo): the z-score cancels the scale, so the weight would change nothing that trains."""
    adv = algo.advantage
    if weight is None or weight == 1 or "reward_components" not in adv.needs or "weights" not in adv.hyper():
        return
    raise ConfigError(f"data.reward_model_weight={weight:g} with algo.advantage={adv.name!r}: it normalises each "
                      "reward component within its group, which cancels the weight; weigh the reward_model component "
                      "by its entry in --algo.advantage-kwargs weights (one per component, the reward model's last)")


def check_reward_weights(algo: Algorithm, reward_weights: list[float]) -> None:
    """ConfigError for data.reward_weights with an estimator that weighs the reward's components itself (gdpo:
    its `weights`): the data weights would only change the logged reward_mean, not what trains, unless the two
    agree."""
    adv = algo.advantage
    if not reward_weights or "reward_components" not in adv.needs or "weights" not in adv.hyper():
        return
    own = algo.advantage_kwargs.get("weights") or [1.0] * len(reward_weights)  # None: 1 per component
    if [float(w) for w in own] != [float(w) for w in reward_weights]:
        shown = " ".join(f"{w:g}" for w in reward_weights)
        raise ConfigError(f"data.reward_weights with algo.advantage={adv.name!r}: it weighs each function's normalised "
                          f"component with its own weights, so data.reward_weights would change only the logged "
                          f"reward_mean; give them as --algo.advantage-kwargs weights {shown} (TRL's reward_weights "
                          "under multi_objective_aggregation='normalize_then_sum'), with data.reward_weights the "
                          "same or left out")


def _named(states: dict[str, Any]) -> str:
    """State keys "loss:bapo" in words: "loss 'bapo'"."""
    if not states:
        return "no stateful algorithm"
    return " and ".join(f"{k.split(':', 1)[0]} {k.split(':', 1)[1]!r}" for k in sorted(states))


def resolve(cfg: AlgoConfig, log=print) -> Algorithm:
    """Look every name up in the registry and validate its hyper-parameters.

    The hyper-parameters are coerced to their types (`scale_by_std: "false"` -> False, `weights: "1,0.5"` ->
    [1.0, 0.5]) and written back into `cfg`, so that the saved config.yaml records the values the run uses.
    """
    from policyforge.train.plugins import load_plugins, record_origins

    load_plugins(cfg.plugins)
    adv = get("advantage", cfg.advantage)
    loss = get("loss", cfg.loss)
    agg = get("aggregation", cfg.aggregation)
    unknown = set(cfg.drift_kwargs) - set(cfg.drift)
    if unknown:
        raise ConfigError(f"algo.drift_kwargs names {sorted(unknown)} which are not in algo.drift {sorted(cfg.drift)}")
    drift = []
    for name, coef in cfg.drift.items():
        entry = get("drift", name)
        drift.append((entry, float(coef), check_kwargs(entry, cfg.drift_kwargs.get(name, {}))))
    if cfg.drift_unbiased and not drift:
        raise ConfigError("algo.drift_unbiased weights the drift terms' penalties by pi/pi_old, but algo.drift names "
                          "none: add one (--algo.drift k3 0.04) or leave it off")
    algo = Algorithm(adv, check_kwargs(adv, cfg.advantage_kwargs), loss, check_kwargs(loss, cfg.loss_kwargs), agg, drift,
                     drift_unbiased=cfg.drift_unbiased)
    cfg.advantage_kwargs, cfg.loss_kwargs = dict(algo.advantage_kwargs), dict(algo.loss_kwargs)
    cfg.drift_kwargs = {e.name: dict(kw) for e, _, kw in drift if e.name in cfg.drift_kwargs}
    own = [(e, kw) for e, kw in [(adv, algo.advantage_kwargs), (loss, algo.loss_kwargs), (agg, {})]
           + [(e, kw) for e, _, kw in drift] if not is_builtin(e)]
    for entry, kw in own:  # a user's function, run once on a small batch: its mistakes fail here, named
        check_entry(entry, kw)
    record_origins(cfg, [e for e, _ in own], log=log)
    for entry in [adv, loss] + [d[0] for d in drift]:
        if entry.state is not None:
            algo.states[f"{entry.kind}:{entry.name}"] = entry.state()
    return algo
