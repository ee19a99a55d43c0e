"""``python -m eval.target_spread``: the command line of `damdjax.eval.target_spread`."""
import sys

from damdjax.eval.target_spread import main

if __name__ == "__main__":
    sys.exit(main())
