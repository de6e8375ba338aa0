"""The Python entry: the same runs as the command line (`policyforge train --help` documents every option).

    from policyforge.api import Config, load_yaml, train

    cfg = load_yaml("configs/demo.yaml")     # or Config()
    cfg.data.reward = my_rewards.correct     # optional: a function, or "module:function" as on the command line
    run_dir = train(cfg)                     # train(cfg, resume=str(run_dir)) continues a stopped run
    report([str(run_dir)])                   # the curves and warnings of `policyforge report`
    collect(cfg, "pool.jsonl", samples=8)    # RLEP's pool from cfg.model.path (`policyforge collect`)

A reward function given this way is recorded in config.yaml by its 'module:function' name, so it must
be defined at the top level of a module (a resume imports it again).
"""

from policyforge.metrics.report import report
from policyforge.train.collect import collect
from policyforge.train.config import Config, load_yaml
from policyforge.train.loop import train
from policyforge.train.sft import sft

__all__ = ["Config", "load_yaml", "train", "sft", "report", "collect"]
