"""Which near-duplicate finder finds more true copies with fewer false alarms.

Every photo of fridgeObjects (and a seeded sample of ELPV cells) gets three copies made here: a
JPEG re-encoded at quality 30, a half-size resize, a 10 % crop. Each finder links the originals
and the copies into groups; a copy is *found* when it shares a group with its original, and a
*false alarm* is a pair of different originals in one group. Finders: perceptual hash (phash)
and difference hash (dhash) within 0-4 bits, and the cosine similarity of the frozen
EfficientNet-Lite0 features (0.90-0.98). Writes bench/results/near_duplicates.json.

    python bench/bench_near_duplicates.py [--elpv 300]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRIDGE = Path(os.environ.get("SIGCLASS_FRIDGE", ROOT.parent / "shared" / "datasets" / "fridgeObjects"))
COPIES = ("jpeg_q30", "half_size", "crop_10pct")


def make_copies(originals: list[Path], folder: Path) -> list[tuple[Path, int, str]]:
    """``(path, index of the original, kind)`` of the originals and their three copies."""
    from PIL import Image

    items = [(p, i, "original") for i, p in enumerate(originals)]
    for i, path in enumerate(originals):
        image = Image.open(path).convert("RGB")
        w, h = image.size
        copies = {"jpeg_q30": image, "half_size": image.resize((max(8, w // 2), max(8, h // 2))),
                  "crop_10pct": image.crop((w // 20, h // 20, w - w // 20, h - h // 20))}
        for kind, copy in copies.items():
            target = folder / f"{i:05d}_{kind}.jpg"
            copy.save(target, quality=30 if kind == "jpeg_q30" else 90)
            items.append((target, i, kind))
    return items


def score(groups: list[list[int]], items) -> dict:
    group_of = {m: g for g, members in enumerate(groups) for m in members}
    originals = [k for k, (_, _, kind) in enumerate(items) if kind == "original"]
    out = {}
    for kind in COPIES:
        copies = [k for k, (_, _, c) in enumerate(items) if c == kind]
        found = sum(k in group_of and group_of[k] == group_of.get(originals[items[k][1]], -1) for k in copies)
        out[f"found_{kind}"] = found / len(copies)
    false_pairs = 0
    for members in groups:
        sources = [items[m][1] for m in members]
        false_pairs += sum(a != b for a, b in combinations(sorted(set(sources)), 2))
    out["false_alarm_pairs"] = false_pairs
    out["originals_in_false_groups"] = len({items[m][1] for members in groups for m in members
                                            if len({items[x][1] for x in members}) > 1})
    out["largest_group"] = max((len(g) for g in groups), default=0)
    return out


def run(name: str, originals: list[Path]) -> list[dict]:
    from sigclass.data.leakage import image_hashes, link_groups
    from sigclass.training.image_featurizer import Featurizer

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        items = make_copies(originals, Path(tmp))
        paths = [p for p, _, _ in items]
        for method in ("phash", "dhash"):
            started = time.perf_counter()
            bits = image_hashes(paths, method)
            seconds = time.perf_counter() - started
            for limit in (0, 1, 2, 3, 4):
                groups = link_groups(bits, "hamming", (limit + 0.5) / bits.shape[1])
                rows.append({"data": name, "finder": method, "threshold": limit,
                             "seconds": seconds, **score(groups, items)})
                print(rows[-1])
        started = time.perf_counter()
        from PIL import Image

        features = Featurizer("efficientnet_lite0").fit().transform(
            [Image.open(p).convert("RGB") for p in paths])
        seconds = time.perf_counter() - started
        for similarity in (0.90, 0.95, 0.98):
            groups = link_groups(np.asarray(features, dtype=np.float64), "cosine", 1.0 - similarity)
            rows.append({"data": name, "finder": "features_lite0_cosine", "threshold": similarity,
                         "seconds": seconds, **score(groups, items)})
            print(rows[-1])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elpv", type=int, default=300, help="ELPV cells to sample (0: none)")
    args = parser.parse_args()
    rows = run("fridgeObjects", sorted(FRIDGE.rglob("*.jpg")))
    if args.elpv:
        import elpv_dataset

        cells = sorted((Path(elpv_dataset.__file__).parent / "data" / "images").glob("*.png"))
        rng = np.random.default_rng(0)
        chosen = [cells[k] for k in sorted(rng.choice(len(cells), size=args.elpv, replace=False))]
        rows += run(f"ELPV ({args.elpv} cells)", chosen)
    out = ROOT / "bench" / "results" / "near_duplicates.json"
    out.write_text(json.dumps({"copies": list(COPIES), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
