"""``python -m train.sweep``: the command line of :mod:`damdjax.train.sweep`."""
import sys

from damdjax.train.sweep import main

if __name__ == "__main__":
    sys.exit(main())
