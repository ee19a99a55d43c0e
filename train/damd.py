"""``python -m train.damd``: the command line of `damdjax.train.damd`."""
import sys

from damdjax.train.damd import main

if __name__ == "__main__":
    sys.exit(main())
