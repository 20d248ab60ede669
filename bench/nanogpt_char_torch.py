"""nanoGPT's shakespeare_char CPU recipe in plain PyTorch: the reference for
`python -m tinyroots.train --preset shakespeare_char`.

Character vocabulary, n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12,
max_iters=2000, lr 1e-3 with 100 warmup steps and cosine decay to 1e-4 at step 2000,
AdamW betas (0.9, 0.99), weight decay 0.1 (2-D weights), gradient clip 1.0, dropout 0,
first 90% of the text for training; evaluation every 250 steps on 20 batches per split.

    python bench/nanogpt_char_torch.py [path/to/tinyshakespeare.txt] [threads]

Prints one JSON line: {"val_loss": ..., "train_loss": ..., "wall_s": ...}. The wall time
covers the whole process, imports included, as the comparison in the issue does.
"""

import time

T0 = time.time()

import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpt import TorchGPT  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "tinyroots", "assets",
                                                          "tinyshakespeare.txt")
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
torch.set_num_threads(threads)
torch.manual_seed(1337)

text = open(path, encoding="utf-8").read()
chars = sorted(set(text))
stoi = {c: i for i, c in enumerate(chars)}
data = np.array([stoi[c] for c in text], dtype=np.int64)
n = int(0.9 * len(data))
train_data, val_data = torch.from_numpy(data[:n]), torch.from_numpy(data[n:])

B, T, max_iters, warmup, lr_max, lr_min = 12, 64, 2000, 100, 1e-3, 1e-4
eval_interval, eval_iters = 250, 20
model = TorchGPT(4, 4, 128, len(chars), T)
decay = [p for p in model.parameters() if p.ndim >= 2]
rest = [p for p in model.parameters() if p.ndim < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                         {"params": rest, "weight_decay": 0.0}], lr=lr_max, betas=(0.9, 0.99))


def get_batch(split):
    d = train_data if split == "train" else val_data
    ix = torch.randint(len(d) - T, (B,))
    x = torch.stack([d[i:i + T] for i in ix])
    y = torch.stack([d[i + 1:i + 1 + T] for i in ix])
    return x, y


def get_lr(it):
    if it < warmup:
        return lr_max * (it + 1) / (warmup + 1)
    if it > max_iters:
        return lr_min
    ratio = (it - warmup) / (max_iters - warmup)
    return lr_min + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr_max - lr_min)


@torch.no_grad()
def estimate_loss():
    model.eval()
    out = {}
    for split in ("train", "val"):
        out[split] = float(np.mean([model(*get_batch(split)).item() for _ in range(eval_iters)]))
    model.train()
    return out


losses = {}
for it in range(max_iters + 1):
    if it % eval_interval == 0 or it == max_iters:
        losses = estimate_loss()
        print(f"step {it}: train {losses['train']:.4f}, val {losses['val']:.4f}",
              file=sys.stderr)
    if it == max_iters:
        break
    for g in opt.param_groups:
        g["lr"] = get_lr(it)
    x, y = get_batch("train")
    loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)

print(json.dumps({"val_loss": losses["val"], "train_loss": losses["train"],
                  "wall_s": time.time() - T0}))
