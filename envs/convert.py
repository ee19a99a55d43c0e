"""``python -m envs.convert``: the command line of `damdjax.envs.convert`."""
from damdjax.envs.convert import main

if __name__ == "__main__":
    main()
