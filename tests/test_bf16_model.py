"""Mixed precision and bf16 weights on the whole model: --dtype bf16 against float32.

ops.autocast("bf16") rounds both operands of every linear product and of attention's products
(forward and backward) to bf16 and sums in float32; everything else stays float32. A bf16
input carries a relative error up to 2^-8, a product of two up to 2^-7, and a sum of K
products with random signs about 2^-8 / sqrt(K) of the sum of magnitudes: the activations of a
small model drift by a few tenths of a percent through its layers, and the errors mostly
cancel in the mean loss. Measured on this model (attention in bf16 too): loss 5e-6 relative,
gradients 0.6% (relative L2 norm, the worst parameter). The bounds leave room: loss within
0.1%, each gradient within 2% (gradients pass through twice as many rounded products as the
loss, and small ones are relatively noisier).
A real mistake (a transposed operand, a missing term, float32 weights left unrounded where bf16
was promised) moves the loss by tens of percent or the gradients by order one.
"""

import numpy as np
import pytest

import tinyroots as tr
from tinyroots import kernels, ops

LOSS_RTOL = 1e-3
GRAD_RTOL = 0.02


def small_model(seed=0):
    cfg = tr.GPTConfig(n_layer=2, n_head=2, n_embd=64, vocab_size=97, block_size=32,
                       dropout=0.0)
    tr.random.manual_seed(seed)
    return tr.GPT(cfg)


def loss_and_grads(model, ids):
    model.zero_grad()
    out = model(ids, labels=ids)
    out.loss.backward()
    grads = {name: p.grad.copy() for name, p in model.named_parameters()}
    return float(out.loss), out.logits.data.copy(), grads


@pytest.fixture
def batch():
    return np.random.default_rng(0).integers(0, 97, size=(4, 32))


def test_bf16_loss_and_gradients_match_fp32(batch):
    model = small_model()
    loss32, logits32, grads32 = loss_and_grads(model, batch)
    with ops.autocast("bf16"):
        loss16, logits16, grads16 = loss_and_grads(model, batch)
    assert abs(loss16 - loss32) <= LOSS_RTOL * abs(loss32), (loss16, loss32)
    assert not np.array_equal(logits16, logits32), "autocast('bf16') changed nothing"
    for name, g in grads32.items():
        assert grads16[name].dtype == np.float32, name
        err = np.linalg.norm(grads16[name] - g) / np.linalg.norm(g)
        assert err <= GRAD_RTOL, f"{name}: relative gradient error {err:.3g}"
    # master weights stay float32, and the autocast ends with its block
    assert all(p.dtype == np.float32 for p in model.parameters())
    _, logits_after, _ = loss_and_grads(model, batch)
    np.testing.assert_array_equal(logits_after, logits32)


def test_bf16_matches_the_reference_backend(batch):
    """The bf16 model on the C++ kernels against the same model on ref.*_bf16 (NumPy)."""
    if kernels.BACKEND != "cpu":
        pytest.skip("the C++ extension is not built")
    model = small_model()
    with ops.autocast("bf16"):
        loss_c, logits_c, _ = loss_and_grads(model, batch)
        saved = {}
        try:  # route the bf16 kernels to ref for one pass
            for name in ("linear_forward_bf16", "linear_backward_bf16",
                         "linear_gelu_forward_bf16", "linear_residual_forward_bf16",
                         "matmul_nt_bf16", "matmul_tn_bf16", "attention_forward_bf16",
                         "attention_backward_bf16"):
                saved[name] = getattr(kernels, name)
                setattr(kernels, name, getattr(kernels.ref, name))
            loss_r, logits_r, _ = loss_and_grads(model, batch)
        finally:
            for name, f in saved.items():
                setattr(kernels, name, f)
    # the same rounded products summed in another order. subtle: a float32-sum difference of
    # one ulp can tip a later activation across a bf16 rounding boundary, which moves that
    # input by 2^-8 of itself; so a few logits differ by bf16 steps, not float32 ones: bound
    # by 2^-8 of the logits' scale (a wrong kernel is off by the scale itself)
    np.testing.assert_allclose(logits_c, logits_r, rtol=0, atol=2**-8 * np.abs(logits_r).max())
    assert abs(loss_c - loss_r) <= 2**-8 * loss_r


