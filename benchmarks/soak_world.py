"""The soak's simulated world: what arrives each night, the annotator, and the faults that touch the data.

Images come from ml.data.synthetic (the demo's shapes), one seed per night, so every batch is new and its ground
truth is known: an unlabeled pool image is named `<class>-<night>-<i>.png`, which the annotator reads as its label.
benchmarks/soak.py wires these to the real server, worker and S3 store.
"""

from __future__ import annotations

import csv
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ml.config.data import SyntheticConfig
from ml.data.synthetic import make_shapes_dataset
from ml.registry.store import ArtifactStore

CLASSES = ["circle", "square", "triangle", "cross"]
SIZE = 32


@dataclass(frozen=True)
class World:
    """The soak's folders: training data (data.root), the unlabeled pool, and the fixed test set."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def pool(self) -> Path:
        return self.root / "pool"

    @property
    def test(self) -> Path:
        return self.root / "test"

    def generate(self, name: str, seed: int, per_class: int) -> Path:
        """<root>/gen/<name>/<class>/<i>.png from the shapes generator (same seed -> same bytes)."""
        return make_shapes_dataset(
            self.root / "gen" / name, SyntheticConfig(classes=CLASSES, per_class=per_class, size=SIZE, seed=seed)
        )

    def start(self, per_class: int, test_per_class: int) -> None:
        """Night 0: the first training data and the test set the pipeline never sees (seeds far from the nights')."""
        shutil.copytree(self.generate("initial", 10_000, per_class), self.data)
        shutil.copytree(self.generate("test", 20_000, test_per_class), self.test)
        self.pool.mkdir()

    def arrive(self, night: int, per_class: int, drifted: bool = False) -> Path:
        """Tonight's unlabeled images into pool/night-<n>/ (drifted: darkened, low contrast); returns that folder."""
        out = self.pool / f"night-{night:02d}"
        out.mkdir()
        for cls_dir in sorted(self.generate(f"night-{night:02d}", night, per_class).iterdir()):
            for i, img in enumerate(sorted(cls_dir.iterdir())):
                pixels = np.asarray(Image.open(img).convert("RGB"), dtype=np.float32)
                if drifted:
                    pixels = pixels * 0.35 + 20
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(out / f"{cls_dir.name}-{night}-{i}.png")
        return out

    def corrupt_batch(self, night: int, n: int) -> list[Path]:
        """`n` files that end in .png but do not decode, merged into the training data (a bad labeled delivery)."""
        rng = np.random.default_rng(night)
        paths = []
        for i in range(n):
            path = self.data / CLASSES[i % len(CLASSES)] / f"corrupt-{night}-{i}.png"
            path.write_bytes(b"\x89PNG\r\n" + rng.bytes(200))
            paths.append(path)
        return paths

    def mislabelled_batch(self, night: int, per_class: int) -> list[Path]:
        """`per_class` fresh images per class merged into the training data under the next class's label."""
        paths = []
        for k, cls_dir in enumerate(sorted(self.generate(f"mislabel-{night}", 30_000 + night, per_class).iterdir())):
            wrong = CLASSES[(CLASSES.index(cls_dir.name) + 1) % len(CLASSES)]
            for img in sorted(cls_dir.iterdir()):
                paths.append(self.data / wrong / f"mislabel-{night}-{k}-{img.name}")
                shutil.copy(img, paths[-1])
        return paths

    def annotate(self, store: ArtifactStore, batch_key: str) -> int:
        """The simulated annotator: every image of the labeling batch's selection.csv moves from the pool into
        the training data under its true class (from its name); returns how many."""
        rows = list(csv.DictReader(io.StringIO(store.get_bytes(f"{batch_key}/selection.csv").decode())))
        for row in rows:
            src = Path(row["path"])
            cls = src.name.split("-")[0]
            shutil.move(src, self.data / cls / f"labeled-{src.name}")
        return len(rows)


def disk_mb(path: Path) -> float:
    """Bytes of every file under `path`, in MB (0 when it does not exist)."""
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6, 3) if path.exists() else 0.0
