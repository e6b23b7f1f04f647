"""``python -m trusttrace``: the same command as ``trusttrace``."""

from trusttrace.cli import main

if __name__ == "__main__":
    main()
