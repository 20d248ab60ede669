"""LoRA: the fused op (finite differences, PyTorch), the layer, apply/merge/save/load."""

import numpy as np
import pytest

import tinyroots as tr
from tinyroots import ops
from tinyroots.finetune import modify
from tinyroots.nn import Linear, LoRALinear
from tinyroots.tensor import Tensor

torch = pytest.importorskip("torch")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def t64(a, grad=True):
    return Tensor(a, requires_grad=grad, dtype=np.float64)


def lora_inputs(seed=0, lead=(2, 5), C=6, OC=7, R=3):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(lead + (C,)), rng.standard_normal((C, OC)),
            rng.standard_normal(OC), rng.standard_normal((C, R)), rng.standard_normal((R, OC)))


def numeric_grad(f, arrays, i, eps=1e-6):
    """Central differences of the scalar f(*arrays) with respect to arrays[i]."""
    a = arrays[i]
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + eps
        hi = f(*arrays)
        a[idx] = old - eps
        lo = f(*arrays)
        a[idx] = old
        g[idx] = (hi - lo) / (2 * eps)
    return g


@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_lora_op_matches_finite_differences_float64(dropout_p):
    arrays = list(lora_inputs())
    G = np.random.default_rng(1).standard_normal((2, 5, 7))   # a fixed upstream gradient
    scale = 0.75

    def f(x, w, b, a, bb):
        tr.manual_seed(5)                 # the same dropout mask on every call
        out = ops.lora_linear(t64(x, False), t64(w, False), t64(b, False), t64(a, False),
                              t64(bb, False), scale, dropout_p, training=True)
        return float((out.data * G).sum())

    tensors = [t64(a.copy()) for a in arrays]
    tr.manual_seed(5)
    out = ops.lora_linear(*tensors, scale, dropout_p, training=True)
    out.backward(G)
    for i, name in enumerate(["x", "w", "b", "A", "B"]):
        num = numeric_grad(f, arrays, i)
        # float64 central differences with eps 1e-6: error ~1e-9 relative to O(1) values
        np.testing.assert_allclose(tensors[i].grad, num, rtol=1e-6, atol=1e-7, err_msg=name)


def test_lora_op_matches_pytorch_float32():
    x, w, b, a, bb = (arr.astype(np.float32) for arr in lora_inputs(2, (3, 8), 16, 24, 4))
    scale = 2.0
    ours = [Tensor(v, requires_grad=True) for v in (x, w, b, a, bb)]
    out = ops.lora_linear(*ours, scale)
    g = np.random.default_rng(3).standard_normal(out.shape).astype(np.float32)
    out.backward(g)
    ref = [torch.tensor(v, requires_grad=True) for v in (x, w, b, a, bb)]
    tout = ref[0] @ ref[1] + ref[2] + scale * (ref[0] @ ref[3] @ ref[4])
    tout.backward(torch.tensor(g))
    # float32, sums of 16-24 products of O(1) numbers: 1e-5 relative
    np.testing.assert_allclose(out.data, tout.detach().numpy(), rtol=1e-5, atol=1e-5)
    for mine, theirs, name in zip(ours, ref, ["x", "w", "b", "A", "B"]):
        np.testing.assert_allclose(mine.grad, theirs.grad.numpy(), rtol=1e-4, atol=1e-4,
                                   err_msg=name)


def test_frozen_base_weight_gets_no_gradient_computed(monkeypatch):
    x, w, b, a, bb = lora_inputs()
    shapes = []
    real = tr.kernels.matmul_tn

    def counting_matmul_tn(p, q):                 # every weight gradient is a^T @ b
        shapes.append(p.T.shape[:1] + q.shape[1:])
        return real(p, q)

    monkeypatch.setattr(tr.kernels, "matmul_tn", counting_matmul_tn)
    X = t64(x)
    W, Bi = t64(w, False), t64(b, False)
    A, B = t64(a), t64(bb)
    ops.lora_linear(X, W, Bi, A, B, 1.0).sum().backward()
    assert W.grad is None and Bi.grad is None
    assert A.grad is not None and B.grad is not None and X.grad is not None
    assert sorted(shapes) == sorted([A.shape, B.shape])        # no (C, OC) product for W
    shapes.clear()
    W.requires_grad = True
    ops.lora_linear(X, W, Bi, A, B, 1.0).sum().backward()
    assert W.shape in shapes and W.grad is not None


def test_lora_op_shape_errors_name_the_shapes():
    x, w, b, a, bb = lora_inputs()
    with pytest.raises(ops.ShapeError, match="adapter A"):
        ops.lora_linear(t64(x), t64(w), t64(b), t64(a[:-1]), t64(bb), 1.0)
    with pytest.raises(ops.ShapeError, match="does not fit weight"):
        ops.lora_linear(t64(x[..., :-1]), t64(w), t64(b), t64(a), t64(bb), 1.0)


