"""Fine-tuning targets (issue "Fine-tuning and applications"), measured as a user runs them.

    pytest bench/bench_finetune.py --benchmark-only -s      # the short form (below)
    BENCH_FINETUNE_FULL=1 pytest bench/bench_finetune.py --benchmark-only -s    # the full table
    BENCH_PRETRAINED=out/pretrain pytest ...                # reuse a pre-trained run
    python bench/bench_finetune.py [--pretrained out/pretrain] [--seeds N] [--no-control]
                                   [--no-applications]       # the full table by default

How long (Intel Xeon with AMX, 2 cores shared with other jobs at a load of 2-3, BENCH_THREADS=1,
measured here): pre-training 600 steps about 630 s; the short form 190 s after it (with
BENCH_PRETRAINED: a full classification 33 s, LoRA 150 s), so about 14 minutes in all; the full
form 1071 s after it (three seeds of full, LoRA and control classification 35-155 s each, the
chat recipe 173 s, chat with LoRA 178 s, the translation recipe 43 s), about 28 minutes in all.

1. Brief pre-training: `python -m tinyroots.train --max-steps 600` (defaults otherwise: 4 layers,
   128 wide, BPE 1024, the embedded Shakespeare). Nothing in it has seen the task's data.
2. Intent classification on examples/faq (8 intents, 4000 train / 480 val messages, synthetic,
   a third with a distracting second topic): full fine-tuning, 600 steps of 16, mean pooling,
   as one `python -m tinyroots.finetune classify ...` process on BENCH_THREADS (2) threads; the
   wall time counts everything (imports, loading, tokenizing, 13 evaluations, saving).
   Target: >= 95% validation accuracy in under 120 s.
3. The same with LoRA (r=8 on attention, dropout 0.1 on the adapters' input, plus the head):
   2.65% of the parameters trainable. LoRA moves more slowly, so it gets 3000 steps (and a 3x
   higher learning rate). Target: within LORA_GAP_TARGET points of full fine-tuning.
4. Control (full form only): the same full fine-tuning from a *random* model with the same
   shape and tokenizer, to show what the pre-training contributes.
5. The applications as README.md and examples/README.md write them (full form only), each with
   the task's defaults (finetune/config.py TASK_DEFAULTS) for what the command leaves out:
   - the chat recipe (full fine-tuning, the chat defaults) and the same with LoRA r=8:
     intent_accuracy, the share of held-out paraphrases (faq/chat_paraphrase.jsonl) and of the
     first 64 training dialogues whose greedy reply is their intent's answer (sft.reply_intent);
   - examples' translation recipe: BLEU on the validation pairs and the showcase sentence.
   Both forms check the classifier's accuracy on faq/intent_paraphrase.jsonl (frames, items,
   cities and streets training never saw) and its answer to "my parcel never came".

The short form runs steps 1-3 with one seed; the full form runs steps 2-4 for --seeds seeds
(data order, head init, adapters; 3 by default) and then step 5. The table shows each seed's
figures and the mean. Every command is printed; results go to OUT/results.json.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXAMPLES = os.path.join(ROOT, "examples")
THREADS = int(os.environ.get("BENCH_THREADS", "2"))

PRETRAIN = ["--max-steps", "600"]
FAQ = os.path.join(EXAMPLES, "faq")
COMMON = ["--train", os.path.join(FAQ, "intent_train.jsonl"),
          "--val", os.path.join(FAQ, "intent_val.jsonl"),
          "--test", os.path.join(FAQ, "intent_paraphrase.jsonl"),
          "--batch-size", "16", "--warmup-steps", "20"]
FULL = ["--max-steps", "600", "--eval-interval", "50", "--learning-rate", "1e-3",
        "--pooling", "mean"]
LORA = ["--max-steps", "3000", "--eval-interval", "100", "--learning-rate", "3e-3",
        "--lora-rank", "8", "--lora-alpha", "16", "--lora-targets", "attn",
        "--lora-dropout", "0.1", "--pooling", "mean"]
# BENCH_FINETUNE_FULL=1: every seed, the control and the applications (about 28 minutes)
FULL_TABLE = os.environ.get("BENCH_FINETUNE_FULL", "") == "1"
PRETRAINED = os.environ.get("BENCH_PRETRAINED") or None


def sh(args, log, output=False):
    """Run `python ARGS` in the repository -> its wall time (and stdout when output=True)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), PYTHONPATH=ROOT)
    cmd = [sys.executable] + args
    log("$ " + " ".join(a if " " not in a else repr(a) for a in ["python"] + args[0:]))
    t0 = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.time() - t0
    if res.returncode:
        raise RuntimeError(f"command failed ({res.returncode}):\n{res.stdout[-3000:]}\n"
                           f"{res.stderr[-3000:]}")
    return (wall, res.stdout) if output else wall


