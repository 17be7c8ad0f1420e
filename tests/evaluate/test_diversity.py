"""The diversity sweep: knob 0 reproduces the plain ranking's metrics; more knob, more
intra-list diversity."""

from __future__ import annotations

import numpy as np

from directrec.data.split import leave_one_out
from directrec.evaluate.diversity import diversity_sweep
from directrec.evaluate.protocol import evaluate
from directrec.models import create


def test_sweep_matches_plain_metrics_at_zero_and_diversifies(planted_embedded):
    ds = planted_embedded
    fit, seen, targets = leave_one_out(ds.interactions).stage("test")
    model = create("ease", {"l2": 50.0}).fit(fit)
    plain = evaluate(model, fit, targets, (10,), seen=seen).metrics
    sweep = diversity_sweep(
        model, fit, seen, targets, ds.catalog.embeddings, [0.0, 0.5, 0.9], max_users=None
    )
    assert sweep[0]["users"] == len(targets)
    assert np.isclose(sweep[0]["ndcg@10"], plain["ndcg@10"], atol=1e-5)
    assert np.isclose(sweep[0]["recall@10"], plain["recall@10"], atol=1e-5)
    ild = [p["ild@10"] for p in sweep]
    assert ild[0] < ild[1] < ild[2]
    assert sweep[2]["ndcg@10"] <= sweep[0]["ndcg@10"]
