"""CI: is this PNG a picture of the application, not a blank or black frame?

    python .ci/check_screenshot.py PICTURE.png [MIN_WIDTH MIN_HEIGHT]

Checks that the file decodes, has at least the given size, is not one flat colour (a
window that never drew, or an X screen with nothing on it), and that a good part of it
carries detail (the slice, the panels' text).  Exit 0 or 1 with the reason.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np


def main(path: str, min_w: int = 640, min_h: int = 400) -> int:
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if img is None:
        print(f"check_screenshot: {path}: not a readable image", file=sys.stderr)
        return 1
    h, w = img.shape
    if w < min_w or h < min_h:
        print(f"check_screenshot: {path}: {w}x{h}, smaller than {min_w}x{min_h}", file=sys.stderr)
        return 1
    std = float(img.std())
    tiles = [img[y:y + 64, x:x + 64] for y in range(0, h - 63, 64) for x in range(0, w - 63, 64)]
    busy = float(np.mean([t.std() > 8 for t in tiles]))
    if std < 10 or busy < 0.1:
        print(f"check_screenshot: {path}: looks blank (grey-level sd {std:.1f}, {busy:.0%} of tiles with detail)",
              file=sys.stderr)
        return 1
    print(f"check_screenshot: {path}: {w}x{h}, grey-level sd {std:.1f}, {busy:.0%} of tiles with detail")
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(args[0], *(int(a) for a in args[1:3])))
