"""`python -m tinyroots.finetune`, end to end on tiny models (seconds each)."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tinyroots as tr
from tinyroots import checkpoint as ck
from tinyroots.finetune import modify
from tinyroots.finetune import FinetuneConfig, finetune, load_classifier, predict
from tinyroots.finetune.data import IGNORE, chat_ids
from tinyroots.finetune.sft import ChatTask
from tinyroots.checkpoint import load_model_and_tokenizer
from tinyroots.safetensors import load_safetensors
from tinyroots.tokenizer import Tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ---------------------------------------------------------------------------------------------
# a tiny "pretrained" model and tiny data sets

WORDS = {
    "fruit": ["apple", "pear", "plum", "grape", "lemon", "melon"],
    "animal": ["dog", "cat", "horse", "mouse", "goat", "sheep"],
    "tool": ["hammer", "saw", "drill", "wrench", "chisel", "spade"],
}
FILLER = ["I", "saw", "a", "the", "today", "with", "my", "and", "near", "some"]


def make_text(rng, label):
    words = [rng.choice(FILLER) for _ in range(rng.integers(2, 5))]
    words.insert(int(rng.integers(0, len(words) + 1)), rng.choice(WORDS[label]))
    return " ".join(words)


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return str(path)


def make_pretrained(path, block_size=64, seed=0):
    """A small random GPT + a BPE tokenizer trained on the words used here, saved to path."""
    corpus = " ".join(sum(WORDS.values(), []) + FILLER) * 3 + \
        " the cat is a chat . le chien mange . hello there , how can I help you ? " * 3
    tok = Tokenizer.train(corpus, vocab_size=300)
    tr.manual_seed(seed)
    model = tr.GPT(tr.GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=tok.vocab_size,
                                block_size=block_size, bos_token_id=tok.eot_token_id,
                                eos_token_id=tok.eot_token_id))
    model.save_pretrained(path, tokenizer=tok)
    return str(path)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A run directory as `python -m tinyroots.train` leaves it (weights in best/)."""
    run = tmp_path_factory.mktemp("pretrained_run")
    make_pretrained(run / "best")
    return str(run)


@pytest.fixture(scope="module")
def classify_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("classify_data")
    rng = np.random.default_rng(0)
    labels = sorted(WORDS)
    train = [{"text": make_text(rng, labels[i % 3]), "label": labels[i % 3]}
             for i in range(240)]
    val = [{"text": make_text(rng, labels[i % 3]), "label": labels[i % 3]} for i in range(60)]
    return write_jsonl(d / "train.jsonl", train), write_jsonl(d / "val.jsonl", val)


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("chat_data")
    rows = [{"messages": [{"role": "user", "content": f"where is my {w}"},
                          {"role": "assistant", "content": f"your {w} is near the dog"}]}
            for w in WORDS["fruit"] + WORDS["tool"]]
    rows.append({"prompt": "hello", "response": "hello there , how can I help you ?",
                 "system": "be kind"})
    return write_jsonl(d / "train.jsonl", rows), write_jsonl(d / "val.jsonl", rows[:4])


@pytest.fixture(scope="module")
def translate_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("translate_data")
    rows = [{"source": "the cat saw the dog", "target": "le chat voit le chien"},
            {"source": "the dog saw the cat", "target": "le chien voit le chat"}] * 8
    return write_jsonl(d / "train.jsonl", rows), write_jsonl(d / "val.jsonl", rows[:2])


def cfg(task, init, data, out_dir, **kw):
    values = dict(task=task, init=init, train=data[0], val=data[1], out_dir=str(out_dir),
                  progress=False, max_steps=30, eval_interval=10, log_interval=5,
                  batch_size=16, seed=0)
    values.update(kw)
    return FinetuneConfig(**values)


def quiet(*args):
    pass


def read_metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


# ---------------------------------------------------------------------------------------------
# classification


