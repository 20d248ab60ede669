"""tinyroots: a readable large-language-model engine.

Raw text -> cleaned corpus -> byte-level BPE -> GPT-2 pre-training -> fine-tuning -> generation,
in NumPy with C++/OpenMP kernels for the hot loops. Start reading at tensor.py, then ops.py,
nn.py and model.py.

    import tinyroots as tr
    model = tr.GPT(tr.GPTConfig(n_layer=4, n_head=4, n_embd=128, vocab_size=65, block_size=64))
    out = model(ids, labels=ids)
    out.loss.backward()
"""

__version__ = "0.1.0"

from . import checkpoint, kernels, ops, optim  # noqa: F401  (re-exported modules)
from .kernels import get_num_threads, set_num_threads  # noqa: F401
from .model import GPT, GPTConfig, ModelOutput  # noqa: F401
from .nn import Module, Parameter  # noqa: F401
from .random import manual_seed  # noqa: F401
from .tensor import Tensor, no_grad, tensor  # noqa: F401
from .tokenizer import CharTokenizer, Tokenizer, load_tokenizer  # noqa: F401

# Hugging Face's names, so its GPT-2 examples run with only the import line changed:
#   from tinyroots import GPT2LMHeadModel, GPT2Tokenizer
GPT2LMHeadModel = GPT
GPT2Tokenizer = Tokenizer
GPT2TokenizerFast = Tokenizer

__all__ = [
    "CharTokenizer", "GPT", "GPT2LMHeadModel", "GPT2Tokenizer", "GPT2TokenizerFast", "GPTConfig",
    "ModelOutput", "Module", "Parameter", "Tensor", "Tokenizer", "get_num_threads", "kernels",
    "load_tokenizer", "manual_seed", "no_grad", "ops", "optim", "set_num_threads", "tensor",
]
