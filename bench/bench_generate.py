"""Batch-1 greedy decoding: tinyroots' generate() against Hugging Face transformers' generate()
on the same random weights, same thread count, KV cache on for both.

Two models: GPT-2 124M, and 6 layers / 6 heads / 384 wide / vocab 65. Targets (issue "train
and generate"): >= 1.3x transformers' tokens/s on 124M, >= 3x on the small model.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench/bench_generate.py --benchmark-only -s
"""

import numpy as np
import pytest

import tinyroots as tr

MODELS = {
    "gpt2-124M": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, block_size=1024),
    "6x384-v65": dict(n_layer=6, n_head=6, n_embd=384, vocab_size=65, block_size=256),
}
PROMPT, NEW = 16, 64
_cache, _speed = {}, {}


def models(name, tmp_path_factory):
    if name not in _cache:
        tr.manual_seed(0)
        model = tr.GPT(tr.GPTConfig(**MODELS[name])).eval()
        path = tmp_path_factory.mktemp(name)
        model.save_pretrained(path)
        _cache[name] = (model, path)
    return _cache[name]


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("framework", ["transformers", "tinyroots"])
def test_greedy_decode(benchmark, tmp_path_factory, framework, name):
    model, path = models(name, tmp_path_factory)
    ids = np.random.default_rng(0).integers(0, MODELS[name]["vocab_size"], (1, PROMPT))
    benchmark.group = f"greedy decode {name}, batch 1, {NEW} new tokens"
    if framework == "transformers":
        torch = pytest.importorskip("torch")
        transformers = pytest.importorskip("transformers")
        hf = transformers.GPT2LMHeadModel.from_pretrained(path).eval()
        tids = torch.tensor(ids)

        def run():
            with torch.no_grad():
                return hf.generate(tids, max_new_tokens=NEW, min_new_tokens=NEW,
                                   do_sample=False, pad_token_id=0).numpy()
    else:
        def run():
            return model.generate(ids, max_new_tokens=NEW, eos_token_id=None)

    out = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    assert out.shape == (1, PROMPT + NEW)
    tok_s = NEW / benchmark.stats.stats.median
    _speed[(framework, name)] = (tok_s, out)
    benchmark.extra_info["tokens_per_s"] = tok_s
    line = f"\n[{framework} {name}] {tok_s:,.1f} tokens/s"
    ref = _speed.get(("transformers", name))
    if framework == "tinyroots" and ref:
        benchmark.extra_info["speedup_vs_transformers"] = tok_s / ref[0]
        benchmark.extra_info["same_tokens"] = bool(np.array_equal(out, ref[1]))
        line += f" = {tok_s / ref[0]:.2f}x transformers (same tokens: " \
                f"{np.array_equal(out, ref[1])})"
    print(line)