def test_classify_learns_and_saves_a_hugging_face_layout(pretrained, classify_data, tmp_path):
    run = finetune(cfg("classify", pretrained, classify_data, tmp_path, max_steps=100,
                       eval_interval=20, learning_rate=3e-3, warmup_steps=5), out=quiet)
    m = run.metrics
    assert m["accuracy"] >= 0.9, m                          # 3 classes told apart by one word
    assert 0.0 <= m["f1"] <= 1.0 and m["n_val"] == 60
    assert m["trainable_percent"] == 100.0 and m["steps"] == 100
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["accuracy"] == m["accuracy"] and saved["checkpoint"].endswith("best")
    assert json.loads((tmp_path / "finetune_config.json").read_text())["learning_rate"] == 3e-3
    evals = [r for r in read_metrics(tmp_path) if "accuracy" in r]
    assert [r["step"] for r in evals] == [0, 20, 40, 60, 80, 100]
    files = set(os.listdir(tmp_path / "best"))
    assert {"config.json", "model.safetensors", "labels.json", "vocab.json"} <= files
    config = json.loads((tmp_path / "best" / "config.json").read_text())
    assert config["architectures"] == ["GPT2ForSequenceClassification"]
    assert config["id2label"] == {"0": "animal", "1": "fruit", "2": "tool"}
    arrays, _ = load_safetensors(tmp_path / "best" / "model.safetensors")
    assert arrays["score.weight"].shape == (3, 32)

    model, tok, labels, pad_id = load_classifier(str(tmp_path))
    texts = ["a dog with the saw", "my lemon", "some goat today"]
    assert predict(model, tok, texts, labels, pad_id) == predict(
        run.module.eval(), run.tokenizer, texts, labels, pad_id)


