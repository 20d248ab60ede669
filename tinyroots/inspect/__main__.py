"""`python -m tinyroots.inspect SUBCOMMAND ...` (see tinyroots/inspect/cli.py)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