def finetune(init, out_dir, extra, seed, log):
    wall = sh(["-m", "tinyroots.finetune", "classify", "--init", init, "--out-dir", out_dir,
               "--num-threads", str(THREADS), "--progress", "false", "--seed", str(seed)]
              + COMMON + extra, log)
    with open(os.path.join(out_dir, "eval.json")) as f:
        m = json.load(f)
    return {"seed": seed, "accuracy": m["accuracy"], "f1": m["f1"], "wall_s": round(wall, 1),
            "paraphrase_accuracy": m["test"]["intent_paraphrase"]["accuracy"],
            "train_time_s": m["train_time_s"], "best_step": m["best_step"],
            "trainable_params": m["trainable_params"], "total_params": m["total_params"],
            "trainable_percent": m["trainable_percent"]}


# ---------------------------------------------------------------------------------------------
# the applications, as the documents write them


CHAT = ["--train", os.path.join(FAQ, "chat_train.jsonl"),
        "--val", os.path.join(FAQ, "chat_val.jsonl")]
CHAT_EXAMPLES = ["--block-size", "256", "--batch-size", "8", "--max-steps", "1600",
                 "--learning-rate", "1e-3", "--eval-interval", "100"]   # = the chat defaults
CHAT_LORA = ["--lora-rank", "8"]        # the defaults: every projection, lr 1e-3 x 3
TRANSLATE = ["--train", os.path.join(EXAMPLES, "translation", "en_fr_train.jsonl"),
             "--val", os.path.join(EXAMPLES, "translation", "en_fr_val.jsonl"),
             "--max-steps", "800", "--learning-rate", "1e-3", "--eval-interval", "100"]
# what README and examples/README.md promise, a little under what was measured there (classify
# paraphrases 89.6%, chat 64/64 training questions and 82% of paraphrases, BLEU 95.2). LoRA's
# classifier was within 2 points of full fine-tuning on the earlier, template-only data; on the
# varied data 3000 steps bring it to 2.1 points with the default seed (96.7% against 98.8%) and
# 2.5 points over seeds 0-2 (96.1% against 98.6%)
PARAPHRASE_TARGET, CHAT_TRAIN_TARGET, CHAT_PARAPHRASE_TARGET = 0.85, 0.95, 0.75
BLEU_TARGET, LORA_GAP_TARGET = 90.0, 3.0
SHOWCASE = ("The small cat does not eat the red apple.",
            "Le petit chat ne mange pas la pomme rouge.")


def chat(init, out_dir, extra, log):
    """One chat recipe -> val loss and intent accuracy on the paraphrases and on 64 training
    dialogues (its own questions)."""
    os.makedirs(out_dir, exist_ok=True)
    own = os.path.join(out_dir, "chat_train_first64.jsonl")
    with open(os.path.join(FAQ, "chat_train.jsonl"), encoding="utf-8") as f, \
            open(own, "w", encoding="utf-8") as g:
        g.writelines(f.readlines()[:64])
    wall = sh(["-m", "tinyroots.finetune", "chat", "--init", init, "--out-dir", out_dir,
               "--progress", "false", "--overwrite", "--test",
               os.path.join(FAQ, "chat_paraphrase.jsonl") + "," + own] + CHAT + extra, log)
    with open(os.path.join(out_dir, "eval.json")) as f:
        m = json.load(f)
    return {"val_loss": m["val_loss"], "wall_s": round(wall, 1), "steps": m["steps"],
            "paraphrase_intent_accuracy": m["test"]["chat_paraphrase"]["intent_accuracy"],
            "train_intent_accuracy": m["test"]["chat_train_first64"]["intent_accuracy"],
            "sample": m["samples"][0]}


