"""CI check of the built bundle (dist/ctviewer): no training framework travelled with it.

The application runs its model with ONNX Runtime; TensorFlow, Keras, JAX, PyTorch and the
libraries only they use are training tools.  Exits 1 and names what it found.
"""

from __future__ import annotations

import sys
from pathlib import Path

FORBIDDEN = ("tensorflow", "keras", "jax", "jaxlib", "torch", "tf2onnx", "tensorboard", "libtensorflow")


def main(root: str = "dist/ctviewer") -> int:
    base = Path(root)
    if not base.is_dir():
        print(f"check_bundle: no bundle at {base}", file=sys.stderr)
        return 1
    found = sorted({str(p.relative_to(base)).split("/")[0] + "/" + p.name
                    for p in base.rglob("*")
                    if any(part.lower().startswith(FORBIDDEN) for part in p.relative_to(base).parts)})
    size = sum(p.stat().st_size for p in base.rglob("*") if p.is_file())
    if found:
        print(f"check_bundle: training frameworks in the bundle: {', '.join(found[:20])}", file=sys.stderr)
        return 1
    print(f"check_bundle: no training framework in {base} ({size / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
