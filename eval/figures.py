"""``python -m eval.figures``: the command line of `damdjax.eval.figures`."""
import sys

from damdjax import distributed

# --distributed: join the other processes before any import starts JAX's backend.
distributed.start_from_argv(sys.argv[1:])

from damdjax.eval.figures import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
