"""DP-SGD against the same network trained without it, on the bundled Adult data, measured in
this run: the default candidates of ``privacy.mode: training`` (the DP logistic regression and
the MLP, their default params) trained by DP-SGD at each ε (δ = 1e-5, Opacus' PRV accountant),
and each trained again without DP (same params, same seed). The preprocessing here is the
ordinary one, so the comparison isolates DP-SGD. Target: at ε = 1, within 2 accuracy points of
the same network trained without DP, on the test split.

    .venv/bin/python benchmarks/dp_training.py [--epsilons 1] [--seed 42]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score

from trustflow.config import TabularConfig
from trustflow.data.sources import load_source
from trustflow.data.split import split_frame
from trustflow.data.validate import validate_frame
from trustflow.models.neural import NeuralClassifier
from trustflow.models.preprocess import features_and_target, fit_preprocessor
from trustflow.privacy.dpsgd import plan_dp_sgd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilons", default="1", help="comma-separated, e.g. 0.5,1,2,4,8")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    cfg = TabularConfig.model_validate({"privacy": {"mode": "training"}})
    schema = cfg.data.dataset
    frame, _ = validate_frame(load_source(cfg.data.source).frame, schema, "drop", "bundled")
    parts = split_frame(frame, schema.target.column, cfg.split)
    pre = fit_preprocessor(parts.train, schema)
    (xt, yt), (xv, yv), (xs, ys) = (
        features_and_target(p, schema) for p in (parts.train, parts.valid, parts.test)
    )
    xt, xv, xs = (np.asarray(pre.transform(x), dtype=np.float32) for x in (xt, xv, xs))
    training = cfg.privacy.training
    print(f"Adult: {len(yt):,} training rows, {len(ys):,} test rows; δ = {training.delta:g}")
    for candidate in cfg.candidates:
        kind = candidate.model_kind
        params = kind.validate(candidate.params).model_dump()

        def fit(plan=None, params=params, kind=kind):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            model = NeuralClassifier(kind.architecture, params, args.seed, "cpu")
            fit_args = {"dp": plan} if plan is not None else {}
            model.fit(xt, yt, valid=(xv, yv), **fit_args)
            p = model.predict_proba(xs)[:, 1]
            return accuracy_score(ys, p > 0.5), roc_auc_score(ys, p), time.perf_counter() - started

        plain = fit()
        print(
            f"{candidate.name} ({candidate.kind}) without DP: accuracy {plain[0]:.4f}, "
            f"ROC AUC {plain[1]:.4f}, {plain[2]:.1f} s"
        )
        for epsilon in (float(e) for e in args.epsilons.split(",")):
            plan = plan_dp_sgd(
                rows=len(yt),
                batch_size=int(params["batch_size"]),
                epochs=int(params["max_epochs"]),
                epsilon=epsilon,
                delta=training.delta,
                max_grad_norm=training.max_grad_norm,
                accountant=training.accountant,
            )
            private = fit(plan)
            gap = (plain[0] - private[0]) * 100
            verdict = "met" if gap <= 2 else "NOT met"
            print(
                f"  DP-SGD ε = {epsilon:g} (σ = {plan.noise_multiplier:.3f}): accuracy "
                f"{private[0]:.4f}, ROC AUC {private[1]:.4f}, {private[2]:.1f} s; "
                f"{gap:+.2f} accuracy points below without DP (target <= 2: {verdict})"
            )


if __name__ == "__main__":
    main()