def test_classifier_checkpoint_gives_transformers_the_same_logits(pretrained, classify_data,
                                                                   tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    finetune(cfg("classify", pretrained, classify_data, tmp_path, max_steps=10), out=quiet)
    model, tok, labels, pad_id = load_classifier(str(tmp_path / "best"))
    hf = transformers.GPT2ForSequenceClassification.from_pretrained(str(tmp_path / "best"))
    hf.eval()
    seqs = [tok.encode("a dog with the saw"), tok.encode("lemon")]
    from tinyroots.finetune.data import pad_batch
    ids, lengths = pad_batch(seqs, pad_id)
    ours = model(ids, lengths).logits.data
    with torch.no_grad():
        theirs = hf(torch.tensor(ids)).logits.numpy()
    # float32, 2 layers: 1e-5
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_lora_classify_trains_a_few_percent_and_saves_the_adapter(pretrained, classify_data,
                                                                  tmp_path):
    # the model kept is the one with the best val_loss (not accuracy, which moves in coarse
    # steps of 1/60 on this val set and can tie with the untrained model)
    run = finetune(cfg("classify", pretrained, classify_data, tmp_path, lora_rank=2,
                       lora_targets="attn", learning_rate=3e-3, max_steps=150, eval_interval=25,
                       pooling="mean", metric="val_loss"),
                   out=quiet)
    m = run.metrics
    # adapters r (in + out): 2 blocks x (2*(32+96) + 2*(32+32)) = 768; the head 3 x 32 = 96
    assert m["trainable_params"] == 768 + 96
    assert m["trainable_percent"] < 5.0 and m["training"].startswith("LoRA r=2")
    best = tmp_path / "best"
    assert (best / "adapter_model.safetensors").is_file()
    assert json.loads((best / "adapter_config.json").read_text())["r"] == 2
    # the merged checkpoint predicts what the live (unmerged) model predicts
    model, tok, labels, pad_id = load_classifier(str(best))
    ids = np.asarray([tok.encode("the plum and a saw")])
    np.testing.assert_allclose(model(ids).logits.data, run.module.eval()(ids).logits.data,
                               rtol=1e-4, atol=1e-5)
    # a random 2-layer body is a poor feature extractor, so only ask that it learns
    # (over seeds 0-2 the drop measured 0.15-0.22 nats at step 150)
    assert m["val_loss"] < read_metrics(tmp_path)[0]["val_loss"] - 0.06
    layer = modify.lora_layers(run.gpt)[0][1]
    assert np.abs(layer.lora_B.data).max() > 0                # B started at 0 and moved


def test_head_only_and_frozen_blocks_leave_frozen_weights_untouched(pretrained, classify_data,
                                                                    tmp_path):
    before = load_safetensors(os.path.join(pretrained, "best", "model.safetensors"))[0]
    run = finetune(cfg("classify", pretrained, classify_data, tmp_path / "h", head_only=True,
                       max_steps=5, save=False), out=quiet)
    assert run.metrics["trainable_params"] == 3 * 32
    for name, p in run.gpt.named_parameters():
        np.testing.assert_array_equal(p.data, before[name], err_msg=name)
    run = finetune(cfg("classify", pretrained, classify_data, tmp_path / "f", freeze_blocks=1,
                       max_steps=10, learning_rate=3e-3, restore_best=False, save=False),
                   out=quiet)
    params = dict(run.gpt.named_parameters())
    for name in ("transformer.wte.weight", "transformer.h.0.attn.c_attn.weight"):
        np.testing.assert_array_equal(params[name].data, before[name])
    assert not np.array_equal(params["transformer.h.1.attn.c_attn.weight"].data,
                              before["transformer.h.1.attn.c_attn.weight"])


def test_early_stopping_restores_the_best_step(pretrained, classify_data, tmp_path):
    # learning rate 0: nothing improves after the first evaluation
    run = finetune(cfg("classify", pretrained, classify_data, tmp_path, learning_rate=0.0,
                       early_stop_patience=2, save=False), out=quiet)
    m = run.metrics
    assert m["stop_reason"].startswith("early stopping") and m["best_step"] == 0
    assert m["steps"] == 20


def test_regularisation_and_augmentation_show_in_the_metrics(pretrained, classify_data,
                                                             tmp_path):
    run = finetune(cfg("classify", pretrained, classify_data, tmp_path, token_dropout=0.1,
                       token_mask=0.1, span_deletion=0.5, l1=1e-5, l2=1e-4, weight_decay=0.1,
                       dropout=0.1, max_steps=10, save=False), out=quiet)
    train_records = [r for r in read_metrics(tmp_path) if "aug_tokens" in r]
    assert train_records and all(r["aug_tokens_dropped"] > 0 for r in train_records)
    assert all(r["aug_spans_deleted"] > 0 and r["aug_tokens_masked"] > 0
               for r in train_records)
    assert run.metrics["augmentation"] == {"token_dropout": 0.1, "token_mask": 0.1,
                                           "span_deletion": 0.5}
    assert run.gpt.config.dropout == 0.1


# ---------------------------------------------------------------------------------------------
# chat SFT


def test_chat_sft_prompt_tokens_get_exactly_zero_gradient(pretrained, chat_data):
    gpt, tok, _ = load_model_and_tokenizer(pretrained)
    tok.add_special_tokens(list(ChatTask.special_tokens))
    modify.resize_vocab(gpt, tok.vocab_size)
    msgs = [{"role": "system", "content": "be kind"},
            {"role": "user", "content": "where is my apple"},
            {"role": "assistant", "content": "near the dog"}]
    ids, labels = chat_ids(tok, msgs)
    ids, labels = np.asarray([ids]), np.asarray([labels])
    gpt.train()
    out = gpt(ids, labels=labels)
    out.logits.retain_grad()
    out.loss.backward()
    g = out.logits.grad[0]                                     # (T, V)
    targets = np.append(labels[0, 1:], IGNORE)                 # position t predicts labels[t+1]
    prompt_rows = targets == IGNORE
    assert prompt_rows.sum() > 5 and (~prompt_rows).sum() >= 3
    assert np.all(g[prompt_rows] == 0.0)                       # exactly zero, not just small
    assert np.all(np.abs(g[~prompt_rows]).sum(axis=-1) > 0)
    # the loss is the mean cross-entropy over the assistant's tokens only
    logits = out.logits.data[0].astype(np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1,
                                                                            keepdims=True)) \
        - logits.max(-1, keepdims=True)
    rows = np.flatnonzero(~prompt_rows)
    expected = -logp[rows, targets[rows]].mean()
    assert float(out.loss) == pytest.approx(expected, rel=1e-5)