def test_autocast_refuses_unknown_dtype():
    with pytest.raises(ValueError, match="dtype must be one of 'fp32', 'bf16', got 'fp16'"):
        with ops.autocast("fp16"):
            pass


def test_bf16_weights_decode_like_autocast(batch):
    """bf16_weights (decoding) stores the matrices as bf16; its logits equal the autocast
    model's up to summation order, and greedy decoding picks the same tokens."""
    model = small_model().eval()
    with ops.autocast("bf16"):
        want = model(batch).logits.data
    ids = batch[:1, :8]
    greedy32 = model.generate(ids, max_new_tokens=8, do_sample=False)
    model.bf16_weights()
    assert model.transformer.h[0].attn.c_attn.weight.dtype == np.uint16
    assert model.transformer.wte.weight.dtype == np.uint16
    assert model.transformer.wpe.weight.dtype == np.float32
    got = model(batch).logits.data
    # the same bf16 operands (see above for why bf16 steps, not float32 ones, bound the gap)
    np.testing.assert_allclose(got, want, rtol=0, atol=2**-8 * np.abs(want).max())
    greedy16 = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert greedy16.shape == greedy32.shape


# ---------------------------------------------------------------------------------------------
# train --dtype bf16


def _tiny_run(out_dir, **overrides):
    from tinyroots.train import PRESETS, TrainConfig, train
    values = {k: v for k, v in PRESETS["tiny"].items() if not k.startswith("_")}
    values.update(out_dir=str(out_dir), progress=False, plot=False, sample_tokens=0,
                  log_interval=1, max_steps=30, **overrides)
    lines = []
    run = train(TrainConfig(**values), out=lambda *a, **k: lines.append(" ".join(map(str, a))))
    return run, "\n".join(lines)


def test_train_dtype_bf16_learns_like_fp32(tmp_path):
    run32, _ = _tiny_run(tmp_path / "fp32")
    run16, log = _tiny_run(tmp_path / "bf16", dtype="bf16")
    assert run16.stop_reason == run32.stop_reason == "reached max_steps=30"
    loss32 = [r["val_loss"] for r in run32.history if "val_loss" in r]
    loss16 = [r["val_loss"] for r in run16.history if "val_loss" in r]
    assert len(loss16) == len(loss32) > 1
    assert loss16[-1] < loss16[0] - 0.5, "bf16 training did not learn"
    # 30 steps of AdamW carry the per-step differences along (measured below 0.5%): within 2%
    assert abs(loss16[-1] - loss32[-1]) <= 0.02 * loss32[-1], (loss16[-1], loss32[-1])
    assert "bf16 products" in log
    with open(tmp_path / "bf16" / "train_config.json") as f:
        assert '"dtype": "bf16"' in f.read()


def test_train_rejects_an_unknown_dtype(tmp_path):
    from tinyroots.config import ConfigError
    with pytest.raises(ConfigError, match="'dtype' must be 'fp32' or 'bf16', got 'fp16'"):
        _tiny_run(tmp_path, dtype="fp16")


def test_finetune_dtype_bf16_learns_like_fp32(tmp_path):
    """finetune --dtype bf16 (classification, the loop shared with train): the same run in
    fp32 and bf16 ends at nearly the same validation loss (within 2%, as for train)."""
    from test_finetune import cfg, classify_data, make_pretrained, quiet  # noqa: F401
    from tinyroots.finetune import finetune
    make_pretrained(tmp_path / "pre" / "best")
    data = classify_data.__wrapped__(_Factory(tmp_path))  # the fixture's function, called once
    runs = {}
    for dtype in ("fp32", "bf16"):
        runs[dtype] = finetune(cfg("classify", str(tmp_path / "pre"), data, tmp_path / dtype,
                                   max_steps=20, learning_rate=3e-3, dtype=dtype), out=quiet)
    v32, v16 = runs["fp32"].metrics["val_loss"], runs["bf16"].metrics["val_loss"]
    assert abs(v16 - v32) <= 0.02 * v32, (v16, v32)


class _Factory:
    """tmp_path_factory's mktemp, for calling a module-scoped fixture function directly."""

    def __init__(self, root):
        self.root = root

    def mktemp(self, name):
        path = self.root / name
        path.mkdir()
        return path
