"""``python -m train.dqn``: the command line of `damdjax.train.dqn`."""
import sys

from damdjax.train.dqn import main

if __name__ == "__main__":
    sys.exit(main())
