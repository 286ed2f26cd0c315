"""Label-error audit on fridgeObjects with 10 % of labels flipped on purpose (seeded).

Writes bench/results/audit.json: precision and recall of the flipped items among the suspects.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRIDGE = Path(os.environ.get("SIGCLASS_FRIDGE", ROOT.parent / "shared" / "datasets" / "fridgeObjects"))


def main() -> None:
    from sigclass.audit import audit_labels
    from sigclass.data.images import ImageDataset

    rows = []
    for seed in (0, 1, 2):
        data = ImageDataset.from_folder(FRIDGE)
        rng = np.random.default_rng(seed)
        flipped = set(rng.choice(len(data), size=len(data) // 10, replace=False).tolist())
        items = list(data.items)
        for i in flipped:
            others = [c for c in data.classes if c != items[i].label]
            items[i] = type(items[i])(items[i].key, items[i].path, str(rng.choice(others)), items[i].sha256)
        data.items = items
        started = time.perf_counter()
        suspects = {issue["id"] for issue in audit_labels(data)}
        truth = {data.ids[i] for i in flipped}
        hits = len(suspects & truth)
        rows.append({"seed": seed, "n_items": len(data), "n_flipped": len(truth),
                     "n_suspects": len(suspects), "precision": hits / max(1, len(suspects)),
                     "recall": hits / len(truth), "seconds": time.perf_counter() - started})
        print(rows[-1])
    result = {"dataset": "fridgeObjects", "features": "efficientnet_lite2 (the default headless backbone), stage pooling, cached; logistic OOF",
              "rows": rows, "mean_precision": float(np.mean([r["precision"] for r in rows])),
              "mean_recall": float(np.mean([r["recall"] for r in rows])), "load_average": os.getloadavg()}
    out = ROOT / "bench" / "results" / "audit.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("mean_precision", "mean_recall")}))


if __name__ == "__main__":
    main()
