"""``python -m eval.compare``: the command line of `damdjax.eval.compare`."""
from damdjax.eval.compare import main

if __name__ == "__main__":
    main()
