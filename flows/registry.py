"""The registry's command line (list, show, promote, roll back) as `python -m flows.registry`: flows/cli/registry.py."""

import sys

from flows.cli.registry import main

if __name__ == "__main__":
    sys.exit(main())
