"""`python -m tinyroots.finetune TASK ...` (see tinyroots/finetune/__init__.py)."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
