"""`python -m rnnlm.bench ...`: the benchmark's command line (the same as `rnnlm bench ...`)."""

import sys

from rnnlm.fast.huge_pages import reexec_with_huge_pages

if __name__ == "__main__":
    reexec_with_huge_pages()  # as `rnnlm bench` does: every implementation measured in the same process setting
    from rnnlm.bench.run import main
    from rnnlm.errors import UserError
    try:
        sys.exit(main())
    except UserError as e:
        print(f"rnnlm bench: error: {e}", file=sys.stderr)
        sys.exit(2)
