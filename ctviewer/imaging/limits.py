"""Limits that protect the application from hostile or absurd input files."""

MAX_FILE_BYTES = 1 << 30  # 1 GiB: no single CT object we accept is larger
MAX_PIXELS_PER_FRAME = 8192 * 8192
MAX_TOTAL_PIXELS = 2048 * 512 * 512  # all frames of one object together
