"""`tinyroots.inspect`: each analysis against an outside reference, and the command line.

References: torch autograd through transformers' GPT-2 on the same weights (gradient x input,
the logit lens' intermediate layers, next-token probabilities), numpy's SVD (PCA), brute-force
cosine (neighbours), the model's own loss (perplexity).
"""

import builtins
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tinyroots as tr
from tinyroots.inspect import analysis as A
from tinyroots.inspect import views
from tinyroots.inspect.cli import main

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = "ROMEO: what light"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny trained checkpoint (the `tiny` preset, 60 steps: a few seconds)."""
    from tinyroots.train import main as train_main
    out = tmp_path_factory.mktemp("run")
    rc = train_main(["--preset", "tiny", "--max-steps", "60", "--out-dir", str(out),
                     "--overwrite", "--progress", "false", "--plot", "false",
                     "--sample-tokens", "0"])
    assert rc in (0, None)
    return out


@pytest.fixture(scope="module")
def loaded(ckpt):
    from tinyroots.checkpoint import load_model_and_tokenizer
    model, tok, _ = load_model_and_tokenizer(str(ckpt))
    return model, tok


@pytest.fixture(scope="module")
def random_pair(tmp_path_factory):
    """A random GPT (weights large enough to make it non-linear) and the same in transformers."""
    tr.manual_seed(3)
    cfg = tr.GPTConfig(n_layer=3, n_head=4, n_embd=32, vocab_size=120, block_size=32,
                       initializer_range=0.1)
    model = tr.GPT(cfg).eval()
    path = tmp_path_factory.mktemp("random")
    model.save_pretrained(path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
    return model, hf


class IdTokenizer:
    """Just enough of a tokenizer for the analysis functions on a random model."""

    def decode(self, ids):
        return "".join(f"<{i}>" for i in ids)


IDS = [5, 17, 99, 3, 42, 42, 7, 64, 1, 110]


# ---------------------------------------------------------------------------------------------
# analyses against references


def torch_score_and_grad(hf, ids, target, score):
    wte = hf.transformer.wte.weight.detach()
    emb = wte[torch.tensor(ids)][None].clone().requires_grad_(True)       # (1, T, C)
    logits = hf(inputs_embeds=emb).logits[0, -1].double()
    f = torch.log_softmax(logits, -1)[target] if score == "logprob" else logits[target]
    f.backward()
    return float(f.detach()), emb.grad[0].numpy(), emb.detach()[0].numpy()


@pytest.mark.parametrize("score", ["logprob", "logit"])
def test_gradient_x_input_equals_torch_autograd(random_pair, score):
    model, hf = random_pair
    target = 11
    ours = A.attribute(model, IdTokenizer(), IDS, target, steps=4, score=score)
    f, grad, emb = torch_score_and_grad(hf, IDS, target, score)
    expected = (grad * emb).sum(-1)
    # float32 forward and backward through 3 blocks: ~1e-6 relative per op; 1e-4 of the largest
    # attribution leaves room for the different summation orders of the two libraries
    np.testing.assert_allclose(ours["gradient_x_input"], expected,
                               atol=1e-4 * np.abs(expected).max(), rtol=0)
    assert ours["f_input"] == pytest.approx(f, rel=1e-5, abs=1e-5)


def test_attribute_differentiates_embeddings_not_weights(random_pair):
    model, _ = random_pair
    flags = [p.requires_grad for p in model.parameters()]
    A.attribute(model, IdTokenizer(), IDS, 3, steps=2)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())   # no weight gradient was made


def test_integrated_gradients_complete_at_the_default_steps(random_pair, loaded):
    model, _ = random_pair
    r = A.attribute(model, IdTokenizer(), IDS, 11)
    assert r["steps"] == 20
    assert r["completeness_error"] < 0.01
    assert sum(r["integrated_gradients"]) == pytest.approx(r["f_input"] - r["f_baseline"],
                                                           rel=0.01)
    trained, tok = loaded
    ids = A.encode_text(trained, tok, TEXT)
    for target in (A.next_token(trained, tok, ids, 1)["top"][0]["id"], 7):
        assert A.attribute(trained, tok, ids, target)["completeness_error"] < 0.01
    # fewer steps give a larger error: the reported number measures something
    assert A.attribute(model, IdTokenizer(), IDS, 11, steps=1)["completeness_error"] > \
        r["completeness_error"]


def test_logit_lens_last_layer_is_the_logits_and_others_match_torch(random_pair):
    model, hf = random_pair
    lens = A.lens_logits(model, IDS)                                   # (L + 1, T, V)
    np.testing.assert_array_equal(lens[-1], model(np.array([IDS])).logits.data[0])
    with torch.no_grad():
        out = hf(torch.tensor([IDS]), output_hidden_states=True)
        wte = hf.transformer.wte.weight
        for layer, h in enumerate(out.hidden_states[:-1]):
            expected = (hf.transformer.ln_f(h) @ wte.T)[0].numpy()
            # float32 through <= 3 blocks then a 32-wide product: 1e-5 relative to the logit scale
            np.testing.assert_allclose(lens[layer], expected, rtol=0,
                                       atol=1e-5 * max(1.0, np.abs(expected).max()))
    d = A.logit_lens(model, IdTokenizer(), IDS)
    assert len(d["layers"]) == model.config.n_layer + 1
    cell = d["layers"][-1][2]
    assert cell["top_id"] == int(lens[-1, 2].argmax())
    assert cell["next_rank"] == int((lens[-1, 2] > lens[-1, 2, IDS[3]]).sum()) + 1


def test_next_token_formula_and_probabilities_match_torch(random_pair):
    model, hf = random_pair
    d = A.next_token(model, IdTokenizer(), IDS, top_k=5, temperature=0.5)
    with torch.no_grad():
        logits = hf(torch.tensor([IDS])).logits[0, -1].double()
    p, p_half = torch.softmax(logits, -1).numpy(), torch.softmax(logits / 0.5, -1).numpy()
    order = np.argsort(-p)[:5]
    assert [t["id"] for t in d["top"]] == order.tolist()
    for t in d["top"]:
        assert t["prob"] == pytest.approx(p[t["id"]], rel=1e-4)   # float32 logits, see above
        assert t["prob_at_temperature"] == pytest.approx(p_half[t["id"]], rel=1e-4)
        assert np.exp(t["logit"] - d["log_Z"]) == pytest.approx(t["prob"], rel=1e-12)
    assert d["top"][-1]["cum_prob"] == pytest.approx(p[order].sum(), rel=1e-4)


def test_pca_matches_numpy_svd():
    X = np.random.default_rng(0).standard_normal((30, 12)) @ np.diag(np.linspace(3, 0.1, 12))
    coords, explained = A.pca_2d(X)
    Xc = X - X.mean(0)
    U, S, Vt = np.linalg.svd(Xc, full_matrices=False)
    ref = U[:, :2] * S[:2]
    signs = np.sign((coords * ref).sum(0))          # each component is defined up to its sign
    np.testing.assert_allclose(coords, ref * signs, atol=1e-10)   # float64 throughout
    np.testing.assert_allclose(explained, S[:2] ** 2 / (S ** 2).sum(), rtol=1e-10)


def test_nearest_tokens_are_the_brute_force_cosine_ranking(random_pair):
    model, _ = random_pair
    W = model.transformer.wte.weight.data.astype(np.float64)
    near = A.nearest_tokens(model, IdTokenizer(), 9, k=5)
    cos = np.array([w @ W[9] / np.linalg.norm(w) / np.linalg.norm(W[9]) for w in W])
    cos[9] = -np.inf
    assert [n["id"] for n in near] == np.argsort(-cos)[:5].tolist()
    np.testing.assert_allclose([n["cosine"] for n in near], np.sort(cos)[::-1][:5], rtol=1e-12)


def test_surprise_perplexity_is_exp_of_the_model_loss(random_pair):
    model, _ = random_pair
    d = A.surprise(model, IdTokenizer(), IDS)
    loss = float(model(np.array([IDS]), labels=np.array([IDS])).loss)
    assert d["perplexity"] == pytest.approx(np.exp(loss), rel=1e-5)   # float32 loss
    assert d["tokens"][0]["logprob"] is None and len(d["tokens"]) == len(IDS)
    bits = np.array([r["surprisal_bits"] for r in d["tokens"][1:]])
    assert [r["surprising"] for r in d["tokens"][1:]] == (bits > bits.mean() + bits.std()).tolist()


# ---------------------------------------------------------------------------------------------
# the command line


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("command,extra,needle", [
    ("next", ["--temperature", "0.7"], "P(x_t = y | x_<t)"),
    ("attention", [], "where each head looks"),
    ("attention", ["--layer", "1", "--head", "0"], "attention of layer 1, head 0"),
    ("lens", [], "logit lens"),
    ("attribute", ["--target", "e", "--steps", "8"], "completeness error"),
    ("surprise", [], "perplexity"),
])
def test_each_subcommand_prints_json_and_png(capsys, ckpt, tmp_path, command, extra, needle):
    base = [command, "--checkpoint", str(ckpt), "--text", TEXT, *extra]
    rc, out, err = run(capsys, *base)
    assert rc == 0, err
    assert needle in out
    rc, out, _ = run(capsys, *base, "--json")
    assert rc == 0
    data = json.loads(out)                              # one JSON object, nothing else
    assert isinstance(data, dict) and data
    png = tmp_path / f"{command}.png"
    rc, out, err = run(capsys, *base, "--out", str(png))
    assert rc == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_embeddings_command(capsys, ckpt, tmp_path):
    png = tmp_path / "map.png"
    rc, out, err = run(capsys, "embeddings", "--checkpoint", str(ckpt), "--token", "e",
                       "--tokens", "a,o,t", "--k", "4", "--out", str(png))
    assert rc == 0, err
    assert "nearest tokens to 'e'" in out and png.stat().st_size > 0
    rc, out, _ = run(capsys, "embeddings", "--checkpoint", str(ckpt), "--token", "e", "--json")
    d = json.loads(out)
    assert len(d["nearest"]) == 10 and d["map"][0]["token"] == "e"


@pytest.mark.parametrize("argv,message", [
    (["embeddings", "--token", "zzzzqqq"], "--token 'zzzzqqq' is not one token of the vocabulary"
     " (ids 0..299)"),
    (["attribute", "--text", TEXT, "--target", "xyzzy!"], "--target 'xyzzy!' is not one token"),
    (["attention", "--text", TEXT, "--layer", "2"], "--layer 2 is out of range: the model has 2 "
     "layers (0..1)"),
    (["attention", "--text", TEXT, "--head", "-1"], "--head -1 is out of range: the model has 2 "
     "heads per layer (0..1)"),
    (["next", "--text", "the " * 200], "tokens long; the model's context holds 1..32 tokens"),
    (["next", "--text", ""], "--text is empty"),
    (["attribute", "--text", TEXT, "--steps", "0"], "--steps must be >= 1, got 0"),
    (["next", "--text", TEXT, "--out", "x.jpg"], "give a .png file name"),
    (["report", "--text", TEXT, "--out", "r.txt"], "report needs --out FILE.html"),
])
def test_bad_input_is_one_line_naming_the_value_and_range(capsys, ckpt, argv, message):
    rc, out, err = run(capsys, argv[0], "--checkpoint", str(ckpt), *argv[1:])
    assert rc == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err and out == ""


def test_missing_checkpoint_and_entry_point(tmp_path, ckpt):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "tinyroots.inspect", "next", "--checkpoint",
                        str(tmp_path / "nope"), "--text", "hi"], capture_output=True, text=True,
                       env=env)
    assert p.returncode == 2 and "no such directory" in p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "tinyroots.inspect", "surprise", "--checkpoint",
                        str(ckpt), "--text", TEXT], capture_output=True, text=True, env=env)
    assert p.returncode == 0 and "perplexity" in p.stdout


def test_png_without_matplotlib_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ValueError, match=r"needs matplotlib.*tinyroots\[plot\]"):
        views.pyplot()
