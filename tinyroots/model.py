"""GPT-2, readable top to bottom: config, attention, MLP, block, model, generation.

The architecture is exactly OpenAI's GPT-2 (and Hugging Face's GPT2LMHeadModel):

    x = wte[ids] + wpe[positions]                       token + learned position embeddings
    for each block:                                     pre-LayerNorm residual blocks
        x = x + attn(ln_1(x))                           causal multi-head self-attention
        x = x + mlp(ln_2(x))                            Linear -> GELU -> Linear
    logits = ln_f(x) @ wte^T                            the head shares the embedding table

Parameter names and shapes are Hugging Face's (``transformer.h.0.attn.c_attn.weight`` is (C, 3C)),
so checkpoints move between the two without renaming.
"""

import math
import os
from dataclasses import asdict, dataclass, fields
from typing import Optional

import numpy as np

from . import kernels as K
from . import ops
from .ops import gelu
from .nn import Dropout, Embedding, LayerNorm, Linear, Module, ModuleList
from .random import generator
from .tensor import Tensor, no_grad


@dataclass
class GPTConfig:
    """Shape and regularisation of a GPT. Defaults are GPT-2 small (124M parameters)."""

    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    vocab_size: int = 50257
    block_size: int = 1024          # the context length (Hugging Face: n_positions)
    dropout: float = 0.0            # embedding, attention and residual dropout
    bias: bool = True               # biases in Linear and LayerNorm (GPT-2: True)
    n_inner: Optional[int] = None   # MLP hidden size; None means 4 * n_embd
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None

    def __post_init__(self):
        for name in ("n_layer", "n_head", "n_embd", "vocab_size", "block_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} must be divisible by "
                             f"n_head={self.n_head} (each head gets n_embd / n_head channels)")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.n_inner is not None and (not isinstance(self.n_inner, (int, np.integer))
                                         or self.n_inner < 1):
            raise ValueError(f"GPTConfig.n_inner must be a positive integer or None, "
                             f"got {self.n_inner!r}")
        for name in ("bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            # subtle: Hugging Face configs often keep GPT-2's 50256 even for a smaller
            # vocabulary; such an id is kept (it simply never occurs), not rejected
            if value is not None and (isinstance(value, bool) or int(value) < 0):
                raise ValueError(f"GPTConfig.{name} must be a token id >= 0 or None, "
                                 f"got {value!r}")
        # layernorm divides by sqrt(var + eps): eps <= 0 or NaN turns a constant row into NaN
        if not (math.isfinite(self.layer_norm_epsilon) and self.layer_norm_epsilon > 0):
            raise ValueError(f"GPTConfig.layer_norm_epsilon must be a finite number > 0, "
                             f"got {self.layer_norm_epsilon!r}")
        if not (math.isfinite(self.initializer_range) and self.initializer_range >= 0):
            raise ValueError(f"GPTConfig.initializer_range must be a finite number >= 0, "
                             f"got {self.initializer_range!r}")
        self._check_fits_in_memory()

    def weight_bytes(self):
        """float32 bytes of the weights: embeddings, and per block 4 C x C attention and
        2 C x H MLP matrices with their biases and two layernorms."""
        C, H, L = self.n_embd, self.hidden_size, self.n_layer
        per_block = 4 * C * C + 2 * C * H + 9 * C + H
        return 4 * ((self.vocab_size + self.block_size) * C + L * per_block + 2 * C)

    def _check_fits_in_memory(self):
        """Refuse, before anything is allocated, a shape whose weights alone exceed this
        machine's memory (n_positions = 1e9 in a config.json asked for 238 GiB)."""
        try:
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return
        need = self.weight_bytes()
        if need > total:
            raise ValueError(
                f"GPTConfig: the weights alone need {need / 2**30:,.1f} GiB (n_layer="
                f"{self.n_layer}, n_embd={self.n_embd}, vocab_size={self.vocab_size}, "
                f"block_size={self.block_size}); this machine has {total / 2**30:.1f} GiB")

    @property
    def head_size(self):
        return self.n_embd // self.n_head

    @property
    def hidden_size(self):
        return self.n_inner or 4 * self.n_embd

    # -- Hugging Face config.json ---------------------------------------------------------------

    def to_hf_dict(self):
        """The config.json Hugging Face's GPT2LMHeadModel reads."""
        d = {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": self.vocab_size,
            "n_positions": self.block_size,
            "n_ctx": self.block_size,
            "n_embd": self.n_embd,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_inner": self.n_inner,
            "activation_function": "gelu_new",
            "resid_pdrop": self.dropout,
            "embd_pdrop": self.dropout,
            "attn_pdrop": self.dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "initializer_range": self.initializer_range,
            "scale_attn_weights": True,
            "tie_word_embeddings": True,
            "torch_dtype": "float32",
            "tinyroots": {"bias": self.bias},
        }
        # written even when unset (null): transformers reads a missing key as GPT-2's 50256
        for key in ("bos_token_id", "eos_token_id"):
            value = getattr(self, key)
            d[key] = None if value is None else int(value)
        return d

    @classmethod
    def from_hf_dict(cls, d, source="config.json"):
        """Read a Hugging Face GPT-2 config (or one tinyroots wrote)."""
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected a JSON object")
        model_type = d.get("model_type", "gpt2")
        if model_type != "gpt2":
            raise ValueError(f"{source}: model_type is {model_type!r}; tinyroots loads GPT-2 "
                             "models (model_type 'gpt2')")
        act = d.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"{source}: activation_function {act!r} is not supported (GPT-2 "
                             "uses 'gelu_new', the tanh approximation)")
        for key, bad in (("scale_attn_weights", False), ("scale_attn_by_inverse_layer_idx", True),
                         ("add_cross_attention", True), ("tie_word_embeddings", False)):
            if d.get(key, not bad) == bad:
                raise ValueError(f"{source}: {key}={bad} is not supported by tinyroots")
        try:
            pdrops = [float(d.get(k, 0.0) or 0.0) for k in ("resid_pdrop", "embd_pdrop",
                                                             "attn_pdrop")]
            return cls(
                n_layer=int(d["n_layer"]), n_head=int(d["n_head"]), n_embd=int(d["n_embd"]),
                vocab_size=int(d["vocab_size"]),
                block_size=int(d.get("n_positions", d.get("n_ctx", 1024))),
                dropout=max(pdrops),
                bias=bool(d.get("tinyroots", {}).get("bias", True)),
                n_inner=None if d.get("n_inner") is None else int(d["n_inner"]),
                layer_norm_epsilon=float(d.get("layer_norm_epsilon", 1e-5)),
                initializer_range=float(d.get("initializer_range", 0.02)),
                bos_token_id=d.get("bos_token_id"),
                eos_token_id=_first_id(d.get("eos_token_id")),
            )
        except KeyError as exc:
            raise ValueError(f"{source}: missing key {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from None

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"GPTConfig: unknown key(s) {', '.join(unknown)}; known keys are "
                             f"{', '.join(sorted(known))}")
        return cls(**d)