def test_chat_finetune_adds_tokens_resizes_and_saves_them(pretrained, chat_data, tmp_path):
    base_vocab = ck.load_config(os.path.join(pretrained, "best")).vocab_size
    run = finetune(cfg("chat", pretrained, chat_data, tmp_path, learning_rate=3e-3,
                       block_size=96, add_blocks=1, max_steps=20), out=quiet)
    m = run.metrics
    assert m["val_loss"] < read_metrics(tmp_path)[0]["val_loss"]
    assert m["perplexity"] == pytest.approx(np.exp(m["val_loss"]), rel=1e-5)
    assert len(m["samples"]) == 3
    gpt, tok, _ = load_model_and_tokenizer(str(tmp_path))
    assert gpt.config.vocab_size == tok.vocab_size == base_vocab + 4
    assert {"<|user|>", "<|assistant|>", "<|system|>", "<|end|>"} <= set(tok.special_tokens)
    assert gpt.config.block_size == 96 and gpt.config.n_layer == 3


def test_lora_chat_trains_only_new_token_rows_of_the_embeddings(pretrained, chat_data,
                                                                tmp_path):
    before = load_safetensors(os.path.join(pretrained, "best", "model.safetensors"))[0]
    old = before["transformer.wte.weight"]
    run = finetune(cfg("chat", pretrained, chat_data, tmp_path, lora_rank=4,
                       learning_rate=1e-2, max_steps=10), out=quiet)
    wte = run.gpt.transformer.wte.weight.data
    np.testing.assert_array_equal(wte[:len(old)], old)        # old tokens' rows: untouched
    added_rows = wte[len(old):]
    assert added_rows.shape[0] == 4
    assert run.metrics["trainable_params"] == sum(
        layer.lora_A.size + layer.lora_B.size for _, layer in modify.lora_layers(run.gpt)) \
        + added_rows.size
    # the saved model is the merged one: a plain GPT-2 checkpoint
    merged = tr.GPT.from_pretrained(str(tmp_path / "best"))
    ids = np.asarray([[1, 2, 3, len(old) + 1]])
    np.testing.assert_allclose(merged(ids).logits.data, run.gpt.eval()(ids).logits.data,
                               rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# translation and continued pre-training


def test_translate_reports_bleu_and_generate_prints_only_the_translation(
        pretrained, translate_data, tmp_path):
    run = finetune(cfg("translate", pretrained, translate_data, tmp_path, learning_rate=1e-2,
                       max_steps=60, warmup_steps=5, max_new_tokens=12), out=quiet)
    m = run.metrics
    assert m["bleu_implementation"] in ("sacrebleu", "tinyroots")
    assert m["bleu_examples"] == 2
    assert m["bleu"] > 50, m["samples"]                       # two memorised pairs
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "tinyroots.generate", "--checkpoint",
                          str(tmp_path), "--task", "translate", "--prompt",
                          "the dog saw the cat",
                          "--temperature", "0", "--stream", "false", "--max-new-tokens", "12"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "le chien voit le chat"
    # python -m tinyroots.evaluate scores the checkpoint the same way
    from tinyroots.finetune import evaluate_checkpoint
    buf = io.StringIO()
    assert evaluate_checkpoint(["--checkpoint", str(tmp_path), "--task", "translate", "--data",
                                translate_data[1], "--max-new-tokens", "12"], out=buf) == 0
    scored = json.loads(buf.getvalue())
    # eval.json rounds to 6 decimals
    assert scored["bleu"] == pytest.approx(m["bleu"], abs=1e-6)
    assert scored["val_loss"] == pytest.approx(m["val_loss"], abs=1e-6)


def test_lm_continued_pretraining_lowers_perplexity(pretrained, tmp_path):
    text = ("the dog and the cat saw a plum near the goat . " * 40)
    (tmp_path / "train.txt").write_text(text)
    (tmp_path / "val.txt").write_text(text[:300])
    run = finetune(cfg("lm", pretrained, (str(tmp_path / "train.txt"),
                                          str(tmp_path / "val.txt")), tmp_path / "out",
                       learning_rate=3e-3, max_steps=20, token_mask=0.1), out=quiet)
    first = read_metrics(tmp_path / "out")[0]
    m = run.metrics
    assert m["perplexity"] < first["perplexity"] / 2
    assert m["perplexity"] == pytest.approx(np.exp(m["val_loss"]), rel=1e-5)
    assert tr.GPT.from_pretrained(str(tmp_path / "out" / "best")).config.n_layer == 2


def test_lm_validation_covers_every_token_once(pretrained, tmp_path):
    from tinyroots.finetune.lm import LMTask
    gpt, tok, _ = load_model_and_tokenizer(pretrained)
    c = FinetuneConfig(task="lm", init=pretrained, train="x", val="y", max_length=7,
                       batch_size=3)
    task = LMTask(c, tok, log=quiet)
    task.build(gpt, [{"text": "the dog " * 10, "line": 1}],
               [{"text": "a b c d e f g h i j k l m n o p q r s t", "line": 1}])
    ys = [y for _, y in task.windows(task.val_tokens, batch_size=3)]
    assert np.concatenate([y.ravel() for y in ys]).tolist() == task.val_tokens[1:].tolist()


# ---------------------------------------------------------------------------------------------
# the command line


def run_cli(module, args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", module] + args, capture_output=True,
                          text=True, env=env, timeout=300)


def test_cli_errors_name_the_key_value_or_line(pretrained, classify_data, tmp_path):
    base = ["classify", "--init", pretrained, "--train", classify_data[0], "--val",
            classify_data[1], "--out-dir", str(tmp_path)]
    res = run_cli("tinyroots.finetune", base + ["--learnin-rate", "1e-3"])
    assert res.returncode == 2 and "--learnin-rate" in res.stderr
    res = run_cli("tinyroots.finetune", base + ["--lora-rank", "two"])
    assert res.returncode == 2 and "'lora_rank' must be int" in res.stderr
    res = run_cli("tinyroots.finetune", base + ["--pooling", "max"])
    assert res.returncode == 2 and "'pooling' must be last or mean" in res.stderr
    res = run_cli("tinyroots.finetune", ["sing"] + base[1:])
    assert res.returncode == 2 and "'task' must be one of" in res.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    res = run_cli("tinyroots.finetune", base[:4] + [str(bad)] + base[5:])
    assert res.returncode == 2
    assert f"{bad} line 2: missing field 'label'" in res.stderr


def test_cli_config_file_and_evaluate(pretrained, classify_data, tmp_path):
    config = tmp_path / "ft.toml"
    config.write_text(f'task = "classify"\ninit = "{pretrained}"\ntrain = "{classify_data[0]}"\n'
                      f'val = "{classify_data[1]}"\nmax_steps = 20\neval_interval = 10\n'
                      f'learning_rate = 3e-3\nprogress = false\n')
    res = run_cli("tinyroots.finetune", ["--config", str(config), "--out-dir",
                                         str(tmp_path / "run")])
    assert res.returncode == 0, res.stderr
    metrics = json.loads((tmp_path / "run" / "eval.json").read_text())
    res = run_cli("tinyroots.evaluate", ["--checkpoint", str(tmp_path / "run"), "--task",
                                         "classify", "--data", classify_data[1]])
    assert res.returncode == 0, res.stderr
    scored = json.loads(res.stdout)
    assert scored["accuracy"] == pytest.approx(metrics["accuracy"])
    assert scored["n"] == 60


# ---------------------------------------------------------------------------------------------
# run directories, truncation, divergence and bad input


def test_a_saved_run_is_not_replaced_without_overwrite(pretrained, classify_data, tmp_path):
    finetune(cfg("classify", pretrained, classify_data, tmp_path, max_steps=2), out=quiet)
    before = (tmp_path / "eval.json").read_text()
    with pytest.raises(FileExistsError, match="already holds a fine-tuning run.*--overwrite"):
        finetune(cfg("classify", pretrained, classify_data, tmp_path, max_steps=2), out=quiet)
    assert (tmp_path / "eval.json").read_text() == before
    run = finetune(cfg("classify", pretrained, classify_data, tmp_path, max_steps=3,
                       overwrite=True), out=quiet)
    assert run.metrics["steps"] == 3
    # a run that saves nothing (a tuning trial) may reuse a directory
    finetune(cfg("classify", pretrained, classify_data, tmp_path, max_steps=1, save=False),
             out=quiet)


def test_sequences_longer_than_the_context_are_cut_and_counted(pretrained, tmp_path):
    long_reply = " ".join(["the cat saw the dog"] * 30)              # > 64 tokens
    rows = [{"prompt": "hello", "response": long_reply}, {"prompt": "hi", "response": "hello"}]
    data = (write_jsonl(tmp_path / "t.jsonl", rows), write_jsonl(tmp_path / "v.jsonl", rows))
    messages = []
    run = finetune(cfg("chat", pretrained, data, tmp_path / "out", max_steps=1),
                   out=messages.append)
    cut = [m for m in messages if "longer than 64 tokens and were cut" in m]
    assert len(cut) == 2 and "1 of 2 example(s)" in cut[0] and "losing" in cut[0]
    trunc = run.metrics["examples_truncated"]
    assert trunc["examples"] == 2 and trunc["tokens"] > 0           # train + val


def test_finetune_command_errors_and_divergence(pretrained, classify_data, tmp_path, capsys):
    from tinyroots.finetune import main
    base = ["classify", "--init", pretrained, "--train", classify_data[0], "--val",
            classify_data[1], "--no-progress", "--max-steps", "3"]
    cases = [  # (extra flags, exit code, words in the one-line message)
        (["--init", str(tmp_path / "missing")], 2, ["missing"]),
        (["--train", str(tmp_path / "none.jsonl")], 2, ["none.jsonl"]),
        (["--seed", "-1"], 2, ["'seed'"]),
        (["--num-threads", "100000"], 2, ["'num_threads'"]),
        (["--beta1", "2"], 2, ["'beta1'"]),
        (["--learning-rate", "nan"], 2, ["finite number"]),
        (["--learning-rate", "1e9", "--grad-clip", "0", "--warmup-steps", "0",
          "--max-steps", "60", "--eval-interval", "100"], 1, ["diverged", "loss became"]),
    ]
    for i, (extra, code, words) in enumerate(cases):
        try:
            rc = main(base + ["--out-dir", str(tmp_path / f"r{i}")] + extra)
        except SystemExit as exc:
            rc = exc.code
        err = capsys.readouterr().err
        assert rc == code, (extra, err)
        assert "Traceback" not in err and all(w in err for w in words), (extra, err)


def test_ctrl_c_stops_after_the_step_and_saves_the_best(pretrained, classify_data, tmp_path):
    import signal

    def log(message):
        if "step     10:" in str(message):         # the evaluation at step 10
            os.kill(os.getpid(), signal.SIGINT)
    run = finetune(cfg("classify", pretrained, classify_data, tmp_path, max_steps=1000,
                       eval_interval=10), out=log)
    assert run.interrupted and run.metrics["stop_reason"] == "interrupted (Ctrl-C)"
    assert run.metrics["steps"] == 10
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["stop_reason"] == "interrupted (Ctrl-C)" and (tmp_path / "best").is_dir()
