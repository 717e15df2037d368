"""``python -m magic_init``: the same as the ``magic_init`` command."""
from magic_init.entry import main

if __name__ == "__main__":
    main()
