"""policyforge vs TRL (GRPOTrainer): wall time of one RL step doing the same work, on CPU (or a GPU).

    python bench/vs_trl.py [--settings tiny,small,long] [--steps N] [--warmup W] [--block K] [--profile]
                           [--wait-quiet S] [--pf-no-shared-prefix] [--device cpu|cuda]

Settings: tiny, small, long (the CPU comparison); demo (the demo's workload: its warm start
checkpoints/demo-sft, 3.4M parameters, reversal words of 3-6 letters, 16 x 8 completions, 8 new
tokens, where rewards vary, so gradients are real and some groups have equal rewards, whose
backward policyforge skips: there the FLOP bound, which counts a backward for every token, is not
a lower bound); and large (~113M parameters, 16 x 8 completions, 128 new tokens: for a GPU, `--device cuda --settings small,large`; bench/gpu.sh runs that on the
project's device machine). On a GPU both sides run float32 on the device, each step is timed
after a synchronize, and memory is the CUDA allocator's peak instead of the process's RSS.

Needs the bench extra: `pip install -e '.[bench]'` (trl==1.16.0; on a CPU machine pass a
constraint file pinning torch==2.13.0 so pip never swaps the CPU build for a CUDA one).

What "the same work" means here, per setting:
- Weights: the built-in tiny Llama (policyforge.models.tiny) sized by the setting, saved with
  save_pretrained to a temp dir; policyforge loads it with load_model(path), TRL with the path.
  Same character tokenizer, float32, CPU, torch's default thread count on both sides.
- Data: the built-in reversal task's training prompts (the long setting prefixes a fixed
  ~245-character context of tokenizer characters, for ~256-token prompts); reward: the task's
  exact-match verifier, called once per completion on both sides.
- Step = generate (prompts x group completions, temperature 1, no top-k/top-p, up to
  max_new_tokens) + reward + group z-score advantages + clipped surrogate (eps 0.2, token-mean,
  no KL, one update per batch, so no old-log-prob forward on either side) + backward + grad clip
  at 1.0 + AdamW(betas 0.9/0.99, no weight decay, constant lr). TRL: beta=0, num_iterations=1,
  loss_type=dapo, scale_rewards=group, gradient_accumulation_steps=1 with
  per_device_train_batch_size = the whole batch (one generation and one optimiser step per
  Trainer step), gradient_checkpointing OFF (TRL defaults it on; policyforge has none, and it
  would only add recomputation), bf16/fp16 off, use_cpu, no vLLM, report_to none.
  policyforge: advantage grpo, loss ppo_clip, aggregation token_mean, no drift,
  track_ref_kl off, updates_per_batch 1, micro_batch_size = whole batch (TRL does one forward),
  optim.shared_prefix on (its default: the training forward encodes each group's prompt once,
  same log-probs and gradients; its sampler always does so; TRL encodes every sequence's
  prompt in both). --pf-no-shared-prefix turns the training-side one off, to see its worth.
- Generation budget: neither side forces exactly max_new_tokens (policyforge's sampler has no
  min_new_tokens / ignore-EOS option). Both sample from the same untrained weights, whose EOS
  probability is ~1/58 per token, so in a batch of 64+ sequences some sequence runs to the
  budget nearly always: both sides run max_new_tokens decode steps and train on the same padded
  width. The rewards are all 0 (untrained model), so the weights barely move and the two sides
  keep sampling from the same distribution. The mean completion length of each side is printed
  to show the token counts match.

Timing: one process, one TRL trainer.train() call; a TrainerCallback alternates blocks: after
the warm-up TRL steps it runs the policyforge warm-up steps, then after every K timed TRL steps
it runs K timed policyforge steps (inside on_step_end, outside TRL's timed window). A TRL step
is timed from the end of the previous step's callback to its own on_step_end (so it includes
the Trainer's per-step batch fetch and logging), a policyforge step around the step function,
which is policyforge.train.loop.train_step, the loop's own step (rollout, score, advantages,
update, metrics record; the loop adds only file writes, evaluation and checkpoints).

A shared 2-core machine: a torch step whose two threads share the cores with another process
runs several times slower (each parallel op waits for a descheduled thread), so every step
records how much CPU other processes took meanwhile (/proc/stat minus this process). Steps
where they took >= 10% are "contended": blocks go on (up to 3x --steps) until each side has
--steps uncontended ones, the script waits for a quiet CPU between blocks (--wait-quiet budget
per setting), and medians are over uncontended steps (all steps if fewer than 3).

Memory: RSS of a torch process is mostly allocator-owned memory that tracemalloc never sees, and
in one process the two sides would reuse each other's freed heap, so each side is measured in
its own subprocess (only that library imported): after one warm-up step the kernel's RSS high
water mark is reset (/proc/self/clear_refs = 5), a few steps run, and VmHWM minus the RSS at
reset is the step's transient working memory; the process's whole-life peak (imports, model,
optimiser state) is reported too.

FLOP bound: a large float32 matmul is timed on the spot for the machine's FLOP/s. A step's
useful FLOPs, with N parameters (tied embeddings counted once: the lm_head matmul), L layers,
hidden h, real (unpadded) tokens only, and one forward pass costing
  2 N p + 2 L h p^2              for a group's prompt of p tokens (causal attention), once per group
  2 N f + 4 L h (p f + f^2 / 2)  for a completion of c tokens, of which f = c - 1 are fed to the
                                 model (the last sampled one never is; each attends to p + j keys),
are 4 forward passes' worth: 1 for generation (prefill + decode), 3 for training forward +
backward. That is 2*params*generated + 6*params*trained tokens, counting each group's shared
prompt once (the least work the step needs; the bound with every sequence's prompt counted is
printed too). The bound is FLOPs / matmul FLOP/s, at the best rate measured in the run (before
each setting and at the end: the rate of this shared machine drifts by tens of percent);
pf_flop_fraction = bound / measured policyforge step time.

In-step matmul time: after the timed steps, three more policyforge steps run under
torch.profiler, and the time inside its matrix-multiply kernels (mm, addmm, bmm, baddbmm, at the
step's own shapes: every projection and the LM head, the decode attention, which the lean decoder
does as bmm / baddbmm, and the decode rotation; not the training attention, which is SDPA) is
printed beside those steps' wall time and TRL's time / 3, with a `FLOOR setting=...
pf_matmul_s=... pf_profiled_s=... trl_over_3_s=...` line (the name is kept for scripts). It is
an upper estimate of the matmul work, not a lower bound: it includes the profiler's per-call cost
and the slowdown small matmuls show inside a step against the same call alone, and it counts
choices such as the rotation done as a bmm. The FLOP bound above is the lower one.

Matmuls alone: the same profiled steps record each matmul's shapes, and bench/alone.py times every
shape by itself in a loop (random tensors, best of 3) and adds up count x time per step, printed as
`ALONE setting=... pf_projections_s=... pf_batched_s=... trl_over_3_s=...`. The projections and LM
head (mm, addmm) are the work any float32 implementation of the step does with this machine's
BLAS, at the rate that BLAS reaches for each shape with nothing else running; bmm / baddbmm are
policyforge's decode attention and rotation, which could be written other ways.

The two sides are built in bench/sides.py, the machine measurements are in bench/machine.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections import Counter
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when run by `policyforge bench` (runpy)
from alone import MATMUL_OPS, alone_seconds, matmul_calls  # noqa: E402
from machine import QUIET, QuietWaiter, clean, cpu_snapshot, matmul_flops, other_load, peak_kb, reset_peak, sync  # noqa: E402
from sides import SEED, SETTINGS, PolicyforgeRunner, Setting, make_examples, make_trl_trainer, save_model  # noqa: E402


def make_alternator(warmup: int, block: int, steps: int, max_steps: int, pf_run, quiet: "QuietWaiter"):
    """TrainerCallback timing TRL steps and running policyforge blocks between them.

    Blocks go on until each side has `steps` uncontended steps (or TRL reaches max_steps);
    before each block it waits (within the waiter's budget) for other processes to leave the CPU.
    """
    from transformers import TrainerCallback

    def enough(recs):
        return sum(r["other"] < QUIET for r in recs) >= steps

    class Alternator(TrainerCallback):
        def __init__(self):
            self.seen, self.trl, self.pf, self.pending = [], [], [], 0
            self.t_last = self.t_begin = 0.0
            self.c_last = None

        def on_train_begin(self, args, state, control, **kw):
            self.c_last = cpu_snapshot()
            self.t_last = time.perf_counter()

        def on_step_begin(self, args, state, control, **kw):
            self.t_begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            sync()  # on a GPU, the step's queued kernels belong to it
            now = time.perf_counter()
            other = other_load(self.c_last, cpu_snapshot())
            step = state.global_step
            seen, self.seen = self.seen, []
            if step > warmup:
                self.trl.append({"s": now - self.t_last, "inner_s": now - self.t_begin, "other": other,
                                 "seen": seen})
                self.pending += 1
            if step == warmup:
                for _ in range(warmup):
                    pf_run()
                quiet.wait()
            elif step > warmup and (self.pending == block or step == max_steps):
                quiet.wait()
                self.pf += [pf_run() for _ in range(self.pending)]
                self.pending = 0
                if enough(self.trl) and enough(self.pf):
                    control.should_training_stop = True
                else:
                    quiet.wait()
            self.c_last = cpu_snapshot()
            self.t_last = time.perf_counter()

    return Alternator()


# ---------------------------------------------------------------- measurement helpers


def step_flops(s: Setting, params: int, rec: dict, shared: bool = True) -> float:
    """Useful FLOPs of one step (see the module docstring); `shared`: each group's prompt counted once."""
    lh = s.layers * s.hidden
    total, seen = 0.0, set()
    for p, c, g in zip(rec["prompt_lens"], rec["completion_lens"], rec["groups"]):
        if not shared or g not in seen:  # the prompt: 2 N p + 2 L h p^2 per forward
            total += 4 * (2 * params * p + 2 * lh * p * p)
            seen.add(g)
        fed = max(c - 1, 0)  # the last sampled token is never fed back: not in generation, not in training
        total += 4 * (2 * params * fed + 4 * lh * (p * fed + fed * fed / 2))  # fed tokens attend to p + j keys
    return total


def probe(side: str, name: str, path: str, steps: int, shared_prefix: bool, device: str) -> None:
    """Subprocess: one side alone, 1 warm-up step, then `steps` steps with the RSS peak tracked."""
    s = SETTINGS[name]
    examples = make_examples(s, (steps + 1) * s.prompts)
    mark = {}
    if side == "pf":
        runner = PolicyforgeRunner(path, s, examples, shared_prefix, device)
        runner.step()
        # policyforge frees its gradients at the start of the next update, TRL's Trainer right after each
        # step: free them here too, so neither side's base holds gradients its step peak then leaves out
        runner.model.zero_grad(set_to_none=True)
        reset_peak(mark, device)
        for _ in range(steps):
            runner.step()
    else:
        from transformers import TrainerCallback

        class Mark(TrainerCallback):
            seen: list = []

            def on_step_end(self, args, state, control, **kw):
                if state.global_step == 1:
                    reset_peak(mark, device)

        with tempfile.TemporaryDirectory() as out:
            make_trl_trainer(path, s, examples, steps + 1, out, Mark(), device).train()
    after = peak_kb(device)
    print("PROBE " + json.dumps({"base_mb": mark["base"] / 1024, "step_peak_mb": after / 1024,
                                 "life_peak_mb": max(mark["before"], after) / 1024}))


def run_probe(side: str, name: str, path: str, shared_prefix: bool, device: str, steps: int = 3) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--probe", side, "--settings", name, "--model-dir", path,
           "--steps", str(steps), "--device", device] + ([] if shared_prefix else ["--pf-no-shared-prefix"])
    res = subprocess.run(cmd, capture_output=True, text=True)
    for line in res.stdout.splitlines():
        if line.startswith("PROBE "):
            return json.loads(line[6:])
    raise RuntimeError(f"memory probe {side}/{name} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")