def test_lora_linear_starts_as_the_base_layer_and_freezes_it():
    tr.manual_seed(0)
    base = Linear(8, 12)
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    before = base(Tensor(x)).data.copy()
    layer = LoRALinear(base, r=4, alpha=8)
    assert layer.weight is base.weight and not layer.weight.requires_grad
    assert layer.lora_A.shape == (8, 4) and layer.lora_B.shape == (4, 12)
    np.testing.assert_array_equal(layer(Tensor(x)).data, before)   # B = 0: exactly the base
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(Linear(4, 4), r=0)


def tiny_gpt(seed=0, **kw):
    tr.manual_seed(seed)
    cfg = dict(n_layer=2, n_head=2, n_embd=16, vocab_size=40, block_size=16)
    cfg.update(kw)
    return tr.GPT(tr.GPTConfig(**cfg))


def randomise_adapters(model, seed=1):
    rng = np.random.default_rng(seed)
    for _, layer in modify.lora_layers(model):
        layer.lora_B.data = (0.1 * rng.standard_normal(layer.lora_B.shape)).astype(np.float32)


@pytest.mark.parametrize("targets", ["attn", "mlp", "all"])
def test_merge_gives_the_same_logits_as_the_adapter(targets):
    model = tiny_gpt()
    ids = np.random.default_rng(0).integers(0, 40, (2, 12))
    base_logits = model(ids).logits.data.copy()
    modify.apply_lora(model, r=4, alpha=8, targets=targets)
    randomise_adapters(model)
    model.eval()
    unmerged = model(ids).logits.data.copy()
    assert np.abs(unmerged - base_logits).max() > 1e-3       # the adapters do something
    state = modify.merged_state_dict(model)
    modify.merge_lora(model)
    assert not modify.lora_layers(model)
    merged = model(ids).logits.data
    # float32: W + s A B rounded once vs. x W + s (x A) B accumulated separately
    np.testing.assert_allclose(merged, unmerged, rtol=1e-4, atol=1e-5)
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(state[name], p.data)
    assert type(model.transformer.h[0].mlp) is tr.model.MLP


def test_lora_on_c_fc_is_not_bypassed_by_the_fused_mlp():
    model = tiny_gpt()
    ids = np.arange(10)[None]
    before = model(ids).logits.data.copy()
    modify.apply_lora(model, r=2, targets="mlp.c_fc")
    assert isinstance(model.transformer.h[0].mlp.c_fc, LoRALinear)
    np.testing.assert_allclose(model(ids).logits.data, before, rtol=1e-5, atol=1e-6)
    randomise_adapters(model)
    assert np.abs(model(ids).logits.data - before).max() > 1e-3


def test_apply_lora_trains_only_adapters_and_counts_them():
    model = tiny_gpt()
    total = model.num_parameters()
    modify.apply_lora(model, r=2, targets="attn")
    trainable, total_after = modify.count_parameters(model)
    C = 16
    per_block = 2 * (C + 3 * C) + 2 * (C + C)                # c_attn and attn.c_proj adapters
    assert trainable == 2 * per_block
    assert total_after == total + trainable
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(".lora_" in n for n in names)
    ids = np.random.default_rng(0).integers(0, 40, (2, 8))
    model(ids, labels=ids).loss.backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n
    with pytest.raises(ValueError, match="already has LoRA"):
        modify.apply_lora(model)
    with pytest.raises(ValueError, match="not one of"):
        modify.parse_lora_targets("attn.q_proj")


def test_adapter_save_and_load_round_trip(tmp_path):
    model = tiny_gpt()
    base_state = {k: v.copy() for k, v in model.state_dict().items()}
    modify.apply_lora(model, r=3, alpha=6, targets="all")
    randomise_adapters(model, seed=4)
    ids = np.random.default_rng(0).integers(0, 40, (1, 10))
    expected = model(ids).logits.data.copy()
    modify.save_adapter(model, tmp_path, base_model="tiny")
    cfg = tr.checkpoint.read_json(tmp_path / "adapter_config.json")
    assert cfg["r"] == 3 and cfg["lora_alpha"] == 6.0 and cfg["peft_type"] == "LORA"
    assert sorted(cfg["target_modules"]) == sorted(modify.LORA_TARGETS["all"])
    arrays, _ = tr.safetensors.load_safetensors(tmp_path / "adapter_model.safetensors")
    key = "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"
    assert arrays[key].shape == (3, 16)                      # PEFT layout: (r, in)
    assert not any("lora" in k for k in base_state)          # the base has no adapter weights

    fresh = tiny_gpt()
    fresh.load_state_dict(base_state)
    modify.load_adapter(fresh, tmp_path)
    np.testing.assert_allclose(fresh(ids).logits.data, expected, rtol=1e-6, atol=1e-6)
