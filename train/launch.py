"""``python -m train.launch``: the command line of `damdjax.train.launch`."""
import sys

from damdjax.train.launch import main

if __name__ == "__main__":
    sys.exit(main())
