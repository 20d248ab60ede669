"""`python -m tinyroots.evaluate`: score a fine-tuned checkpoint on a data file.

    python -m tinyroots.evaluate --checkpoint out-ft --task classify --data val.jsonl

Tasks: classify, chat, translate, lm. The work is finetune/evaluate.py; the metrics are
metrics.py.
"""

import sys

from .finetune.evaluate import evaluate_checkpoint


def main(argv=None):
    return evaluate_checkpoint(argv)


if __name__ == "__main__":
    sys.exit(main())
