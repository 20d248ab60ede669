"""`python -m tinyroots.inspect report` on a GPT-2 124M shape (random weights) with 128 tokens.

The reference beside it is one plain forward pass of the same model on the same tokens, so the
report's cost reads as a number of forward passes (its parts: one forward pass that keeps the
attentions and hidden states, the logit lens' 13 products with the 50257-row head, and
integrated gradients: steps + 2 rows of forward and backward).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench/bench_inspect.py --benchmark-only
"""

import os

import pytest

import tinyroots as tr
from tinyroots.inspect import analysis as A
from tinyroots.inspect.cli import main

TOKENIZER = os.environ.get("TINYROOTS_GPT2_TOKENIZER", "")
pytestmark = pytest.mark.skipif(not os.path.isfile(os.path.join(TOKENIZER, "vocab.json")),
                                reason="set TINYROOTS_GPT2_TOKENIZER to GPT-2's tokenizer "
                                       "directory (vocab.json, merges.txt)")
CORPUS = os.path.join(os.path.dirname(tr.__file__), "assets", "tinyshakespeare.txt")


@pytest.fixture(scope="module")
def gpt2_small(tmp_path_factory):
    tok = tr.Tokenizer.from_pretrained(TOKENIZER)
    tr.manual_seed(0)
    path = tmp_path_factory.mktemp("gpt2")
    tr.GPT(tr.GPTConfig()).save_pretrained(path, tokenizer=tok)
    with open(CORPUS, encoding="utf-8") as f:
        text = tok.decode(tok.encode(f.read(4000))[:128])
    assert len(tok.encode(text)) == 128
    return path, text


def test_plain_forward(benchmark, gpt2_small):
    path, text = gpt2_small
    model = tr.GPT.from_pretrained(path)
    ids = tr.Tokenizer.from_pretrained(path).encode(text)
    benchmark.pedantic(lambda: A._run(model, ids), rounds=2, iterations=1)


def test_inspect_report(benchmark, gpt2_small, tmp_path):
    path, text = gpt2_small
    argv = ["report", "--checkpoint", str(path), "--text", text, "--out",
            str(tmp_path / "report.html")]
    benchmark.pedantic(lambda: main(argv), rounds=2, iterations=1)   # includes loading
