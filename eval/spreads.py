"""``python -m eval.spreads``: the command line of `damdjax.eval.spreads`."""
import sys

from damdjax.eval.spreads import main

if __name__ == "__main__":
    sys.exit(main())
