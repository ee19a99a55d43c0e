"""``python -m eval.tune``: the command line of `damdjax.eval.tune`."""
from damdjax.eval.tune import main

if __name__ == "__main__":
    main()
