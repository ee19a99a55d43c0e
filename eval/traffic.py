"""``python -m eval.traffic``: the command line of `damdjax.eval.traffic`."""
import sys

from damdjax.eval.traffic import main

if __name__ == "__main__":
    sys.exit(main())
