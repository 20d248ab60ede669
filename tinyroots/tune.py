"""`python -m tinyroots.tune TASK`: search fine-tuning hyperparameters, keep the best.

The search itself is tinyroots/finetune/tune.py; this module is only its command line.
"""

import sys

from .finetune.tune import main

if __name__ == "__main__":
    sys.exit(main())
