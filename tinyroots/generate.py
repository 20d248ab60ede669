"""`python -m tinyroots.generate`: continue a prompt with a trained model, streaming the text.

    python -m tinyroots.generate --checkpoint out --prompt "ROMEO:"
    python -m tinyroots.generate --checkpoint out --prompt-file draft.txt --max-new-tokens 300
    echo "Once upon a time" | python -m tinyroots.generate --checkpoint out --prompt -
    python -m tinyroots.generate --checkpoint out --temperature 0      # greedy
    python -m tinyroots.generate --checkpoint out --num-samples 3 --seed 1

``--checkpoint`` takes a run directory written by ``python -m tinyroots.train`` (its ``best/``
weights are used, or ``last/`` with ``--which last``) or any model directory with config.json,
model.safetensors and tokenizer files (including Hugging Face GPT-2 directories).
"""

import sys
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import kernels
from .checkpoint import load_model_and_tokenizer
from .config import ConfigError, check_common, parse_config
from .tokenizer import TextStreamer


@dataclass
class GenerateConfig:
    """Sampling settings for `python -m tinyroots.generate`."""

    checkpoint: str = "out"            # run directory or model directory
    which: str = "best"                # in a run directory: best or last
    prompt: str = ""                   # the text to continue; '-' reads standard input
    prompt_file: str = ""              # read the prompt from this file (a draft to continue)
    max_new_tokens: int = 200          # tokens to generate per sample
    temperature: float = 0.8           # sampling temperature; 0 means greedy
    top_k: Optional[int] = 50          # sample among the k most likely tokens; none: all
    top_p: Optional[float] = None      # nucleus sampling: smallest set with this probability
    seed: Optional[int] = None         # makes sampling reproducible
    num_samples: int = 1               # independent continuations
    use_cache: bool = True             # KV cache (same tokens, much faster)
    stream: bool = True                # print tokens as they are produced
    stop_at_eos: bool = True           # stop a sample at <|endoftext|>
    task: str = "complete"             # complete, or translate (a translate-tuned model)
    num_threads: int = 0               # kernel threads; 0: default
    dtype: str = "fp32"                # bf16: weights kept in bf16, half the bytes per token

    def validate(self):
        check_common(self)               # seed >= 0, num_threads within the cap, dtype
        if self.which not in ("best", "last"):
            raise ConfigError(f"GenerateConfig: 'which' must be best or last, got {self.which!r}")
        if self.max_new_tokens < 0 or self.num_samples < 1:
            raise ConfigError("GenerateConfig: max_new_tokens must be >= 0 and num_samples >= 1")
        if self.temperature < 0:
            raise ConfigError(f"GenerateConfig: 'temperature' must be >= 0, got "
                              f"{self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"GenerateConfig: 'top_k' must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"GenerateConfig: 'top_p' must be in (0, 1], got {self.top_p}")
        if self.task not in ("complete", "translate"):
            raise ConfigError(f"GenerateConfig: 'task' must be complete or translate, got "
                              f"{self.task!r}")


def read_prompt(cfg):
    if cfg.prompt_file:
        try:
            with open(cfg.prompt_file, encoding="utf-8") as f:
                return f.read()
        except OSError as exc:
            raise ConfigError(f"--prompt-file {cfg.prompt_file}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"--prompt-file {cfg.prompt_file}: not UTF-8 text (byte "
                              f"{exc.object[exc.start]:#04x} at offset {exc.start})") from None
    if cfg.prompt == "-":
        return sys.stdin.read()
    return cfg.prompt


def format_prompt(cfg, tokenizer, text):
    """The prompt ids, wrapped in the translation template for --task translate."""
    if cfg.task == "translate":
        from .finetune import translation_prompt
        return translation_prompt(tokenizer, text)
    ids = tokenizer.encode(text) if text else []
    if not ids:
        eot = getattr(tokenizer, "eot_token_id", None)
        ids = [eot if eot is not None else 0]
    return ids


def generate_text(model, tokenizer, cfg, prompt_ids, out=sys.stdout, prefix=""):
    """Yield each sample's generated text (streaming it to ``out`` when cfg.stream).

    With several samples each starts with a ``--- sample i ---`` line; ``prefix`` (the prompt,
    when continuing a draft) is written before each streamed sample, so every one reads whole.
    """
    block = model.config.block_size
    if len(prompt_ids) > block:
        print(f"note: the prompt has {len(prompt_ids)} tokens; only the last {block} fit the "
              "model's context", file=sys.stderr)
    eos = getattr(tokenizer, "eot_token_id", None) if cfg.stop_at_eos else None
    for i in range(cfg.num_samples):
        seed = None if cfg.seed is None else cfg.seed + i
        streamer = TextStreamer(tokenizer, out, skip_ids=() if eos is None else (eos,)) \
            if cfg.stream else None
        if cfg.stream:
            out.write((f"--- sample {i + 1} ---\n" if cfg.num_samples > 1 else "") + prefix)
        ids = model.generate(np.asarray([prompt_ids], dtype=np.int64),
                             max_new_tokens=cfg.max_new_tokens,
                             do_sample=cfg.temperature > 0, temperature=cfg.temperature,
                             top_k=cfg.top_k, top_p=cfg.top_p, seed=seed, eos_token_id=eos,
                             use_cache=cfg.use_cache, streamer=streamer)
        new = [t for t in ids[0, len(prompt_ids):].tolist() if t != eos]
        yield tokenizer.decode(new)


def main(argv=None):
    cfg = parse_config(GenerateConfig, argv, prog="python -m tinyroots.generate",
                       description=__doc__)
    if cfg.num_threads:
        kernels.set_num_threads(cfg.num_threads)
    try:
        model, tokenizer, path = load_model_and_tokenizer(cfg.checkpoint, cfg.which)
        if cfg.dtype == "bf16":
            model.bf16_weights()
        text = read_prompt(cfg)
        prompt_ids = format_prompt(cfg, tokenizer, text)
    except (OSError, ValueError) as exc:
        print(f"python -m tinyroots.generate: error: {exc}", file=sys.stderr)
        return 2
    print(f"[{path}: {model.num_parameters() / 1e6:.2f}M parameters, "
          f"{len(prompt_ids)} prompt tokens]", file=sys.stderr)
    prefix = text if cfg.task == "complete" else ""
    for i, sample in enumerate(generate_text(model, tokenizer, cfg, prompt_ids, prefix=prefix)):
        if not cfg.stream:
            header = f"--- sample {i + 1} ---\n" if cfg.num_samples > 1 else ""
            print(header + prefix + sample)
    return 0


if __name__ == "__main__":
    sys.exit(main())