def translate(init, out_dir, log):
    wall = sh(["-m", "tinyroots.finetune", "translate", "--init", init, "--out-dir", out_dir,
               "--progress", "false", "--overwrite"] + TRANSLATE, log)
    with open(os.path.join(out_dir, "eval.json")) as f:
        m = json.load(f)
    _, said = sh(["-m", "tinyroots.generate", "--checkpoint", out_dir, "--task", "translate",
                  "--prompt", SHOWCASE[0], "--temperature", "0"], log, output=True)
    return {"bleu": m["bleu"], "val_loss": m["val_loss"], "wall_s": round(wall, 1),
            "showcase": said.strip(), "showcase_right": said.strip() == SHOWCASE[1]}


def parcel_answer(clf_dir):
    sys.path.insert(0, ROOT)
    from tinyroots.finetune import load_classifier, predict
    model, tok, labels, pad = load_classifier(clf_dir)
    return predict(model, tok, ["my parcel never came"], labels, pad)[0]


def applications(pretrained, out, log=print):
    r = {"chat_examples": chat(pretrained, os.path.join(out, "faq-chat"), CHAT_EXAMPLES, log)}
    log(f"  chat recipe (full): {r['chat_examples']}")
    r["chat_lora"] = chat(pretrained, os.path.join(out, "bot-lora"), CHAT_LORA, log)
    log(f"  chat with LoRA: {r['chat_lora']}")
    r["translate"] = translate(pretrained, os.path.join(out, "en-fr"), log)
    log(f"  translation: {r['translate']}")
    return r


def load_average():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def random_twin(pretrained, path):
    """A randomly initialised model with the pre-trained one's shape and tokenizer."""
    sys.path.insert(0, ROOT)
    import tinyroots as tr
    from tinyroots.checkpoint import load_model_and_tokenizer
    model, tok, _ = load_model_and_tokenizer(pretrained)
    tr.manual_seed(0)
    tr.GPT(model.config).save_pretrained(path, tokenizer=tok)
    return path


def run(out, pretrained=None, control=True, seeds=3, log=print, apps=True):
    os.makedirs(out, exist_ok=True)
    sh([os.path.join(EXAMPLES, "make_faq.py")], log)
    results = {"threads": THREADS, "load_average_before": load_average()}
    if pretrained is None:
        pretrained = os.path.join(out, "pretrain")
        results["pretrain_wall_s"] = round(sh(
            ["-m", "tinyroots.train", "--out-dir", pretrained, "--num-threads", str(THREADS),
             "--progress", "false", "--plot", "false", "--sample-tokens", "0"] + PRETRAIN,
            log), 1)
        with open(os.path.join(pretrained, "summary.json")) as f:
            results["pretrain_val_loss"] = json.load(f)["best_val_loss"]
    twin = random_twin(pretrained, os.path.join(out, "random-init")) if control else None
    runs = {"full": [], "lora": [], "scratch": []}
    for seed in range(seeds):
        runs["full"].append(finetune(pretrained, os.path.join(out, f"full-{seed}"), FULL, seed,
                                     log))
        log(f"  full fine-tuning: {runs['full'][-1]}")
        runs["lora"].append(finetune(pretrained, os.path.join(out, f"lora-{seed}"), LORA, seed,
                                     log))
        log(f"  LoRA: {runs['lora'][-1]}")
        if twin:
            runs["scratch"].append(finetune(twin, os.path.join(out, f"scratch-{seed}"), FULL,
                                            seed, log))
            log(f"  from a random model: {runs['scratch'][-1]}")
    results["parcel"] = parcel_answer(os.path.join(out, "full-0"))
    if apps:
        results["applications"] = applications(pretrained, out, log)
    results.update({k: v for k, v in runs.items() if v})
    results["mean"] = {k: {"accuracy": sum(r["accuracy"] for r in v) / len(v),
                           "paraphrase_accuracy": sum(r["paraphrase_accuracy"] for r in v)
                           / len(v),
                           "f1": sum(r["f1"] for r in v) / len(v),
                           "wall_s": max(r["wall_s"] for r in v)}
                       for k, v in runs.items() if v}
    results["lora_gap_points"] = round(100 * (results["mean"]["full"]["accuracy"]
                                              - results["mean"]["lora"]["accuracy"]), 2)
    results["load_average_after"] = load_average()
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results


