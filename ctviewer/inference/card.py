"""The model card: everything needed to rebuild, verify and honestly describe a model.

A model package is a folder holding ``model-card.json`` and the weights file it
names.  The card's ``sha256`` must match the weights before anything is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

CARD_NAME = "model-card.json"


class ModelError(Exception):
    """A model package that cannot be used (missing, tampered, unsupported)."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class ModelCard:
    name: str
    version: str
    architecture: dict
    preprocessing: dict
    classes: list[str]
    weights_file: str
    sha256: str
    positive_class: str = "COVID"
    threshold: float = 0.5
    temperature: float = 1.0
    date: str = ""
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    limitations: list[str] = field(default_factory=list)
    licence: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def positive_index(self) -> int:
        return self.classes.index(self.positive_class)

    @property
    def title(self) -> str:
        return f"{self.name} {self.version}"

    def unseen_sources(self) -> dict[str, float]:
        """ROC AUC per source the model never trained on (``metrics.leave_one_source_out``; a card
        of a model trained on every source names its leave-one-source-out folds there): what a
        user at another hospital can expect.  Empty when the card has no such measurement."""
        out = {}
        loso = (self.metrics or {}).get("leave_one_source_out")
        for source, m in (loso.items() if isinstance(loso, dict) else ()):
            auc = m.get("roc_auc") if isinstance(m, dict) else None
            if isinstance(auc, (int, float)):
                out[str(source)] = float(auc)
        return out

    def transfer_note(self) -> str:
        """One line for the window: the AUC at hospitals the model never trained on."""
        unseen = self.unseen_sources()
        if not unseen:
            return "Not measured at hospitals it never trained on."
        aucs = ", ".join(f"{auc:.2f} ({src})" for src, auc in unseen.items())
        verdict = " At chance there (0.5)." if max(unseen.values()) < 0.65 else ""
        return f"At hospitals it never trained on: AUC {aucs}.{verdict}"

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        extra = d.pop("extra")
        d.update(extra)
        return d

    def save(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / CARD_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def from_dict(cls, d: dict) -> "ModelCard":
        known = set(cls.__dataclass_fields__) - {"extra"}
        required = {"name", "version", "architecture", "preprocessing", "classes", "weights_file", "sha256"}
        missing = sorted(required - set(d))
        if missing:
            raise ModelError(f"model card lacks {', '.join(missing)}")
        card = cls(**{k: v for k, v in d.items() if k in known})
        card.extra = {k: v for k, v in d.items() if k not in known}
        if card.positive_class not in card.classes:
            raise ModelError(f"model card: positive class {card.positive_class!r} not in {card.classes}")
        if not card.temperature > 0:
            raise ModelError("model card: temperature must be positive")
        return card

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "ModelCard":
        path = Path(folder) / CARD_NAME
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"no {CARD_NAME} in {folder}") from None
        except (OSError, ValueError) as exc:
            raise ModelError(f"unreadable model card {path}: {exc}") from None
        if not isinstance(d, dict):
            raise ModelError(f"model card {path} is not a JSON object")
        return cls.from_dict(d)

    def weights_path(self, folder: str | os.PathLike) -> Path:
        name = Path(self.weights_file).name  # never follow paths out of the package
        return Path(folder) / name

    def verify(self, folder: str | os.PathLike) -> Path:
        """Check the weights' SHA-256 against the card; return the weights path."""
        path = self.weights_path(folder)
        if not path.is_file():
            raise ModelError(f"weights file {path.name} is missing from {folder}")
        actual = sha256_file(path)
        if actual != self.sha256:
            raise ModelError(
                f"weights file {path.name} does not match its model card "
                f"(SHA-256 {actual[:12]}…, expected {self.sha256[:12]}…): refusing to load it"
            )
        return path
