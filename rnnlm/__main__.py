"""`python -m rnnlm ...` and the `rnnlm` console script."""

import sys

from rnnlm.fast.huge_pages import COMMANDS, reexec_with_huge_pages


def entry() -> None:
    if sys.argv[1:2] and sys.argv[1] in COMMANDS:  # commands that train or measure
        reexec_with_huge_pages()  # before the command imports JAX: the exec then costs ~50 ms
    from rnnlm.cli import main
    sys.exit(main())


if __name__ == "__main__":
    entry()
