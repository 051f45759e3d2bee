"""SmartNoise's MST or AIM synthesizer, run in its own environment (``.venv-synth``; ``make
synth``).

smartnoise-synth pins opendp<0.15, pandas<3 and opacus<0.15, which the project's environment
cannot hold (opendp 0.16, pandas 3, Opacus 1.6). So this file imports nothing from trustflow:
``trustflow.privacy.synthetic`` runs it as a subprocess with one JSON request, and it answers with
a Parquet file of synthetic rows and one JSON line on stdout. The ledger stays in the main
process.

Request: {"input": parquet, "output": parquet, "synthesizer": "mst" | "aim", "epsilon": ε,
"delta": δ, "rows": n to sample,
"columns": [{"name", "kind": "categorical", "categories": [...]} |
            {"name", "kind": "numeric", "lower", "upper", "bins"}]}

Numbers are binned on their public bounds (no ε spent on bounds); a synthetic number is drawn
uniformly within its bin. Noise is OpenDP's (unseeded), as SmartNoise draws it.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
import warnings
from pathlib import Path


def main() -> None:
    request = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    warnings.filterwarnings("ignore")  # library chatter; the answer is the JSON line
    import numpy as np
    import pandas as pd
    from snsynth.aim import AIMSynthesizer
    from snsynth.mst import MSTSynthesizer
    from snsynth.transform import BinTransformer, LabelTransformer
    from snsynth.transform.table import TableTransformer

    columns = request["columns"]
    frame = pd.read_parquet(request["input"], columns=[c["name"] for c in columns])
    table = TableTransformer(
        [
            BinTransformer(bins=c["bins"], lower=c["lower"], upper=c["upper"])
            if c["kind"] == "numeric"
            else LabelTransformer(nullable=False)
            for c in columns
        ]
    )
    # The domain comes from the schema, never from the rows: fitted on public values only, so
    # every declared category can be drawn and which ones the rows hold is not revealed.
    size = max([len(c.get("categories", [])) for c in columns] + [2])
    public = pd.DataFrame(
        {
            c["name"]: [
                c["categories"][i % len(c["categories"])]
                if c["kind"] == "categorical"
                else (c["lower"], c["upper"])[i % 2]
                for i in range(size)
            ]
            for c in columns
        }
    )
    table.fit(public, epsilon=0.0)
    started = time.perf_counter()
    kind = AIMSynthesizer if request["synthesizer"] == "aim" else MSTSynthesizer
    synthesizer = kind(epsilon=request["epsilon"], delta=request["delta"])
    synthesizer.fit(frame, transformer=table, preprocessor_eps=0.0)
    # Not synthesizer.sample(): smartnoise-synth 1.0.8 calls Private-PGM's synthetic_data() with
    # its default method="round", which in mbi 1.1.0 assigns each column by rank in row order,
    # so columns the model holds independent come out correlated (measured here: P(income |
    # occupation) 0.62-0.75 for occupations at 0.06-0.12 in the rows and in the model).
    # method="sample" draws every row from the model's conditionals.
    model = synthesizer.synthesizer.synthetic_data(rows=int(request["rows"]), method="sample")
    undo = getattr(synthesizer, "undo_compress_fn", None)  # MST compresses rare values; AIM not
    codes = (undo(model) if undo else model).df
    codes = codes[[f"col{i}" for i in range(len(columns))]]  # its own order is the model's
    rows = table.inverse_transform([tuple(row[1:]) for row in codes.itertuples()])
    seconds = time.perf_counter() - started
    synthetic = pd.DataFrame(rows, columns=[c["name"] for c in columns])
    # A bin comes back as its midpoint: spread it over the bin (post-processing).
    rng = np.random.default_rng(secrets.randbits(63))
    for c in columns:
        if c["kind"] == "numeric":
            half = (c["upper"] - c["lower"]) / c["bins"] / 2
            middle = synthetic[c["name"]].astype(float).to_numpy()
            spread = middle + rng.uniform(-half, half, len(middle))
            synthetic[c["name"]] = np.clip(spread, c["lower"], c["upper"])
    synthetic.to_parquet(request["output"], index=False)
    print(json.dumps({"rows": len(synthetic), "seconds": round(seconds, 2)}))


if __name__ == "__main__":
    main()
