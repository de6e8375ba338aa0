"""One evaluation job, as `policyforge eval` runs it and `policyforge.api.evaluate` exposes it: the held-out rows
and reward as a Config says, its model.path loaded, greedy accuracy, pass@k, reward and length measured."""

from __future__ import annotations


def evaluate(cfg, log=print, state=None) -> dict:
    """The result `policyforge eval --model.path ...` prints for `cfg` as it is: accuracy, pass@k, reward_mean,
    completion_len_mean, accuracy/<name> per distribution (data.distribution_column) and the reward_fn/<name> means
    a TRL-form reward logs. `policyforge eval RUN_DIR` also takes the run's config.yaml, start folder and step:
    from Python, load the run's settings (load_yaml(RUN_DIR/config.yaml)) and point model.path at a checkpoint,
    and pass `state` (rewards.batched.TrainerState) for a TRL-form reward that reads the trainer state (None:
    TrainerState.outside_a_run(), no run). `log` gets the line saying what is scored."""
    from policyforge.data.curriculum import accuracy_by_distribution, distribution_column, distribution_of
    from policyforge.models.load import load_model, pick_device
    from policyforge.rewards.batched import TrainerState, scoring
    from policyforge.train.evaluate import evaluate_run
    from policyforge.train.setup import build_data, check_prompt_lengths, check_reward_model_fits
    from policyforge.train.validate import validate

    validate(cfg, "eval")
    _, held_out, reward = build_data(cfg.data, cfg.train.seed, training=False, device=pick_device(cfg.model.device),
                                     model_path=cfg.model.path, dtype=cfg.model.dtype, log=log)
    check_reward_model_fits(reward, None, held_out, cfg.rollout.max_new_tokens)
    column = distribution_column(cfg.data)  # accuracy/<distribution> too; every row names its own, or it fails now
    for ex in held_out if column else []:
        distribution_of(ex, column)
    data = (f"data.eval_path {cfg.data.eval_path}" if cfg.data.eval_path else
            f"data {cfg.data.path}" if cfg.data.path else f"task {cfg.data.task}")
    log(f"eval: {len(held_out)} held-out rows (data.eval_size={cfg.data.eval_size}) of {data}, model {cfg.model.path}"
        + (" (a freshly initialised random model)" if cfg.model.path == "builtin:tiny" else ""))
    model, tok = load_model(cfg.model.path, cfg.model.dtype, cfg.model.device, cfg.train.seed)  # builtin:tiny's weights
    check_prompt_lengths(model, tok, None, held_out, cfg.rollout.max_new_tokens)
    with scoring(state or TrainerState.outside_a_run()) as logged:
        res = evaluate_run(model, tok, held_out, reward, cfg)
    by_distribution = accuracy_by_distribution(held_out, [s["correct"] for s in res["samples"]], column) if column else {}
    return {**{k: v for k, v in res.items() if k != "samples"}, **by_distribution, **logged.means()}
