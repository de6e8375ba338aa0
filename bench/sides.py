"""The two sides of bench/vs_trl.py, built on the same weights, data and settings.

`Setting` and `SETTINGS` size the model and batch; `PolicyforgeRunner` runs policyforge's own
RL step, `make_trl_trainer` builds TRL's GRPOTrainer doing the same step (the choices on
each side are listed in bench/vs_trl.py's docstring).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' gradient_checkpointing renaming notices

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_snapshot, other_load, sync  # noqa: E402

from policyforge.data.tasks import BuiltinTask, Example, exact_match  # noqa: E402


@dataclass
class Setting:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    prompts: int  # prompts per step
    group: int  # completions per prompt
    new_tokens: int  # max new tokens
    context: int = 0  # characters of fixed context prefixed to each prompt
    weights: str = ""  # a model directory (relative to the repository) to start from instead of fresh weights
    task_size: int | None = None  # the reversal task's word length (None: the task's default)


REPO = Path(__file__).resolve().parent.parent
SETTINGS = {
    "tiny": Setting(128, 4, 4, 512, 8, 8, 32),  # ~1.1M parameters
    "small": Setting(256, 6, 4, 1024, 16, 8, 64),  # ~6.3M parameters
    "long": Setting(128, 4, 4, 512, 8, 8, 32, context=245),  # ~256-token prompts
    "large": Setting(768, 12, 12, 3072, 16, 8, 128),  # ~113M parameters: the GPU setting (minutes a step on 2 CPUs)
    # the demo's workload: its warm start (3.4M parameters), whose rewards vary within groups, so
    # gradients are real and groups with equal rewards occur (policyforge skips their backward)
    "demo": Setting(256, 4, 4, 768, 16, 8, 8, weights="checkpoints/demo-sft", task_size=6),
}
LR = 1e-5
SEED = 0
CONTEXT = "context: the quick brown fox jumps over the lazy dog; 0123456789 (a+b)*c=d, x/y<z? [ok]! "


def make_examples(s: Setting, n: int) -> list[Example]:
    task = BuiltinTask("reversal", size=s.task_size, seed=SEED)
    prefix = (CONTEXT * (s.context // len(CONTEXT) + 1))[: s.context]
    return [Example(prefix + e.prompt, e.solution, e.extra, e.index) for e in map(task.train_example, range(n))]


def save_model(s: Setting, path: str) -> None:
    from transformers.utils import logging as hf_logging

    from policyforge.models.tiny import TinySpec, char_tokenizer, tiny_model

    hf_logging.disable_progress_bar()
    if s.weights:
        shutil.copytree(REPO / s.weights, path)
        return
    tok = char_tokenizer()
    tiny_model(tok, TinySpec(s.hidden, s.layers, s.heads, s.intermediate), seed=SEED).save_pretrained(path)
    tok.save_pretrained(path)


# ---------------------------------------------------------------- policyforge side


class PolicyforgeRunner:
    """policyforge's own RL step (policyforge.train.loop.train_step), on parts built as `train` builds them."""

    def __init__(self, path: str, s: Setting, examples: list[Example], shared_prefix: bool = True,
                 device: str = "cpu"):
        from policyforge.models.load import load_model
        from policyforge.train.algorithm import resolve
        from policyforge.train.config import AlgoConfig, Config, OptimConfig, RolloutConfig
        from policyforge.train.validate import validate
        from policyforge.train.loop import StepParts
        from policyforge.train.setup import build_optimizer

        cfg = Config()
        cfg.rollout = RolloutConfig(prompts_per_step=s.prompts, group_size=s.group, max_new_tokens=s.new_tokens,
                                    temperature=1.0)
        cfg.algo = AlgoConfig(advantage="grpo", loss="ppo_clip", loss_kwargs={"eps_low": 0.2, "eps_high": 0.2},
                              drift={}, aggregation="token_mean")
        cfg.optim = OptimConfig(lr=LR, betas=(0.9, 0.99), weight_decay=0.0, max_grad_norm=1.0, updates_per_batch=1,
                                micro_batch_size=s.prompts * s.group, micro_batch_tokens=0, shared_prefix=shared_prefix)
        cfg.train.track_ref_kl = False  # so no reference model: TRL runs beta=0 without one
        validate(cfg)
        model, tok = load_model(path, "float32", device, SEED)
        optimizer, scheduler = build_optimizer(model, cfg)
        self.parts = StepParts(cfg, resolve(cfg.algo), model, tok, None, optimizer, scheduler,
                               torch.Generator(device=device).manual_seed(SEED), BuiltinTask.reward)
        self.model, self.tok, self.examples = model, tok, examples
        self.pos, self.n_step = 0, 0

    def step(self) -> dict:
        from policyforge.train.loop import train_step

        n = self.parts.cfg.rollout.prompts_per_step
        examples = [self.examples[(self.pos + i) % len(self.examples)] for i in range(n)]
        self.pos += n
        self.n_step += 1
        sync()
        c0 = cpu_snapshot()
        t0 = time.perf_counter()
        rec, batch = train_step(self.parts, self.n_step, examples)
        sync()
        seconds = time.perf_counter() - t0
        return {"s": seconds, "other": other_load(c0, cpu_snapshot()),
                "phases": {"rollout": rec["rollout_s"], "update": rec["update_s"]},
                "zero_var_group_frac": rec["zero_var_group_frac"], "reward_mean": rec["reward_mean"],
                "prompt_lens": batch.prompt_mask.sum(-1).tolist(), "groups": batch.group.tolist(),
                "completion_lens": batch.completion_mask.sum(-1).long().tolist()}


# ---------------------------------------------------------------- TRL side


def make_trl_trainer(path: str, s: Setting, examples: list[Example], max_steps: int, out_dir: str, callback,
                     device: str = "cpu"):
    """A GRPOTrainer doing one generation + one optimiser step per Trainer step; `callback.seen` gets lengths."""
    import transformers
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    transformers.logging.set_verbosity_error()
    batch = s.prompts * s.group

    def exact_match_reward(prompts, completions, completion_ids, answer, **_):
        callback.seen.append((list(prompts), [len(c) for c in completion_ids]))  # lengths, read outside timing
        return [exact_match(p, c, answer=a) for p, c, a in zip(prompts, completions, answer)]

    args = GRPOConfig(
        output_dir=out_dir, use_cpu=device == "cpu", bf16=False, fp16=False, report_to="none", disable_tqdm=True,
        save_strategy="no", logging_steps=10, seed=SEED, max_steps=max_steps,
        per_device_train_batch_size=batch, gradient_accumulation_steps=1, num_generations=s.group,
        max_completion_length=s.new_tokens, temperature=1.0, top_p=1.0, top_k=0,
        beta=0.0, num_iterations=1, epsilon=0.2, loss_type="dapo", scale_rewards="group",
        learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=0.99, max_grad_norm=1.0, gradient_checkpointing=False,
        use_vllm=False, shuffle_dataset=False, dataloader_num_workers=0, model_init_kwargs={"dtype": "float32"},
    )
    ds = Dataset.from_list([{"prompt": e.prompt, "answer": e.extra["answer"]} for e in examples])
    tok = AutoTokenizer.from_pretrained(path)
    trainer = GRPOTrainer(model=path, reward_funcs=[exact_match_reward], args=args, train_dataset=ds,
                          processing_class=tok, callbacks=[callback])
    trainer.remove_callback(transformers.PrinterCallback)  # its log dicts would bury the bench's own lines
    return trainer
