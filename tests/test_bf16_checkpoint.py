"""bf16 checkpoints both ways with transformers, and decoding with bf16 weights."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import tinyroots as tr
from tinyroots import kernels

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def small_model():
    tr.random.manual_seed(0)
    cfg = tr.GPTConfig(n_layer=2, n_head=2, n_embd=64, vocab_size=97, block_size=32,
                       dropout=0.0)
    return tr.GPT(cfg).eval()


def header_dtypes(path):
    with open(os.path.join(path, "model.safetensors"), "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return {k: v["dtype"] for k, v in header.items() if k != "__metadata__"}


def bits(t):
    """A torch bf16 tensor's bit patterns as uint16."""
    return t.detach().contiguous().view(torch.int16).numpy().view(np.uint16)


def test_bf16_checkpoint_loads_in_transformers_and_back(tmp_path):
    model = small_model()
    want = {name: kernels.to_bf16(p.data) for name, p in model.named_parameters()}
    model.save_pretrained(tmp_path / "ours", dtype="bf16")
    assert set(header_dtypes(tmp_path / "ours").values()) == {"BF16"}

    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours",
                                                      torch_dtype=torch.bfloat16)
    hf_state = hf.state_dict()
    for name, w in want.items():  # the same bits: Conv1D weights are (in, out) in both
        np.testing.assert_array_equal(bits(hf_state[name]), w, err_msg=name)

    hf.save_pretrained(tmp_path / "theirs")            # transformers writes BF16 safetensors
    assert "BF16" in set(header_dtypes(tmp_path / "theirs").values())
    back = tr.GPT.from_pretrained(tmp_path / "theirs", dtype="bf16")
    for name, p in back.named_parameters():
        if p.dtype == np.uint16:  # the weights kept in bf16: bit for bit
            np.testing.assert_array_equal(p.data, want[name], err_msg=name)
        else:  # the rest (biases, layernorms, wpe) widened to float32, exactly
            np.testing.assert_array_equal(p.data, kernels.from_bf16(want[name]), err_msg=name)


def test_bf16_weights_give_the_logits_of_transformers_float32(tmp_path):
    """The same bf16-valued weights in both: transformers in float32, tinyroots with the
    weights kept in bf16 (activations rounded to bf16 in each product). The gap is that
    rounding: a few bf16 steps (2^-8) of the logits' scale."""
    model = small_model()
    model.save_pretrained(tmp_path, dtype="bf16")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, torch_dtype=torch.float32)
    ids = np.random.default_rng(1).integers(0, 97, size=(2, 16))
    with torch.no_grad():
        want = hf(torch.from_numpy(ids)).logits.numpy()
    fp32 = tr.GPT.from_pretrained(tmp_path)       # bf16 values widened: float32 exactly
    np.testing.assert_allclose(fp32(ids).logits.data, want, rtol=0,
                               atol=1e-5 * np.abs(want).max())
    got = tr.GPT.from_pretrained(tmp_path, dtype="bf16")(ids).logits.data
    np.testing.assert_allclose(got, want, rtol=0, atol=4 * 2**-8 * np.abs(want).max())


def test_generate_dtype_bf16(tmp_path):
    model = small_model()
    model.save_pretrained(tmp_path)
    ids = np.array([[1, 2, 3, 4]])
    fp32 = model.generate(ids, max_new_tokens=6, do_sample=False)
    bf16 = tr.GPT.from_pretrained(tmp_path, dtype="bf16")
    out = bf16.generate(ids, max_new_tokens=6, do_sample=False)
    assert out.shape == fp32.shape and np.array_equal(out[:, :4], ids)
    # a batch decoded together gets each row's tokens alone (the few-rows path sums each row
    # on its own), as in float32
    both = bf16.generate(np.array([[1, 2, 3, 4], [5, 6, 7, 8]]), max_new_tokens=6,
                         do_sample=False)
    np.testing.assert_array_equal(both[:1], out)
    with pytest.raises(ValueError, match="dtype must be one of 'fp32', 'bf16', got 'fp8'"):
        tr.GPT.from_pretrained(tmp_path, dtype="fp8")


def test_bf16_model_cannot_train_silently(tmp_path):
    model = small_model().bf16_weights()
    assert not model.transformer.h[0].mlp.c_fc.weight.requires_grad
    assert model.transformer.h[0].ln_1.weight.requires_grad


def test_generate_command_dtype(tmp_path):
    tok = os.environ.get("TINYROOTS_GPT2_TOKENIZER")
    if not tok:
        pytest.skip("TINYROOTS_GPT2_TOKENIZER is not set")
    cfg = tr.GPTConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=50257, block_size=32)
    tr.GPT(cfg).save_pretrained(tmp_path, tokenizer=tr.Tokenizer.from_pretrained(tok))
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "tinyroots.generate", "--checkpoint", str(tmp_path),
         "--prompt", "Hello", "--max_new_tokens", "4", "--temperature", "0", *a],
        capture_output=True, text=True, timeout=300)
    ok = run("--dtype", "bf16")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("Hello")
    bad = run("--dtype", "fp16")
    assert bad.returncode != 0
    assert "'dtype' must be 'fp32' or 'bf16', got 'fp16'" in bad.stderr
    assert "Traceback" not in bad.stderr
