"""`python -m app.cli ...`: the same as the `adapt-distill` console script."""

import sys

from app.cli.parser import main

if __name__ == "__main__":
    sys.exit(main())
