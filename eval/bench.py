"""``python -m eval.bench``: the command line of `damdjax.eval.bench`."""
import sys

from damdjax.eval.bench import main

if __name__ == "__main__":
    sys.exit(main())