def _first_id(value):
    if isinstance(value, list):
        return value[0] if value else None
    return value


class ModelOutput:
    """What GPT.forward returns: ``.loss`` and ``.logits`` (Tensors or None), and when asked
    for, ``.hidden_states`` and ``.attentions`` (tuples of np.ndarray, as Hugging Face's).

    Like Hugging Face's output it also indexes as a tuple of the fields that are set, so
    ``loss, logits = out[:2]`` works when labels were given and ``logits = out[0]`` when not.
    """

    def __init__(self, loss=None, logits=None, hidden_states=None, attentions=None):
        self.loss = loss
        self.logits = logits
        self.hidden_states = hidden_states    # n_layer + 1 arrays (B, T, C), or None
        self.attentions = attentions          # n_layer arrays (B, NH, T, T), or None

    def to_tuple(self):
        return tuple(v for v in (self.loss, self.logits, self.hidden_states, self.attentions)
                     if v is not None)

    def __getitem__(self, index):
        if isinstance(index, str):
            return getattr(self, index)
        return self.to_tuple()[index]

    def __iter__(self):
        return iter(self.to_tuple())

    def __len__(self):
        return len(self.to_tuple())

    def __repr__(self):
        loss = "None" if self.loss is None else f"{float(self.loss):.4f}"
        shape = None if self.logits is None else self.logits.shape
        return f"ModelOutput(loss={loss}, logits shape={shape})"


# ---------------------------------------------------------------------------------------------
# the KV cache: keys and values of every position seen so far, so each new token costs O(T)