def report(r, log=print):
    names = {"full": "full fine-tuning, 600 steps", "lora": "LoRA r=8 (attn) + head, 3000 steps",
             "scratch": "control: random init, full, 600 steps"}
    log("\n| run | seed | val accuracy | paraphrase accuracy | macro-F1 | wall time (s) | "
        "trainable params |")
    log("| --- | --- | --- | --- | --- | --- | --- |")
    for key, name in names.items():
        for m in r.get(key, []):
            log(f"| {name} | {m['seed']} | {100 * m['accuracy']:.2f}% | "
                f"{100 * m['paraphrase_accuracy']:.2f}% | {m['f1']:.4f} | {m['wall_s']} | "
                f"{m['trainable_params']:,} ({m['trainable_percent']:.2f}%) |")
        if key in r["mean"]:
            mean = r["mean"][key]
            log(f"| {name} | mean | {100 * mean['accuracy']:.2f}% | "
                f"{100 * mean['paraphrase_accuracy']:.2f}% | {mean['f1']:.4f} | "
                f"max {mean['wall_s']} | |")
    log(f"predict(['my parcel never came']) -> {r['parcel']!r}")
    for key, a in r.get("applications", {}).items():
        log(f"{key}: {a}")
    if "pretrain_wall_s" in r:
        log(f"pre-training: {r['pretrain_wall_s']} s, val loss {r['pretrain_val_loss']:.3f}")
    full, lora = r["mean"]["full"], r["mean"]["lora"]
    pct = r["lora"][0]["trainable_percent"]
    log(f"load average before/after: {r['load_average_before']} / {r['load_average_after']} "
        f"({r['threads']} threads)")
    log(f"targets: accuracy >= 95%: {full['accuracy'] >= 0.95}; under 120 s: "
        f"{full['wall_s'] < 120} (LoRA: {lora['wall_s']} s); LoRA < 5% trainable: "
        f"{pct < 5} ({pct:.2f}%); LoRA within {LORA_GAP_TARGET} points: "
        f"{r['lora_gap_points'] <= LORA_GAP_TARGET} (gap {r['lora_gap_points']:+.2f} points)")


def test_finetune_targets(benchmark):
    """The short form by default (one seed, no control, no chat or translation); the full table
    with BENCH_FINETUNE_FULL=1 (the module docstring says how long each takes)."""
    kw = {} if FULL_TABLE else {"control": False, "seeds": 1, "apps": False}
    with tempfile.TemporaryDirectory() as out:
        r = benchmark.pedantic(run, args=(out, PRETRAINED), kwargs=kw, rounds=1, iterations=1)
    report(r)
    benchmark.extra_info.update({"mean": r["mean"], "lora_gap_points": r["lora_gap_points"]})
    assert r["mean"]["full"]["accuracy"] >= 0.95
    assert r["mean"]["full"]["wall_s"] < 120
    assert r["lora"][0]["trainable_percent"] < 5.0
    assert r["lora_gap_points"] <= LORA_GAP_TARGET
    assert r["mean"]["full"]["paraphrase_accuracy"] >= PARAPHRASE_TARGET
    assert r["parcel"] == "track_order"
    if not FULL_TABLE:
        return
    apps = r["applications"]
    chat_run = apps["chat_examples"]
    assert chat_run["train_intent_accuracy"] >= CHAT_TRAIN_TARGET, chat_run
    assert chat_run["paraphrase_intent_accuracy"] >= CHAT_PARAPHRASE_TARGET, chat_run
    assert apps["translate"]["bleu"] >= BLEU_TARGET
    assert apps["translate"]["showcase_right"], apps["translate"]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "out", "bench_finetune"))
    ap.add_argument("--pretrained", default=PRETRAINED,
                    help="reuse this pre-trained run directory (default: $BENCH_PRETRAINED)")
    ap.add_argument("--no-control", action="store_true", help="skip the random-init control")
    ap.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds (default 3)")
    ap.add_argument("--no-applications", action="store_true",
                    help="classification only (skip the chat and translation recipes)")
    args = ap.parse_args()
    r = run(args.out, args.pretrained, control=not args.no_control, seeds=args.seeds,
            apps=not args.no_applications)
    report(r)


if __name__ == "__main__":
    main()
