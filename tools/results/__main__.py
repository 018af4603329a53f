"""``python -m tools.results OUTPUT_ROOT [--protocol ...] [--paper ...] [--plot]`` (see tools/results/cli.py)."""
import sys

from tools.results.cli import main

if __name__ == "__main__":
    sys.exit(main())
