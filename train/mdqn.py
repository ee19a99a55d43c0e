"""``python -m train.mdqn``: the command line of `damdjax.train.mdqn`."""
import sys

from damdjax.train.mdqn import main

if __name__ == "__main__":
    sys.exit(main())
