"""``python -m eval.optimal``: the command line of `damdjax.eval.optimal`."""
from damdjax.eval.optimal import main

if __name__ == "__main__":
    main()
