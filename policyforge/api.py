"""The Python entry: the same runs as the command line (`policyforge train --help` documents every option).

    from policyforge.api import Config, load_yaml, train

    cfg = load_yaml("configs/demo.yaml")     # or Config()
    cfg.data.reward = my_rewards.correct     # optional: a function, or "module:function" as on the command line
    run_dir = train(cfg)                     # train(cfg, resume=str(run_dir)) continues a stopped run
    report([str(run_dir)])                   # the curves and warnings of `policyforge report`
    collect(cfg, "pool.jsonl", samples=8)    # RLEP's pool from cfg.model.path (`policyforge collect`)
    cfg.model.path = str(run_dir / "checkpoints" / "step_000300")
    evaluate(cfg)                            # {"accuracy": ..., "pass@8": ...}, as `policyforge eval` prints
    export(str(run_dir), "my-policy")        # the newest checkpoint as a standalone model folder, LoRA merged

A reward function given this way is recorded in config.yaml by its 'module:function' name, so it must
be defined at the top level of a module (a resume imports it again).

Your own advantage estimator, loss, drift term or aggregation is registered under a name, then chosen
by it (README "Your own algorithm"; `register` is policyforge.algos.register):

    @register("loss", "my_loss", paper="...")
    def my_loss(logp, old_logp, adv, mask, *, eps: float = 0.2): ...
    cfg.algo.loss = "my_loss"                # its module lands in cfg.algo.plugins, so a resume imports it
"""

from policyforge.algos.registry import register
from policyforge.cli_export import export
from policyforge.metrics.report import report
from policyforge.train.collect import collect
from policyforge.train.config import Config, load_yaml
from policyforge.train.eval_job import evaluate
from policyforge.train.loop import train
from policyforge.train.sft import sft

__all__ = ["Config", "load_yaml", "train", "sft", "evaluate", "report", "collect", "export", "register"]