class KVCache:
    """Per-layer key/value buffers for incremental decoding.

    k[layer], v[layer] are (B, NH, max_len, HS); the first ``length`` positions are filled.
    Each forward step writes the new positions' keys and values and attends over all of them.
    """

    def __init__(self, config, batch_size, max_len, dtype=np.float32):
        shape = (batch_size, config.n_head, max_len, config.head_size)
        self.k = [np.zeros(shape, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [np.zeros(shape, dtype=dtype) for _ in range(config.n_layer)]
        self.max_len = max_len
        self.length = 0

    def attend(self, layer, qkv, n_head):
        """qkv (B, T, 3C) for T new positions -> attention output (B, T, C)."""
        B, T, C3 = qkv.shape
        C = C3 // 3
        if self.length + T > self.max_len:
            raise ValueError(f"KVCache: {self.length} cached + {T} new positions exceed its "
                             f"size {self.max_len}")
        heads = qkv.reshape(B, T, 3, n_head, C // n_head).transpose(2, 0, 3, 1, 4)
        q = np.ascontiguousarray(heads[0])                                 # (B, NH, T, HS)
        self.k[layer][:, :, self.length:self.length + T] = heads[1]
        self.v[layer][:, :, self.length:self.length + T] = heads[2]
        y = K.attention_decode(q, self.k[layer], self.v[layer], self.length)  # (B, NH, T, HS)
        return np.ascontiguousarray(y.transpose(0, 2, 1, 3)).reshape(B, T, C)

    def positions(self, T):
        """The positions of the next T tokens: (T,), the same for every row."""
        return np.arange(self.length, self.length + T)

    def advance(self, T):
        """Called once the forward pass has written T new positions in every layer."""
        self.length += T


class RowCaches:
    """A batch whose rows each keep their own KVCache (B = 1 each): own length, own positions.

    This is how rows of different lengths decode together -- a left-padded batch in
    generate(attention_mask=...), or the requests of a serving loop, which join and leave
    between steps. The matrix products (c_attn, c_proj, the MLP, the head) run over the whole
    batch at once; only attention, which reads each row's own past, runs row by row, each row
    exactly as it would alone:

        caches = [KVCache(cfg, 1, 64) for _ in prompts]      # each filled by its own prompt
        logits = model(next_ids, kv_cache=RowCaches(caches))  # next_ids (B, 1)
    """

    def __init__(self, caches):
        self.caches = list(caches)

    @property
    def length(self):
        """The longest row's length (what the context check needs)."""
        return max(c.length for c in self.caches)

    def attend(self, layer, qkv, n_head):
        """qkv (B, T, 3C) -> (B, T, C); row i attends over caches[i] only.

        What KVCache.attend does for one row, for every row, in one kernel call: each row's new
        keys and values go into its own cache, then each row attends over its own past.
        """
        B, T, C3 = qkv.shape
        C = C3 // 3
        heads = qkv.reshape(B, T, 3, n_head, C // n_head).transpose(2, 0, 3, 1, 4)
        q = np.ascontiguousarray(heads[0])                                 # (B, NH, T, HS)
        lengths = [c.length for c in self.caches]
        for c, n in zip(self.caches, lengths):
            if n + T > c.max_len:
                raise ValueError(f"KVCache: {n} cached + {T} new positions exceed its "
                                 f"size {c.max_len}")
        y = K.attention_decode_rows(q, [c.k[layer] for c in self.caches],
                                    [c.v[layer] for c in self.caches], lengths,
                                    k_new=heads[1], v_new=heads[2])           # (B, NH, T, HS)
        return np.ascontiguousarray(y.transpose(0, 2, 1, 3)).reshape(B, T, C)

    def positions(self, T):
        """(B, T): each row counts from its own length."""
        return np.stack([c.positions(T) for c in self.caches])

    def advance(self, T):
        for c in self.caches:
            c.advance(T)


class PackedCaches:
    """Several prompts run as one: their tokens side by side in a single row (1, sum of
    lengths), each prompt's keys and values going into its own KVCache (B = 1 each).

    The matrix products see every prompt's tokens at once; only attention runs prompt by prompt,
    each over its own cache, exactly as alone. prefill_rows decides which prompts may share.
    """

    def __init__(self, caches, lengths):
        self.caches, self.lengths = list(caches), list(lengths)
        self.ends = np.cumsum(self.lengths)                 # prompt i is tokens ends[i-1]:ends[i]

    def attend(self, layer, qkv, n_head):
        """qkv (1, sum T, 3C) -> (1, sum T, C); each prompt's slice over its own cache."""
        return np.concatenate([c.attend(layer, qkv[:, e - T:e], n_head)
                               for c, T, e in zip(self.caches, self.lengths, self.ends)], axis=1)

    def positions(self, T):
        """(sum T,): each prompt counts from its own cache's length."""
        return np.concatenate([c.positions(t) for c, t in zip(self.caches, self.lengths)])

    def advance(self, T):
        for c, t in zip(self.caches, self.lengths):
            c.advance(t)


# subtle: a matrix product of up to FEW_ROWS rows (csrc/gemm.h: the few-rows paths, and the
# head's dot products) sums every row in the same order whatever the other rows, so a batch
# decoded FEW_ROWS rows per pass gives each row the very logits -- and greedy tokens -- it would
# get alone (tests/test_generate.py checks it). Past FEW_ROWS rows the packed product sums each
# element in an order set by K alone: the same for every row, but not the few-rows order. The
# NumPy reference's BLAS promises neither, so without the extension rows run alone.
FEW_ROWS = K.FEW_ROWS_MAX or 1
ROWS_PER_PASS = FEW_ROWS
PACKED_ROWS_MAX = 4096       # tokens per packed prefill: bounds its activations' memory


def decode_rows(model, next_ids, caches, rows_per_pass=ROWS_PER_PASS):
    """One decoding step of rows that each keep their own KVCache.

    next_ids (B,) int: each row's newest token; caches: B KVCaches (B = 1 each), which gain one
    position. -> logits (B, V) for each row's next token. The rows go through the model
    rows_per_pass at a time: with the default (see above) a row's result does not depend on its
    neighbours; more rows per pass read the weights fewer times, and a row's logits may then
    differ from its logits alone in the last bits (greedy ties can break the other way).
    """
    out = []
    for i in range(0, len(caches), rows_per_pass):
        rows = RowCaches(caches[i:i + rows_per_pass])
        ids = np.asarray(next_ids[i:i + rows_per_pass], dtype=np.int64)[:, None]   # (b, 1)
        out.append(model.forward(ids, kv_cache=rows, last_only=True).logits.data[:, -1, :])
    return np.concatenate(out, axis=0)                                             # (B, V)


def prefill_groups(lengths):
    """Which prompts run together -> lists of indices. Each prompt takes the same side of
    FEW_ROWS in its group as alone (see above), so its result is the one it gets alone:
    prompts of at most FEW_ROWS tokens share while their total stays within FEW_ROWS; longer
    ones share up to PACKED_ROWS_MAX tokens. Without the extension every prompt is alone."""
    if FEW_ROWS <= 1:
        return [[i] for i in range(len(lengths))]
    groups = []
    open_ = {True: ([], 0), False: ([], 0)}        # short?: (the group filling up, its tokens)
    for i, T in enumerate(lengths):
        short = T <= FEW_ROWS
        group, total = open_[short]
        if group and total + T > (FEW_ROWS if short else max(PACKED_ROWS_MAX, T)):
            groups.append(group)
            group, total = [], 0
        group.append(i)
        open_[short] = (group, total + T)
    return groups + [g for g, _ in open_.values() if g]


def prefill_rows(model, prompts, caches):
    """Run each prompt into its own (empty or not) KVCache -> logits (len(prompts), V) of each
    prompt's next token, each bit for bit what model(prompt, kv_cache=cache) gives alone.

    Prompts that may share a pass (prefill_groups) go through the weights together, their
    tokens side by side in one row (PackedCaches): 16 prompts of 32 tokens took 60 ms together
    against 100 ms one by one (6x384 model, Intel Xeon, 2 threads). Each prompt is checked as
    forward checks input_ids; a cache too small for its prompt is KVCache's error.
    """
    if model.training:
        raise RuntimeError("prefill_rows: a kv_cache is for inference; call model.eval() first")
    if len(caches) != len(prompts):
        raise ValueError(f"prefill_rows: {len(prompts)} prompts need as many caches, got "
                         f"{len(caches)}")
    prompts = [model.check_ids(p, f"prompts[{i}]")[0] for i, p in enumerate(prompts)]
    out = [None] * len(prompts)
    with no_grad():
        for group in prefill_groups([len(p) for p in prompts]):
            _prefill_group(model, [prompts[i] for i in group], [caches[i] for i in group],
                           group, out)
    return np.stack(out)                                                       # (P, V)


def _prefill_group(model, prompts, caches, where, out):
    """The prompts of one group in one pass; out[where[j]] = logits (V,) of prompt j."""
    packed = PackedCaches(caches, [len(p) for p in prompts])
    x = model.hidden_states(np.concatenate(prompts)[None, :], packed)         # (1, sum T, C)
    last = x.data[0, packed.ends - 1][:, None, :]                              # (G, 1, C)
    for a in range(0, len(prompts), ROWS_PER_PASS):                            # the head
        logits = ops.linear_transposed(Tensor(last[a:a + ROWS_PER_PASS]),
                                       model.transformer.wte.weight).data[:, -1, :]
        for i, row in zip(where[a:a + ROWS_PER_PASS], logits):
            out[i] = row


# ---------------------------------------------------------------------------------------------
# the blocks


class CausalSelfAttention(Module):
    def __init__(self, config):
        super().__init__()
        C = config.n_embd
        proj_std = config.initializer_range / math.sqrt(2 * config.n_layer)
        self.c_attn = Linear(C, 3 * C, bias=config.bias, std=config.initializer_range)
        # the residual projection is scaled down by 1/sqrt(2 n_layer): each block adds two
        # residual branches, and this keeps the residual stream's variance from growing with depth
        self.c_proj = Linear(C, C, bias=config.bias, std=proj_std)
        self.resid_dropout = Dropout(config.dropout)
        self.n_head = config.n_head
        self.attn_dropout = config.dropout

    def forward(self, x, cache=None, layer=0):
        qkv = self.c_attn(x)                                               # (B, T, C) -> (B, T, 3C)
        if cache is None:
            y = ops.attention(qkv, self.n_head, self.attn_dropout, self.training)  # -> (B, T, C)
        else:
            y = Tensor(cache.attend(layer, qkv.data, self.n_head))         # inference only
        return self.resid_dropout(self.c_proj(y))                          # (B, T, C)


class MLP(Module):
    def __init__(self, config):
        super().__init__()
        C, H = config.n_embd, config.hidden_size
        self.c_fc = Linear(C, H, bias=config.bias, std=config.initializer_range)
        self.c_proj = Linear(H, C, bias=config.bias,
                             std=config.initializer_range / math.sqrt(2 * config.n_layer))
        self.dropout = Dropout(config.dropout)

    def forward(self, x):
        h = gelu(self.c_fc(x))                                             # (B, T, C) -> (B, T, 4C)
        return self.dropout(self.c_proj(h))                                # -> (B, T, C)


def attention_weights(qkv, n_head):
    """The softmax weights the fused attention never stores, for inspection only (NumPy).

    qkv (B, T, 3C) as c_attn wrote it -> (B, NH, T, T). Row t of head h says how much position
    t attends to each position s: softmax over s <= t of q_t . k_s / sqrt(HS); s > t get 0.
    Training runs ops.attention, which keeps no T x T matrix; this is only called when
    forward(output_attentions=True) asks, and is not differentiated.
    """
    B, T, C3 = qkv.shape
    HS = C3 // 3 // n_head
    heads = qkv.reshape(B, T, 3, n_head, HS).transpose(2, 0, 3, 1, 4)  # (3, B, NH, T, HS)
    q, k = heads[0], heads[1]
    # subtle: einsum, not q @ k^T: NumPy's matmul on 4-D arrays makes one BLAS call per head,
    # and on a busy 2-core machine OpenBLAS' thread hand-off made that 40x slower (0.7 s per
    # layer of GPT-2 small at T=128, against 17 ms)
    scores = np.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(HS)         # (B, NH, T, T)
    future = np.triu(np.ones((T, T), dtype=bool), k=1)                 # s > t: not seen yet
    scores = np.where(future, -np.inf, scores)
    scores = scores - scores.max(axis=-1, keepdims=True)  # exp overflows near 88 in float32
    w = np.exp(scores)
    return w / w.sum(axis=-1, keepdims=True)                           # (B, NH, T, T)


class Block(Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, config.layer_norm_epsilon, config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, config.layer_norm_epsilon, config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), cache, layer)                      # (B, T, C)
        x = x + self.mlp(self.ln_2(x))                                     # (B, T, C)
        return x


class Transformer(Module):
    """The body: embeddings, blocks and final LayerNorm (Hugging Face's ``transformer``)."""

    def __init__(self, config):
        super().__init__()
        std = config.initializer_range
        self.wte = Embedding(config.vocab_size, config.n_embd, std)
        self.wpe = Embedding(config.block_size, config.n_embd, std)
        self.drop = Dropout(config.dropout)
        self.h = ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = LayerNorm(config.n_embd, config.layer_norm_epsilon, config.bias)


# ---------------------------------------------------------------------------------------------
# the model


class GPT(Module):
    """GPT-2 language model with a weight-tied head.

        model = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=128, vocab_size=65, block_size=64))
        out = model(ids, labels=ids)         # ids: int array (B, T)
        loss, logits = out[:2]               # logits (B, T, V)
    """

    def __init__(self, config=None, **kwargs):
        super().__init__()
        if config is None:
            config = GPTConfig(**kwargs)
        elif kwargs:
            raise TypeError("GPT: pass either a GPTConfig or keyword arguments, not both")
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT: config must be a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.transformer = Transformer(config)

    # -- forward ------------------------------------------------------------------------------

    def forward(self, input_ids, labels=None, targets=None, kv_cache=None, return_logits=True,
                last_only=False, output_attentions=False, output_hidden_states=False):
        """Run the model.

        input_ids     int array (B, T) or (T,)
        labels        Hugging Face style: the same tokens as input_ids (-100 to ignore one);
                      shifted inside, so position t is trained to predict labels[t + 1]
        targets       nanoGPT style: already aligned, position t predicts targets[t]
        kv_cache      a KVCache for incremental decoding (inference only)
        return_logits False lets the loss reuse the logits buffer for their gradient (training)
        last_only     compute logits for the last position only (generation)
        output_attentions     also return .attentions: per layer the softmax weights
                              (B, NH, T, T), recomputed in NumPy (the fused kernel keeps none)
        output_hidden_states  also return .hidden_states: the embeddings, each later block's
                              input and the ln_f output (n_layer + 1 arrays (B, T, C))
        Returns a ModelOutput with .loss (if labels/targets were given) and .logits.
        """
        cfg = self.config
        ids = self._check_ids(input_ids, "input_ids")
        B, T = ids.shape
        start = kv_cache.length if kv_cache is not None else 0
        if start + T > cfg.block_size:
            raise ValueError(f"forward: sequence of {start + T} positions is longer than the "
                             f"model's context (block_size={cfg.block_size}); crop input_ids "
                             f"to the last {cfg.block_size} tokens")
        if kv_cache is not None and self.training:
            raise RuntimeError("forward: a kv_cache is for inference; call model.eval() first")
        tgt = self._aligned_targets(labels, targets, ids.shape)
        record = _inspection_record(output_attentions, output_hidden_states, kv_cache)

        x = self.hidden_states(ids, kv_cache, record)                      # (B, T, C)
        if last_only:
            x = x[:, -1:, :]                                               # (B, 1, C)
        logits = ops.linear_transposed(x, self.transformer.wte.weight)     # (B, T, V)

        loss = None
        if tgt is not None:
            if last_only:
                raise ValueError("forward: last_only=True cannot be combined with labels")
            loss = ops.cross_entropy(logits, tgt, ignore_index=-100,
                                     inplace=not return_logits)
        return ModelOutput(loss=loss, logits=logits if (return_logits or loss is None) else None,
                           **{name: tuple(arrays) for name, arrays in (record or {}).items()})

    def hidden_states(self, ids, kv_cache=None, record=None, inputs_embeds=None):
        """The transformer body: int ids (B, T) -> final hidden states (B, T, C) after ln_f.

        Task heads (classification, ...) start from here; forward() adds the tied LM head.
        ``ids`` must already be checked (forward does it; other callers use check_ids).
        ``record`` (inspection only): a dict of lists to fill, see _inspection_record.
        ``inputs_embeds`` (B, T, C): token embeddings used instead of wte[ids], e.g. a Tensor
        that attribution differentiates the output with respect to.
        """
        tr = self.transformer
        B, T = ids.shape
        # each row's positions go on from what its cache holds (RowCaches: (B, T), row by row)
        positions = kv_cache.positions(T) if kv_cache is not None else np.arange(T)
        tok = tr.wte(ids) if inputs_embeds is None else inputs_embeds     # (B, T, C)
        pos = tr.wpe(positions)                                            # (T, C) or (B, T, C)
        x = tr.drop(tok + pos)
        for i, block in enumerate(tr.h):
            if record is not None:
                _record_block(record, block, x)
            x = block(x, kv_cache, i)
        x = tr.ln_f(x)                                                     # (B, T, C)
        if record is not None and "hidden_states" in record:
            record["hidden_states"].append(x.data.copy())
        if kv_cache is not None:
            kv_cache.advance(T)
        return x

    def check_ids(self, ids, name="input_ids"):
        """Validate token ids (integers, in the vocabulary, (B, T) or (T,)) -> int64 (B, T)."""
        ids = self._check_ids(ids, name)
        if ids.shape[1] > self.config.block_size:
            raise ValueError(f"{name}: sequence of {ids.shape[1]} positions is longer than the "
                             f"model's context (block_size={self.config.block_size})")
        return ids

    def _check_ids(self, ids, name):
        if isinstance(ids, Tensor):
            raise TypeError(f"forward: {name} must be an integer NumPy array, got a Tensor")
        if hasattr(ids, "numpy") and not isinstance(ids, np.ndarray):  # a torch tensor
            ids = ids.numpy()
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"forward: {name} must be integer token ids, got dtype {ids.dtype}")
        if ids.ndim == 1:
            ids = ids[None, :]
        if ids.ndim != 2 or 0 in ids.shape:     # (0, T) reached numpy's min() of nothing
            raise ValueError(f"forward: {name} must have shape (B, T) with B >= 1 and T >= 1, "
                             f"got {ids.shape}")
        V = self.config.vocab_size
        if ids.min() < 0 or ids.max() >= V:
            bad = int(ids.max() if ids.max() >= V else ids.min())
            raise ValueError(f"forward: {name} contains token id {bad}, outside the vocabulary "
                             f"0..{V - 1}")
        return ids.astype(np.int64, copy=False)

    def _aligned_targets(self, labels, targets, shape):
        """Targets with target[t] the token position t must predict (-100: no loss there)."""
        if labels is not None and targets is not None:
            raise ValueError("forward: pass labels (shifted inside) or targets (aligned), "
                             "not both")
        given = labels if labels is not None else targets
        if given is None:
            return None
        name = "labels" if labels is not None else "targets"
        t = np.asarray(given.numpy() if hasattr(given, "numpy") else given)
        if t.dtype.kind not in "iu":
            raise TypeError(f"forward: {name} must be integer token ids, got dtype {t.dtype}")
        if t.ndim == 1:
            t = t[None, :]
        if t.shape != shape:
            raise ValueError(f"forward: {name} has shape {t.shape}, expected {shape} like "
                             "input_ids")
        t = t.astype(np.int64, copy=False)
        if labels is not None:
            # Hugging Face's shift: logits at t predict labels[t + 1]; the last position has
            # nothing to predict, so it is ignored rather than sliced off (no copy of logits)
            t = np.concatenate([t[:, 1:], np.full((shape[0], 1), -100, dtype=np.int64)], 1)
        bad = (t != -100) & ((t < 0) | (t >= self.config.vocab_size))
        if bad.any():
            raise ValueError(f"forward: {name} contains {int(t[bad][0])}, which is neither a "
                             f"token id (0..{self.config.vocab_size - 1}) nor -100")
        return t

    # -- generation ---------------------------------------------------------------------------

    def generate(self, input_ids, max_new_tokens=None, max_length=None, do_sample=False,
                 temperature=1.0, top_k=None, top_p=None, seed=None, eos_token_id="config",
                 pad_token_id=None, attention_mask=None, use_cache=True, streamer=None,
                 output_scores=False, return_dict_in_generate=False, num_beams=1,
                 **unsupported):
        """Continue each row of input_ids; returns int64 ids (B, T + new).

        Greedy by default (argmax), as Hugging Face's generate(). do_sample=True samples from
        softmax(logits / temperature) restricted to the top_k most likely tokens and to the
        smallest set whose probability reaches top_p. temperature=0 also means greedy.
        With no length given, 20 new tokens. Generation stops early when every row has produced
        eos_token_id (default: the config's; an id or a list of ids); a finished row is filled
        with pad_token_id (default: the eos id). ``seed`` makes sampling reproducible on its
        own; otherwise the global generator (tinyroots.manual_seed) is used. ``streamer``
        receives each new column of tokens: an object with put(ids)/end(), or a callable.

        attention_mask (B, T) of 1 (a token) and 0 (padding), as Hugging Face's: rows of
        different lengths are padded on the left, and each row's positions count from its first
        real token, so every row continues exactly as it would alone. Each row keeps its own
        KV cache (RowCaches); the prompt plus the new tokens must fit the context.
        With use_cache=True the keys and values of past positions are cached (KVCache), so each
        new token costs one position's work; the tokens are the same as without the cache.

        output_scores=True, return_dict_in_generate=True -> GenerateOutput with .sequences and
        .scores: one (B, V) float32 array per new token, the logits after temperature, top-k
        and top-p (filtered tokens -inf), as Hugging Face's output_scores.
        """
        if unsupported:
            raise TypeError(f"generate: unsupported argument(s) {', '.join(sorted(unsupported))}"
                            " (tinyroots' generate does greedy decoding and sampling)")
        if num_beams != 1:
            raise TypeError(f"generate: unsupported argument num_beams={num_beams!r} (no beam "
                            "search; num_beams must be 1)")
        ids, max_new_tokens = self._generate_inputs(input_ids, max_new_tokens, max_length)
        temperature = 1.0 if temperature is None else temperature      # Hugging Face's default
        greedy = _check_sampling(do_sample, temperature, top_k, top_p)
        eos = _check_eos(self.config.eos_token_id if _is_config(eos_token_id) else eos_token_id)
        pad = _check_token_id(pad_token_id, "pad_token_id")
        pad = pad if pad is not None else (eos[0] if eos else None)
        rng = _sampling_rng(seed)
        starts = _left_padding(attention_mask, ids.shape)

        def pick(logits):                   # (B, V) -> the next ids (B,) and the warped scores
            z = logits if greedy else warp_logits(logits, temperature, top_k, top_p)
            return sample_next(z, greedy, 1.0, rng=rng), z      # z is already warped

        was_training = self.training
        self.eval()
        try:
            with no_grad():
                step = (self._uniform_stepper(ids, use_cache) if starts is None else
                        self._padded_stepper(ids, starts, max_new_tokens, use_cache))
                new_columns, scores = _decode(step, pick, max_new_tokens, len(ids), eos, pad,
                                              streamer, output_scores)
        finally:
            self.train(was_training)
            if streamer is not None and hasattr(streamer, "end"):
                streamer.end()
        sequences = np.concatenate([ids] + new_columns, axis=1)
        if return_dict_in_generate:
            return GenerateOutput(sequences, tuple(scores) if output_scores else None)
        return sequences

    def _generate_inputs(self, input_ids, max_new_tokens, max_length):
        """The checked prompt ids (B, T0) and how many tokens to add."""
        if np.shape(input_ids)[:1] == (0,):
            raise ValueError(f"generate: input_ids is an empty batch (shape "
                             f"{np.shape(input_ids)}); give at least one row of token ids")
        ids = self._check_ids(input_ids, "input_ids").copy()
        return ids, _check_length(max_new_tokens, max_length, ids.shape[1])

    def _uniform_stepper(self, ids, use_cache):
        """step(None) runs the prompt, step(next_ids (B,)) one more token -> logits (B, V).

        All rows share one length: one KVCache for the batch. When the context is full the
        cache is dropped and each step recomputes the last block_size tokens (a sliding window).
        """
        block = self.config.block_size
        columns = [ids]
        state = {"cache": KVCache(self.config, ids.shape[0], block)
                 if use_cache and ids.shape[1] <= block else None, "context": ids}

        def step(next_ids):
            if next_ids is not None:
                columns.append(next_ids[:, None])
                state["context"] = next_ids[:, None]
            cache = state["cache"]
            if cache is not None and cache.length + state["context"].shape[1] > block:
                cache = state["cache"] = None   # context is full: recompute over a window
            if cache is None:
                state["context"] = np.concatenate(columns, axis=1)[:, -block:]
            out = self.forward(state["context"], kv_cache=cache, last_only=True)
            return out.logits.data[:, -1, :]
        return step

    def _padded_stepper(self, ids, starts, max_new_tokens, use_cache):
        """Like _uniform_stepper for a left-padded batch: row i's real tokens are
        ids[i, starts[i]:]; each row runs its prompt into its own KVCache (its positions start
        at 0 there, whatever the padding; prefill_rows: as alone), then the rows decode
        together (RowCaches)."""
        block = self.config.block_size
        rows = [ids[i:i + 1, s:] for i, s in enumerate(starts)]
        longest = max(r.shape[1] for r in rows)
        if longest + max_new_tokens - 1 > block:
            raise ValueError(f"generate: with attention_mask, the longest prompt ({longest} "
                             f"tokens) plus max_new_tokens={max_new_tokens} must fit the "
                             f"model's context (block_size={block})")
        caches = [KVCache(self.config, 1, r.shape[1] + max_new_tokens) for r in rows]

        def step(next_ids):
            if next_ids is not None:
                for i, r in enumerate(rows):
                    rows[i] = np.concatenate([r, next_ids[i:i + 1, None]], axis=1)
            if next_ids is None or not use_cache:   # each row alone, from its cache's start
                fresh = [KVCache(self.config, 1, c.max_len) for c in caches] if not use_cache \
                    else caches
                return prefill_rows(self, rows, fresh)     # each as alone, packed
            return decode_rows(self, next_ids, caches)
        return step

    # -- utilities ------------------------------------------------------------------------------

    def get_num_params(self, non_embedding=True):
        """Parameter count; position embeddings excluded by default, as GPT-2 papers count."""
        n = self.num_parameters()
        if non_embedding:
            n -= self.transformer.wpe.weight.size
        return n

    def save_pretrained(self, path, **kwargs):
        """Write config.json + model.safetensors (Hugging Face GPT-2 layout) atomically:
        checkpoint.save_pretrained does the work (see register_checkpoint_io)."""
        return _checkpoint_io("save")(self, path, **kwargs)

    @classmethod
    def from_pretrained(cls, path, dtype="fp32", **kwargs):
        """Load a directory written by save_pretrained or by Hugging Face (safetensors), in
        eval mode as transformers does: checkpoint.load_pretrained does the work.
        dtype="bf16" keeps the weight matrices in bf16 for decoding (see bf16_weights)."""
        ops.check_dtype(dtype)
        model = _checkpoint_io("load")(path, model_class=cls, **kwargs)
        return model.bf16_weights() if dtype == "bf16" else model

    def bf16_weights(self):
        """Keep every linear layer's weight and the tied token embedding in bf16 (uint16 bits).

        For decoding: a token reads every weight once, so it costs the bytes read, and bf16
        halves them. The products take bf16 weights and float32 activations rounded to bf16,
        summed in float32 (ops.autocast); biases, layernorms and wpe stay float32. The model
        is then for inference: those weights take no gradient. Returns self.
        """
        weights = [m.weight for m in self.modules() if isinstance(m, Linear)]
        for p in weights + [self.transformer.wte.weight]:
            if p.dtype != np.uint16:
                p.data = K.to_bf16(p.data)
            p.requires_grad = False
        return self


# Files are a layer above the model: checkpoint.py imports this module and registers its
# load/save functions here when it is imported (`import tinyroots` imports it), so the model
# never imports the checkpoint layer and there is no import cycle.
_CHECKPOINT_IO = {}


def register_checkpoint_io(load, save):
    """Called once by checkpoint.py: the functions behind from_pretrained / save_pretrained."""
    _CHECKPOINT_IO.update(load=load, save=save)


def _checkpoint_io(kind):
    if kind not in _CHECKPOINT_IO:
        raise RuntimeError("GPT.from_pretrained/save_pretrained need tinyroots.checkpoint; "
                           "import tinyroots (or tinyroots.checkpoint) first")
    return _CHECKPOINT_IO[kind]


def _inspection_record(output_attentions, output_hidden_states, kv_cache):
    """None (the training path: nothing kept), or the lists forward's extra outputs fill."""
    if not (output_attentions or output_hidden_states):
        return None
    if output_attentions and kv_cache is not None:
        raise ValueError("forward: output_attentions=True cannot be combined with a kv_cache "
                         "(run the whole sequence without one)")
    wanted = {"hidden_states": output_hidden_states, "attentions": output_attentions}
    return {name: [] for name, asked in wanted.items() if asked}


def _record_block(record, block, x):
    """Keep what was asked for before ``block`` runs on x (B, T, C): x itself (Hugging Face's
    hidden state i is block i's input) and the block's attention weights."""
    if "hidden_states" in record:
        record["hidden_states"].append(x.data.copy())
    if "attentions" in record:
        with no_grad():       # c_attn again: the fused attention kept only its output
            qkv = block.attn.c_attn(block.ln_1(x))                         # (B, T, 3C)
        record["attentions"].append(attention_weights(qkv.data, block.attn.n_head))


class GenerateOutput:
    """What generate(return_dict_in_generate=True) returns, as Hugging Face's:
    ``.sequences`` (B, T + new) and ``.scores`` (a tuple of one (B, V) array per new token, or
    None). Also indexes by name or as the tuple of the fields that are set."""

    def __init__(self, sequences, scores=None):
        self.sequences = sequences
        self.scores = scores

    def to_tuple(self):
        return tuple(v for v in (self.sequences, self.scores) if v is not None)

    def __getitem__(self, index):
        if isinstance(index, str):
            return getattr(self, index)
        return self.to_tuple()[index]

    def __repr__(self):
        n = "None" if self.scores is None else f"{len(self.scores)} arrays"
        return f"GenerateOutput(sequences shape={self.sequences.shape}, scores={n})"


# ---------------------------------------------------------------------------------------------
# generation arguments: checked before any work, one clear message each


def _is_config(value):
    return isinstance(value, str) and value == "config"


def _is_real(value):
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def _check_token_id(value, name):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"generate: {name} must be a token id >= 0 or None, got {value!r}")
    return int(value)


def _check_eos(value):
    """None, an id or a list of ids -> a list of ids (empty: never stop early)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return [_check_token_id(v, "eos_token_id") for v in values if v is not None]


def _check_length(max_new_tokens, max_length, T0):
    for name, value in (("max_new_tokens", max_new_tokens), ("max_length", max_length)):
        if value is not None and (isinstance(value, bool)
                                  or not isinstance(value, (int, np.integer)) or value < 0):
            raise ValueError(f"generate: {name} must be an integer >= 0, got {value!r}")
    if max_new_tokens is None:
        return max(max_length - T0, 0) if max_length is not None else 20
    return int(max_new_tokens)


def _check_sampling(do_sample, temperature, top_k, top_p):
    """-> greedy (bool). NaN is rejected everywhere: a NaN temperature must not pass as 0."""
    if not _is_real(temperature) or not temperature >= 0 or not math.isfinite(temperature):
        raise ValueError(f"generate: temperature must be a finite number >= 0 (0: greedy), "
                         f"got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer))
                              or top_k < 1):
        raise ValueError(f"generate: top_k must be an integer >= 1 or None, got {top_k!r}")
    if top_p is not None and (not _is_real(top_p) or not 0.0 < top_p <= 1.0):
        raise ValueError(f"generate: top_p must be a number in (0, 1] or None, got {top_p!r}")
    return not do_sample or not temperature


def _left_padding(attention_mask, shape):
    """-> None when every position is a token (nothing to do), else each row's first token.

    Hugging Face's decoder-only models pad on the left: a row is zeros, then ones.
        [[0, 0, 1, 1], [1, 1, 1, 1]] -> [2, 0]
    """
    if attention_mask is None:
        return None
    if hasattr(attention_mask, "numpy") and not isinstance(attention_mask, np.ndarray):
        attention_mask = attention_mask.numpy()
    mask = np.asarray(attention_mask)
    if mask.ndim == 1:
        mask = mask[None, :]
    if mask.shape != shape:
        raise ValueError(f"generate: attention_mask has shape {mask.shape}, expected {shape} "
                         "like input_ids")
    if mask.dtype.kind not in "biuf" or not np.isin(mask, (0, 1)).all():
        raise ValueError("generate: attention_mask must hold only 0 (padding) and 1 (token)")
    mask = mask.astype(bool)
    if mask.all():
        return None
    starts = (~mask).sum(axis=1)
    if (starts == shape[1]).any():
        row = int(np.argmax(starts == shape[1]))
        raise ValueError(f"generate: attention_mask row {row} has no token (all zeros)")
    left_padded = np.arange(shape[1])[None, :] >= starts[:, None]
    if (left_padded != mask).any():
        row = int(np.argmax((left_padded != mask).any(axis=1)))
        raise ValueError(f"generate: attention_mask row {row} is not left padding (zeros, then "
                         "ones); pad decoder-only prompts on the left (tokenizer.padding_side = "
                         "'left')")
    return starts.tolist()


# ---------------------------------------------------------------------------------------------
# choosing the next token


def warp_logits(logits, temperature=1.0, top_k=None, top_p=None):
    """logits (B, V) -> the scores sampling draws from: float64 (B, V), filtered tokens -inf.

    Divide by temperature, keep the top_k largest, then keep the smallest set of tokens whose
    probabilities add up to top_p (always at least one). softmax of the result is the
    distribution sample_next draws from; generate(output_scores=True) returns it.
        [2., 1., 0.] with top_k=2 -> [2., 1., -inf]
    """
    z = logits.astype(np.float64) / float(temperature)
    V = z.shape[-1]
    if top_k is not None and top_k < V:
        kth = np.partition(z, V - top_k, axis=-1)[:, V - top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    if top_p is not None and top_p < 1.0:
        p = _softmax64(z)
        order = np.argsort(-p, axis=-1, kind="stable")
        sorted_p = np.take_along_axis(p, order, axis=-1)
        before = np.cumsum(sorted_p, axis=-1) - sorted_p      # mass of strictly likelier tokens
        drop_sorted = before >= top_p                          # the first token is never dropped
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        z = np.where(drop, -np.inf, z)
    return z


def _softmax64(z):
    p = np.exp(z - z.max(axis=-1, keepdims=True))   # subtract the max: exp overflows
    return p / p.sum(axis=-1, keepdims=True)



def _sampling_rng(seed):
    """seed -> its own generator, reproducible alone; None -> the global one (manual_seed)."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise ValueError(f"generate: seed must be an integer >= 0 or None, got {seed!r}")
    return np.random.default_rng(seed) if seed is not None else generator()


def _decode(step, pick, max_new_tokens, B, eos, pad, streamer, output_scores):
    """The decoding loop: logits -> next ids, appended until max_new_tokens or every row has
    produced an eos id (a finished row is padded with pad). step(None) runs the prompt,
    step(ids) one more token; pick(logits) samples. -> ([(B, 1) columns], [scores])."""
    new_columns, scores = [], []
    done = np.zeros(B, dtype=bool)
    logits = step(None) if max_new_tokens else None                        # (B, V)
    for i in range(max_new_tokens):
        next_ids, z = pick(logits)
        if output_scores:
            scores.append(z.astype(np.float32))
        if eos:
            next_ids = np.where(done, pad, next_ids)
            done |= np.isin(next_ids, eos)
        new_columns.append(next_ids[:, None])
        if streamer is not None:
            (streamer.put if hasattr(streamer, "put") else streamer)(next_ids)
        if (eos and done.all()) or i + 1 == max_new_tokens:
            break
        logits = step(next_ids)
    return new_columns, scores

def sample_next(logits, greedy, temperature=1.0, top_k=None, top_p=None, rng=None):
    """Pick one token per row from logits (B, V).

    greedy: argmax. Otherwise draw from softmax(warp_logits(logits, temperature, top_k, top_p)).
    """
    if greedy:
        return logits.argmax(axis=-1).astype(np.int64)
    p = _softmax64(warp_logits(logits, temperature, top_k, top_p))
    rng = rng if rng is not None else generator()
    u = rng.random((p.shape[0], 1))
    choice = (np.cumsum(p, axis=-1) < u).sum(axis=-1)
    return np.minimum(choice, p.shape[-1] - 1).astype(np.int64)
