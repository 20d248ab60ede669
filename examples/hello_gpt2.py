"""The seed article's Hugging Face GPT-2 example, running on tinyroots.

Only the import line differs from the transformers version (and return_tensors="np"):

    from transformers import GPT2LMHeadModel, GPT2Tokenizer      # before
    from tinyroots import GPT2LMHeadModel, GPT2Tokenizer         # after

Usage:
    python examples/hello_gpt2.py                 # 'gpt2' from the local Hugging Face cache
    python examples/hello_gpt2.py path/to/gpt2    # a directory with config.json,
                                                  # model.safetensors, vocab.json, merges.txt
    python examples/hello_gpt2.py --demo          # no GPT-2 at hand: build a small random
                                                  # GPT-2 + tokenizer directory and use that
tinyroots never downloads; if 'gpt2' is not in the cache, the error says where to put it.
"""

import os
import sys
import tempfile

from tinyroots import GPT2LMHeadModel, GPT2Tokenizer


def make_demo_dir():
    """A GPT-2-format directory: a BPE tokenizer trained on Shakespeare and a random model."""
    import tinyroots as tr
    path = os.path.join(tempfile.gettempdir(), "tinyroots-hello-gpt2")
    corpus = os.path.join(os.path.dirname(tr.__file__), "assets", "tinyshakespeare.txt")
    tok = tr.Tokenizer.train(corpus, vocab_size=2048)
    tr.manual_seed(0)
    model = tr.GPT(tr.GPTConfig(n_layer=4, n_head=4, n_embd=128, vocab_size=tok.vocab_size,
                                block_size=256, bos_token_id=tok.eot_token_id,
                                eos_token_id=tok.eot_token_id))
    model.save_pretrained(path, tokenizer=tok)
    return path


def main():
    arg = sys.argv[1] if len(sys.argv) > 1 else "gpt2"
    name = make_demo_dir() if arg == "--demo" else arg

    # -- the article's example, unchanged but for the import and return_tensors --------------
    try:
        tokenizer = GPT2Tokenizer.from_pretrained(name)
        model = GPT2LMHeadModel.from_pretrained(name)
    except (FileNotFoundError, ValueError) as exc:
        sys.exit(f"{exc}\n(or run `python examples/hello_gpt2.py --demo` to try it on a small "
                 "random GPT-2 built on the spot)")
    input_ids = tokenizer.encode("Hello", return_tensors="np")
    output = model(input_ids, labels=input_ids)
    loss, logits = output[:2]
    output = model.generate(input_ids)
    text = tokenizer.decode(output[0], skip_special_tokens=True)
    # ----------------------------------------------------------------------------------------

    print(f"model:     {name}")
    print(f"input_ids: {input_ids.tolist()}")
    print(f"loss:      {float(loss):.4f}")
    print(f"logits:    shape {logits.shape}")
    print(f"generated: {text!r}")


if __name__ == "__main__":
    main()
