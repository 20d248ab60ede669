"""tokenizer.encode(text, return_tensors="pt"): a torch tensor when torch is installed, so the
article's Hugging Face snippet runs with only the import line changed; a clear error without."""

import builtins

import numpy as np
import pytest

import tinyroots as tr

TEXT = "Hello, my dog is cute"


@pytest.fixture(scope="module", params=["bpe", "char"])
def tok(request):
    if request.param == "char":
        return tr.CharTokenizer.train(TEXT + " xyz")
    return tr.Tokenizer.train(TEXT * 20, vocab_size=300)


def test_pt_is_a_torch_tensor_with_the_np_values(tok):
    torch = pytest.importorskip("torch")
    ids = tok.encode(TEXT, return_tensors="pt")
    assert isinstance(ids, torch.Tensor) and ids.dtype == torch.int64
    np.testing.assert_array_equal(ids.numpy(), tok.encode(TEXT, return_tensors="np"))
    batch = tok(TEXT, return_tensors="pt")
    assert isinstance(batch["attention_mask"], torch.Tensor)
    assert batch["attention_mask"].shape == ids.shape and int(batch["attention_mask"].min()) == 1
    # a tinyroots model takes the torch tensor as it is (the snippet's next line)
    model = tr.GPT(tr.GPTConfig(n_layer=1, n_head=1, n_embd=8, vocab_size=tok.vocab_size,
                                block_size=64))
    assert model(ids, labels=ids).logits.shape == (1, ids.shape[1], tok.vocab_size)


def test_pt_without_torch_is_a_clear_error(tok, monkeypatch):
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(ImportError, match="return_tensors='pt' needs PyTorch.*'np'"):
        tok.encode(TEXT, return_tensors="pt")


def test_unknown_kind_names_the_allowed_ones(tok):
    with pytest.raises(ValueError, match="None, 'np' .* or 'pt'.*'tf'"):
        tok.encode(TEXT, return_tensors="tf")
