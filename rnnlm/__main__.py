"""`python -m rnnlm ...` and the `rnnlm` console script."""

import sys

from rnnlm.host_memory import reexec_with_huge_pages


def entry() -> None:
    reexec_with_huge_pages()  # before the command imports JAX: the exec then costs ~50 ms
    from rnnlm.cli import main
    sys.exit(main())


if __name__ == "__main__":
    entry()
