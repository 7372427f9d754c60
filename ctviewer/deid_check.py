"""``python -m ctviewer.deid_check --sources SRC... --outputs OUT...``: the de-identification
checker's public command, kept under its name; the code is ``ctviewer.privacy.check``."""

from ctviewer.privacy.check import main

if __name__ == "__main__":
    raise SystemExit(main())