def profile_pf(runner: PolicyforgeRunner) -> None:
    """torch.profiler tables of one policyforge step's rollout and update: the ops where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    import policyforge.train.loop as loop_mod  # the step calls these two by the names its modules imported
    import policyforge.train.sampling as sampling_mod

    tables, originals = {}, {(sampling_mod, "rollout"): sampling_mod.rollout, (loop_mod, "update"): loop_mod.update}

    def profiled(name, fn):
        def run(*args, **kwargs):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                out = fn(*args, **kwargs)
            tables[name] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10,
                                                     max_name_column_width=40)
            return out
        return run

    for (mod, name), fn in originals.items():
        setattr(mod, name, profiled(name, fn))
    try:
        runner.step()
    finally:
        for (mod, name), fn in originals.items():
            setattr(mod, name, fn)
    for name, table in tables.items():
        print(f"--- policyforge {name}, one step, by self CPU time ---\n{table}")


def matmul_seconds(runner: PolicyforgeRunner, repeats: int = 3) -> tuple[float, float, dict[str, float]]:
    """(matrix-multiply kernel time, wall time), each the median over `repeats` policyforge steps run under
    torch.profiler, and the same steps' matmuls replayed alone shape by shape (bench/alone.py), per step."""
    from torch.profiler import ProfilerActivity, profile

    cuda = next(runner.model.parameters()).is_cuda
    mm, wall, calls = [], [], Counter()
    for _ in range(repeats):
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []),
                     record_shapes=True) as prof:
            wall.append(runner.step()["s"])
        # on a GPU the op's kernels run on the device: their time, not the CPU's launch time
        took = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
        mm.append(sum(took(e) for e in prof.key_averages() if e.key in MATMUL_OPS) / 1e6)
        calls.update(matmul_calls(prof, repeats))
    if not min(mm) > 0:
        raise RuntimeError("the profiler recorded no matrix-multiply time: no kernel activity was captured")
    return statistics.median(mm), statistics.median(wall), alone_seconds(calls, "cuda" if cuda else "cpu")


