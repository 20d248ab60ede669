"""Byte-level BPE: training against Hugging Face tokenizers, encoding against tiktoken.

    python -m pytest bench/bench_tokenizer.py --benchmark-only

* train: vocab 8192 with <|endoftext|>, min_frequency 2, GPT-2 pre-tokenizer, from a file:
  tinyshakespeare (1.1 MB) and a 50 MB corpus generated here (Shakespeare lines drawn with a
  seeded RNG, written to a temp file). Hugging Face: BpeTrainer + ByteLevel(add_prefix_space=
  False), its Rust threads; tinyroots: Tokenizer.train on BENCH_THREADS threads (both 2 here).
* encode: tinyshakespeare, one thread, against tiktoken.Encoding built from our own merges
  (ids asserted identical). tinyroots starts each round with an empty word cache.
* encode_batch: 1000 documents of ~1 KB on BENCH_THREADS threads, both.

Everything runs side by side in one session; the summary at the end gives the ratios
(tinyroots time / reference time: below 1 means tinyroots is faster).
"""

import os
import random

import pytest
from conftest import BENCH_THREADS

import tinyroots
import tinyroots.tokenizer as T

# Hugging Face tokenizers sizes its thread pool when first used (it is imported lazily below)
os.environ.setdefault("RAYON_NUM_THREADS", str(BENCH_THREADS))

ASSET = os.path.join(os.path.dirname(tinyroots.__file__), "assets", "tinyshakespeare.txt")
VOCAB = 8192
EOT = "<|endoftext|>"
_medians = {}
_mins = {}


@pytest.fixture(scope="session")
def corpus_50mb(tmp_path_factory):
    """50 MB of Shakespeare lines in a seeded random order (the same file on every run)."""
    with open(ASSET, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    rng = random.Random(1234)
    path = tmp_path_factory.mktemp("bpe") / "corpus50.txt"
    size = 0
    with open(path, "w", encoding="utf-8") as f:
        while size < 50_000_000:
            block = "".join(rng.choice(lines) for _ in range(20_000))
            f.write(block)
            size += len(block)
    return str(path)


def _record(benchmark, key):
    _medians[key] = benchmark.stats.stats.median
    _mins[key] = benchmark.stats.stats.min


def _train_hf(path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, min_frequency=2, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train([path], trainer)
    return tok


def _train_ours(path):
    return T.Tokenizer.train(path, VOCAB, min_frequency=2, num_threads=BENCH_THREADS)


@pytest.mark.parametrize("corpus", ["shakespeare", "50MB"])
@pytest.mark.parametrize("impl", ["huggingface", "tinyroots"])
def test_train(benchmark, impl, corpus, request):
    if impl == "huggingface":
        pytest.importorskip("tokenizers")
    path = ASSET if corpus == "shakespeare" else request.getfixturevalue("corpus_50mb")
    benchmark.group = f"train vocab {VOCAB}: {corpus}"
    rounds = 5 if corpus == "shakespeare" else (2 if impl == "huggingface" else 3)
    fn = _train_hf if impl == "huggingface" else _train_ours
    tok = benchmark.pedantic(fn, args=(path,), rounds=rounds, iterations=1, warmup_rounds=0)
    size = tok.get_vocab_size() if impl == "huggingface" else tok.vocab_size
    assert size == VOCAB
    _record(benchmark, ("train", corpus, impl))


@pytest.fixture(scope="module")
def shakespeare():
    with open(ASSET, encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def tokenizers_pair(shakespeare):
    """Our tokenizer trained on Shakespeare, and tiktoken built from the same merges."""
    tiktoken = pytest.importorskip("tiktoken")
    ours = T.Tokenizer.train(shakespeare, VOCAB)
    ranks = {ours.token_bytes(i): i for i in range(ours.vocab_size)
             if i not in ours.special_tokens.values()}
    theirs = tiktoken.Encoding("tinyroots-bench", pat_str=T.GPT2_SPLIT_PATTERN,
                               mergeable_ranks=ranks, special_tokens=ours.special_tokens)
    assert ours.encode(shakespeare) == theirs.encode(shakespeare, allowed_special="all")
    return ours, theirs


@pytest.mark.parametrize("impl", ["tiktoken", "tinyroots"])
def test_encode(benchmark, impl, tokenizers_pair, shakespeare):
    ours, theirs = tokenizers_pair
    benchmark.group = "encode 1.1 MB, one thread"
    if impl == "tiktoken":
        ids = benchmark.pedantic(theirs.encode, args=(shakespeare,),
                                 kwargs={"allowed_special": "all"}, rounds=10, warmup_rounds=1)
    else:
        def cold():
            ours.clear_cache()      # every round starts with an empty word cache
            return (shakespeare,), {}
        ids = benchmark.pedantic(ours.encode, setup=cold, rounds=10, warmup_rounds=1)
    mb = len(shakespeare.encode()) / 1e6
    benchmark.extra_info["MB_per_s"] = mb / benchmark.stats.stats.median
    assert len(ids) > 200_000
    _record(benchmark, ("encode", impl))


@pytest.mark.parametrize("impl", ["tiktoken", "tinyroots"])
def test_encode_batch(benchmark, impl, tokenizers_pair, shakespeare):
    ours, theirs = tokenizers_pair
    docs = [shakespeare[i:i + 1000] for i in range(0, 1_000_000, 1000)]
    benchmark.group = f"encode_batch 1000 x 1 KB, {BENCH_THREADS} threads"
    if impl == "tiktoken":
        out = benchmark.pedantic(theirs.encode_batch, args=(docs,),
                                 kwargs={"num_threads": BENCH_THREADS, "allowed_special": "all"},
                                 rounds=10, warmup_rounds=1)
    else:
        def cold():
            ours.clear_cache()
            return (docs,), {"num_threads": BENCH_THREADS}
        out = benchmark.pedantic(ours.encode_batch, setup=cold, rounds=10, warmup_rounds=1)
    assert len(out) == len(docs)
    _record(benchmark, ("encode_batch", impl))


def _ratio_lines():
    lines = []
    for corpus in ("shakespeare", "50MB"):
        a, b = ("train", corpus, "tinyroots"), ("train", corpus, "huggingface")
        if a in _medians and b in _medians:
            lines.append(f"train {corpus:<12} tinyroots / huggingface time: "
                         f"{_medians[a] / _medians[b]:.3f}x (median), "
                         f"{_mins[a] / _mins[b]:.3f}x (best)   [target <= 1.0]")
    for kind in ("encode", "encode_batch"):
        a, b = (kind, "tinyroots"), (kind, "tiktoken")
        if a in _medians and b in _medians:
            lines.append(f"{kind:<18} tinyroots / tiktoken speed:   "
                         f"{_medians[b] / _medians[a]:.3f}x (median), "
                         f"{_mins[b] / _mins[a]:.3f}x (best)"
                         + ("   [target >= 0.5]" if kind == "encode" else ""))
    return lines


class _RatioReport:
    """Prints the ratios in pytest's terminal summary (fixture output would be captured)."""

    def pytest_terminal_summary(self, terminalreporter):
        lines = _ratio_lines()
        if lines:
            terminalreporter.section("tokenizer: tinyroots vs reference, same run")
            for line in lines:
                terminalreporter.write_line(line)


@pytest.fixture(scope="module", autouse=True)
def _ratios(request):
    plugin = _RatioReport()
    if not request.config.pluginmanager.is_registered(plugin):
        request.config.pluginmanager.register(plugin, "tinyroots-tokenizer-ratios")
    yield
