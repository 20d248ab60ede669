"""The seed article's Hugging Face GPT-2 example on tinyroots, checked against transformers.

A random GPT-2 and a BPE tokenizer are written to a temporary directory in GPT-2 format; then
the same snippet runs with `from transformers import ...` and `from tinyroots import ...` and
must agree: input ids, loss, logits, every gradient, greedy ids and decoded text.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import tinyroots
from tinyroots import GPT2LMHeadModel, GPT2Tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

REL_TOL = 1e-4   # float32 through a 3-layer model; see tests/test_model.py
CORPUS = os.path.join(os.path.dirname(tinyroots.__file__), "assets", "tinyshakespeare.txt")
TEXT = "Hello, my dog is cute. ROMEO: what light through yonder window breaks?"


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    with open(CORPUS, encoding="utf-8") as f:
        text = f.read()[:200_000]
    tok = tinyroots.Tokenizer.train(text, vocab_size=600)
    tinyroots.manual_seed(0)
    cfg = tinyroots.GPTConfig(n_layer=3, n_head=4, n_embd=64, vocab_size=tok.vocab_size,
                              block_size=128, bos_token_id=tok.eot_token_id,
                              eos_token_id=tok.eot_token_id)
    path = tmp_path_factory.mktemp("gpt2")
    tinyroots.GPT(cfg).save_pretrained(path, tokenizer=tok)
    return path


def test_the_article_snippet_agrees_with_transformers(gpt2_dir):
    # tinyroots, exactly the article's lines (import changed, return_tensors="np")
    tokenizer = GPT2Tokenizer.from_pretrained(gpt2_dir)
    model = GPT2LMHeadModel.from_pretrained(gpt2_dir)
    input_ids = tokenizer.encode("Hello", return_tensors="np")
    output = model(input_ids, labels=input_ids)
    loss, logits = output[:2]
    output = model.generate(input_ids)
    text = tokenizer.decode(output[0], skip_special_tokens=True)

    # transformers, the same lines
    hf_tok = transformers.GPT2Tokenizer.from_pretrained(gpt2_dir)
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    hf_ids = hf_tok.encode("Hello", return_tensors="pt")
    with torch.no_grad():
        hf_out = hf_model(hf_ids, labels=hf_ids)
        hf_loss, hf_logits = hf_out[:2]
        hf_gen = hf_model.generate(hf_ids, pad_token_id=hf_tok.eos_token_id)
    hf_text = hf_tok.decode(hf_gen[0], skip_special_tokens=True)

    np.testing.assert_array_equal(input_ids, hf_ids.numpy())
    assert rel_err(float(loss), hf_loss.item()) < REL_TOL
    assert rel_err(logits.data, hf_logits.numpy()) < REL_TOL
    assert output.shape == tuple(hf_gen.shape) == (1, input_ids.shape[1] + 20)  # 20 new, greedy
    np.testing.assert_array_equal(output, hf_gen.numpy())
    assert text == hf_text


def test_every_gradient_matches_transformers(gpt2_dir):
    tokenizer = GPT2Tokenizer.from_pretrained(gpt2_dir)
    model = GPT2LMHeadModel.from_pretrained(gpt2_dir)
    ids = tokenizer.encode(TEXT, return_tensors="np")
    labels = ids.copy()
    labels[0, :4] = -100
    out = model(ids, labels=labels)
    out.loss.backward()
    hf = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir)
    hf.train()   # dropout is 0 in this config; train mode just enables grads everywhere
    hf_out = hf(torch.tensor(ids), labels=torch.tensor(labels))
    hf_out.loss.backward()
    assert rel_err(float(out.loss), hf_out.loss.item()) < REL_TOL
    hf_params = dict(hf.named_parameters())
    for name, p in model.named_parameters():
        assert rel_err(p.grad, hf_params[name].grad.numpy()) < REL_TOL, name


def test_fast_tokenizer_and_long_text_agree(gpt2_dir):
    ours = GPT2Tokenizer.from_pretrained(gpt2_dir)
    fast = transformers.GPT2TokenizerFast.from_pretrained(gpt2_dir)
    for text in (TEXT, "  spaces   and\ttabs\n\nnew lines", "naïve café — 東京 123", ""):
        assert ours.encode(text) == fast.encode(text), text
        assert ours.decode(ours.encode(text)) == fast.decode(fast.encode(text))


def test_round_trip_through_transformers(gpt2_dir, tmp_path):
    ours = GPT2LMHeadModel.from_pretrained(gpt2_dir)
    hf = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir)
    hf.save_pretrained(tmp_path / "hf")
    transformers.GPT2TokenizerFast.from_pretrained(gpt2_dir).save_pretrained(tmp_path / "hf")
    back = GPT2LMHeadModel.from_pretrained(tmp_path / "hf")
    tok_back = GPT2Tokenizer.from_pretrained(tmp_path / "hf")
    ids = tok_back.encode(TEXT, return_tensors="np")
    np.testing.assert_array_equal(ids, GPT2Tokenizer.from_pretrained(gpt2_dir).encode(
        TEXT, return_tensors="np"))
    for (n, p), (n2, p2) in zip(ours.named_parameters(), back.named_parameters()):
        assert n == n2
        np.testing.assert_array_equal(p.data, p2.data)
    # and once more: tinyroots -> directory -> transformers
    back.save_pretrained(tmp_path / "again", tokenizer=tok_back)
    hf2 = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "again").eval()
    with torch.no_grad():
        hf_logits = hf2(torch.tensor(ids)).logits.numpy()
    with tinyroots.no_grad():
        our_logits = back(ids).logits.data
    assert rel_err(our_logits, hf_logits) < REL_TOL


def test_special_token_ids_survive_the_trip_both_ways(gpt2_dir, tmp_path):
    # set ids are written as ids; unset ones as null, since transformers reads a missing key as
    # GPT-2's 50256, which a small vocabulary does not have
    assert transformers.GPT2Config.from_pretrained(gpt2_dir).eos_token_id == \
        tinyroots.GPT2LMHeadModel.from_pretrained(gpt2_dir).config.eos_token_id
    cfg = tinyroots.GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=65, block_size=32)
    tinyroots.GPT(cfg).save_pretrained(tmp_path)
    theirs = transformers.GPT2Config.from_pretrained(tmp_path)
    assert theirs.eos_token_id is None and theirs.bos_token_id is None
    ours = tinyroots.GPT2LMHeadModel.from_pretrained(tmp_path).config
    assert ours.eos_token_id is None and ours.bos_token_id is None


def test_hello_gpt2_example_runs(tmp_path):
    script = os.path.join(os.path.dirname(__file__), "..", "examples", "hello_gpt2.py")
    r = subprocess.run([sys.executable, script, "--demo"], capture_output=True, text=True,
                       timeout=600, env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert r.returncode == 0, r.stderr
    assert "loss:" in r.stdout and "generated: 'Hello" in r.stdout


def test_hub_names_resolve_from_the_local_cache_only(gpt2_dir, tmp_path, monkeypatch):
    import shutil
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        GPT2Tokenizer.from_pretrained("gpt2")
    snap = tmp_path / "hub" / "models--gpt2" / "snapshots" / "0123abcd"
    shutil.copytree(gpt2_dir, snap)
    tokenizer = GPT2Tokenizer.from_pretrained("gpt2")
    model = GPT2LMHeadModel.from_pretrained("gpt2")
    assert tokenizer.vocab_size == model.config.vocab_size
    assert tokenizer.encode(TEXT) == GPT2Tokenizer.from_pretrained(gpt2_dir).encode(TEXT)
