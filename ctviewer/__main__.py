"""``python -m ctviewer`` and the PyInstaller bundle's entry point."""

import sys

from ctviewer.cli import main

if __name__ == "__main__":
    sys.exit(main())