# ---------------------------------------------------------------- one setting


def summarise(s: Setting, params: int, recs: list[dict]) -> dict:
    used = clean(recs)
    toks = sum(sum(r["completion_lens"]) for r in used)
    return {"median_s": statistics.median(r["s"] for r in used), "min_s": min(r["s"] for r in recs),
            "tok_s": toks / sum(r["s"] for r in used), "mean_len": toks / sum(len(r["completion_lens"]) for r in used),
            "flops": statistics.median(step_flops(s, params, r) for r in used),
            "unshared": statistics.median(step_flops(s, params, r, shared=False) for r in used),
            "used": used, "clean": sum(r["other"] < QUIET for r in recs), "n": len(recs)}


def bench_setting(name: str, a: argparse.Namespace, peaks: list[float]) -> dict:
    """Time, profile and measure one setting; prints its block and returns {'trl': ..., 'pf': ...}."""
    s, steps, shared_prefix = SETTINGS[name], a.steps, not a.pf_no_shared_prefix
    print(f"\n--- {name}: {a.warmup} warm-up + {steps} timed steps per side in alternating blocks of {a.block}, "
          "then each side's memory in its own process ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model")
        save_model(s, path)
        total = a.warmup + 3 * steps  # TRL's cap: blocks stop early once both sides have `steps` uncontended steps
        examples = make_examples(s, (total + 1) * s.prompts)
        pf = PolicyforgeRunner(path, s, examples, shared_prefix, a.device)
        params = sum(p.numel() for p in pf.model.parameters())
        quiet = QuietWaiter(a.wait_quiet)
        cb = make_alternator(a.warmup, a.block, steps, total, pf.step, quiet)
        trainer = make_trl_trainer(path, s, examples, total, os.path.join(tmp, "trl"), cb, a.device)
        assert sum(p.numel() for p in trainer.model.parameters()) == params
        quiet.wait()
        peaks.append(matmul_flops(device=a.device))
        trainer.train()
        for r in cb.trl:  # token counts, computed outside the timed window
            r["prompt_lens"] = [len(pf.tok(p, add_special_tokens=False)["input_ids"]) for ps, _ in r["seen"] for p in ps]
            r["completion_lens"] = [c for _, cs in r["seen"] for c in cs]
            ids: dict[str, int] = {}
            r["groups"] = [ids.setdefault(p, len(ids)) for ps, _ in r["seen"] for p in ps]
        if a.profile:
            profile_pf(pf)
        floor, profiled, alone = matmul_seconds(pf)
        mem = {side: run_probe(side, name, path, shared_prefix, a.device) for side in ("trl", "pf")}

    assert len(cb.trl) == len(cb.pf) >= steps, (len(cb.trl), len(cb.pf))
    out = {"trl": summarise(s, params, cb.trl), "pf": summarise(s, params, cb.pf)}
    peak = max(peaks)
    print(f"\n=== setting {name}: {params / 1e6:.2f}M params, {s.prompts}x{s.group} completions, "
          f"{s.new_tokens} new tokens, prompts ~{statistics.mean(cb.pf[0]['prompt_lens']):.0f} tokens; "
          f"{len(cb.pf)} timed steps each (warm-up {a.warmup}, alternating blocks of {a.block})")
    for side, label in (("trl", "TRL GRPOTrainer"), ("pf", "policyforge")):
        o, m = out[side], mem[side]
        print(f"{label:16s} median {o['median_s']:.3f} s/step (min {o['min_s']:.3f}; {o['clean']}/{o['n']} steps "
              f"uncontended, median over {len(o['used'])})  {o['tok_s']:.0f} completion tok/s  "
              f"mean completion {o['mean_len']:.1f} tok  FLOP bound {o['flops'] / peak:.3f} s = "
              f"{o['flops'] / peak / o['median_s']:.1%} of the step (so far)\n"
              f"{'':16s} {'RSS' if a.device == 'cpu' else 'GPU memory allocated'}: step peak +{m['step_peak_mb'] - m['base_mb']:.0f} MB over {m['base_mb']:.0f} MB "
              f"after load and one step; {'process' if a.device == 'cpu' else 'allocated'} peak "
              f"{m['life_peak_mb']:.0f} MB")
        print(f"{'':16s} steps (s, * = contended): " + " ".join(
            f"{r['s']:.3f}{'*' if r['other'] >= QUIET else ''}" for r in getattr(cb, side)))
    inner = statistics.median(r["inner_s"] for r in out["trl"]["used"])
    print(f"FLOP bound with every sequence's prompt counted (no prefix sharing): {out['pf']['unshared'] / peak:.3f} s")
    print(f"TRL, on_step_begin -> on_step_end only (no batch fetch / logging): median {inner:.3f} s")
    ph = {k: statistics.median(r["phases"][k] for r in out["pf"]["used"]) for k in cb.pf[0]["phases"]}
    print("policyforge phases, median s: " + "  ".join(f"{k} {v:.3f}" for k, v in ph.items()), flush=True)
    used = out["pf"]["used"]
    print(f"policyforge batches: mean reward {statistics.mean(r['reward_mean'] for r in used):.3f}, "
          f"{statistics.mean(r['zero_var_group_frac'] for r in used):.0%} of groups with equal rewards "
          "(zero advantage: optim.skip_zero_advantage skips their backward, except that when every group has "
          "equal rewards one micro-batch, here the whole batch, still runs it)")
    trl_s = out["trl"]["median_s"]
    print(f"policyforge matrix multiplies in the step (torch.profiler, 3 more steps, median; an upper estimate: "
          f"profiler cost and in-step slowdown included): {floor:.3f} s of those steps' {profiled:.3f} s; the rest "
          f"(sampling, norms, activations, training attention, loss, optimiser, Python) {profiled - floor:.3f} s. "
          f"A step 3x faster than TRL would take {trl_s / 3:.3f} s")
    print(f"FLOOR setting={name} pf_matmul_s={floor:.4f} pf_profiled_s={profiled:.4f} trl_over_3_s={trl_s / 3:.4f}",
          flush=True)
    print(f"the same steps' matrix multiplies, each shape timed alone (bench/alone.py), per step: projections and "
          f"LM head (mm, addmm) {alone['projections']:.3f} s + decode attention and rotation (bmm, baddbmm) "
          f"{alone['batched']:.3f} s = {alone['all']:.3f} s, against TRL / 3 = {trl_s / 3:.3f} s")
    print(f"ALONE setting={name} pf_projections_s={alone['projections']:.4f} pf_batched_s={alone['batched']:.4f} "
          f"trl_over_3_s={trl_s / 3:.4f}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", default="tiny,small,long", help="comma-separated: " + ",".join(SETTINGS))
    ap.add_argument("--steps", type=int, default=10, help="timed steps per side per setting")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per side first")
    ap.add_argument("--block", type=int, default=2, help="steps per side in each alternating block")
    ap.add_argument("--profile", action="store_true",
                    help="per setting, torch.profiler tables of one policyforge step's rollout and update")
    ap.add_argument("--wait-quiet", type=float, default=300.0,
                    help="per setting, wait in all up to this many seconds for other processes to leave the CPU")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                    help="where both sides run; 'cuda' for the GPU settings (small, large), memory is then the "
                         "GPU's allocated peak")
    ap.add_argument("--pf-no-shared-prefix", action="store_true",
                    help="policyforge with optim.shared_prefix off: the training forward encodes every sequence's "
                         "prompt, as TRL does (its sampler still shares each group's prompt)")
    ap.add_argument("--probe", choices=("trl", "pf"), help=argparse.SUPPRESS)  # internal: memory subprocess
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    a = ap.parse_args()
    names = [n.strip() for n in a.settings.split(",") if n.strip()]
    bad = [n for n in names if n not in SETTINGS]
    if bad:
        ap.error(f"unknown setting(s) {bad}; valid: {', '.join(SETTINGS)}")
    try:
        import trl  # noqa: F401
    except ImportError:
        raise SystemExit("error: TRL is not installed: `make bench`, or `pip install -e '.[bench]'` "
                         "(on a CPU machine with a constraint pinning the installed torch)") from None
    if a.probe:
        probe(a.probe, names[0], a.model_dir, a.steps, not a.pf_no_shared_prefix, a.device)
        return
    torch.manual_seed(SEED)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    peaks: list[float] = []  # float32 matmul FLOP/s, measured before each setting and at the end
    outs = {n: bench_setting(n, a, peaks) for n in names}
    QuietWaiter(a.wait_quiet).wait()
    peaks.append(matmul_flops(device=a.device))
    peak = max(peaks)
    print(f"\nfloat32 {2048 if a.device == 'cpu' else 8192}^3 matmul: {', '.join(f'{p / 1e9:.0f}' for p in peaks)} GFLOP/s; FLOP fractions use the "
          f"best, {peak / 1e9:.0f} GFLOP/s")
    for n, out in outs.items():
        t, p = out["trl"], out["pf"]
        print(f"{n}: FLOP bound {p['flops'] / peak:.3f} s; fraction of it reached: TRL "
              f"{t['flops'] / peak / t['median_s']:.1%}, policyforge {p['flops'] / peak / p['median_s']:.1%}")
    for n, out in outs.items():
        t, p = out["trl"], out["pf"]
        print(f"RESULT setting={n} trl_s={t['median_s']:.4f} pf_s={p['median_s']:.4f} "
              f"speedup={t['median_s'] / p['median_s']:.3f} pf_flop_fraction={p['flops'] / peak / p['median_s']:.4f}")


if __name__ == "__main__":
    main()
