"""``python -m eval.figures``: the command line of :mod:`damdjax.eval.figures`."""
import sys

from damdjax.eval.figures import main

if __name__ == "__main__":
    sys.exit(main())
