"""The speed of policyforge's rollout and update pieces, each against the path it replaced.

    python bench/parts.py [--settings tiny,small,long] [--repeats 6]

Same model sizes and batches as bench/vs_trl.py (random weights of the built-in tiny Llama).
Variants of one piece alternate within each repeat; the best time of the repeats after the
first is printed, with the ratio to the first variant.
- generation: the generic path (the model's own forward and dynamic cache) with and without
  dropping finished rows, the lean decoder without dropping them, the lean decoder as used
  (finished rows dropped); both paths encode each group's prompt once;
- update: forward + backward of the batch's completion log-probs through the padded
  shared-prefix path (train/logprobs.py _grouped) and the packed one (train/packed.py).
`--settings demo`: the demo's update (train/step.py update, 16 x 8 completions from the shipped
checkpoints/demo-sft or --demo-model, scored by the task's verifier) with a backward on every sample and with
zero-advantage samples skipping it (optim.skip_zero_advantage), over several batches.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sides import SETTINGS, Setting, make_examples  # noqa: E402

from policyforge.models.tiny import TinySpec, char_tokenizer, tiny_model  # noqa: E402
from policyforge.rollout import sampler  # noqa: E402
from policyforge.train import logprobs  # noqa: E402
from policyforge.train.config import RolloutConfig  # noqa: E402
from policyforge.train.setup import rollout  # noqa: E402


def best_of(variants: dict, repeats: int) -> dict[str, float]:
    times = {k: [] for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: min(v[1:] or v) for k, v in times.items()}


def show(title: str, res: dict[str, float]) -> None:
    base = next(iter(res.values()))
    print(title + ": " + ", ".join(f"{k} {v:.4f} s ({base / v:.2f}x)" for k, v in res.items()), flush=True)


def bench(name: str, s: Setting, repeats: int) -> None:
    tok = char_tokenizer()
    model = tiny_model(tok, TinySpec(s.hidden, s.layers, s.heads, s.intermediate), seed=0)
    cfg = RolloutConfig(prompts_per_step=s.prompts, group_size=s.group, max_new_tokens=s.new_tokens)
    examples = make_examples(s, s.prompts)
    gen = torch.Generator().manual_seed(0)
    original = sampler.reason_unsupported

    def sample(generic: bool, compact_at: float):
        def run():
            sampler.reason_unsupported = (lambda *a: "generic") if generic else original
            sampler.COMPACT_AT = compact_at
            try:
                return rollout(model, tok, examples, cfg, gen)
            finally:
                sampler.reason_unsupported, sampler.COMPACT_AT = original, 0.125
        return run

    show(f"{name} generation", best_of({"generic": sample(True, 0.125), "generic, no dropping": sample(True, 2.0),
                                        "lean, no dropping": sample(False, 2.0), "lean": sample(False, 0.125)},
                                       repeats))
    batch = rollout(model, tok, examples, cfg, gen)
    first, inverse = logprobs.shared_prompts(batch)

    def update(fn):
        def run():
            model.zero_grad()
            fn()["logp"].sum().backward()
        return run

    show(f"{name} update (mean completion {float(batch.completion_mask.sum(-1).mean()):.1f} of {s.new_tokens})",
         best_of({"padded shared prefix": update(lambda: logprobs._grouped(model, batch, 1.0, False, first, inverse)),
                  "packed": update(lambda: logprobs._packed_stats(model, batch, 1.0, False, first, inverse))},
                 repeats))


def bench_skip(repeats: int, model_path: str, batches: int = 8) -> None:
    """The demo's optimiser update with and without the backward of zero-advantage samples."""
    from policyforge.data.tasks import BuiltinTask
    from policyforge.models.load import load_model
    from policyforge.rewards.score import score_parts, token_lists
    from policyforge.train.algorithm import resolve
    from policyforge.train.config import load_yaml
    from policyforge.train.step import BatchTensors, compute_advantages, inert_rows, update

    root = Path(__file__).resolve().parents[1]
    cfg = load_yaml(root / "configs" / "demo.yaml")
    model, tok = load_model(model_path or str(root / "checkpoints" / "demo-sft"), "float32", "cpu", 0)
    algo, task, gen = resolve(cfg.algo), BuiltinTask(cfg.data.task, seed=0, size=cfg.data.task_size), torch.Generator()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay put, so every variant sees the same
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    work, flat = [], 0.0
    for b in range(batches):
        n = cfg.rollout.prompts_per_step
        examples = [task.train_example(b * n + i) for i in range(n)]
        batch = rollout(model, tok, examples, cfg.rollout, gen.manual_seed(b))
        batch.scores, batch.reward_components, batch.reward_names = score_parts(
            task.reward, batch.examples, batch.completions,
            completion_ids=token_lists(batch.completion_ids, batch.completion_mask))
        bt = BatchTensors(compute_advantages(batch, algo, b), None)
        inert = inert_rows(bt.adv, batch.completion_mask, algo)  # what update() will skip
        flat += (0.0 if inert is None else float(inert.float().mean())) / batches
        work.append((batch, bt))
    model.train()

    def updates(skip: bool):
        def run():
            for b, (batch, bt) in enumerate(work):
                update(model, optimizer, sched, batch, bt, algo, step=b, updates=1, micro_batch_size=64,
                       max_grad_norm=1.0, temperature=1.0, max_len=cfg.rollout.max_new_tokens, shared_prefix=True,
                       skip_zero_advantage=skip)
        return run

    name = Path(model_path).name if model_path else "demo-sft"
    show(f"demo update from {name}, {batches} batches ({flat:.0%} of samples with zero advantage)",
         best_of({"backward on every sample": updates(False), "zero-advantage samples skip it": updates(True)},
                 repeats))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", default="tiny,small,long", help="any of tiny, small, long, demo")
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--demo-model", default="", help="model of the demo setting (default checkpoints/demo-sft; "
                    "a later checkpoint of a demo run has more groups with equal rewards)")
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in a.settings.split(","):
        if name == "demo":
            bench_skip(a.repeats, a.demo_model)
        else:
            bench(name, SETTINGS[name], a.repeats)


if __name__ == "__main__":
    main()
