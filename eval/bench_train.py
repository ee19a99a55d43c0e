"""``python -m eval.bench_train``: the command line of `damdjax.eval.bench_train`."""
import sys

from damdjax.eval.bench_train import main

if __name__ == "__main__":
    sys.exit(main())
