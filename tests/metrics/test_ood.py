import numpy as np
import pytest
import torch

from vipann.metrics import ood_aupr, ood_auroc

skm = pytest.importorskip("sklearn.metrics")


def _scores(seed=0, ties=False):
    g = torch.Generator().manual_seed(seed)
    s_id = torch.rand(300, generator=g, dtype=torch.float64)
    s_ood = torch.rand(120, generator=g, dtype=torch.float64) * 0.8 + 0.3
    if ties:
        s_id, s_ood = (s_id * 5).round() / 5, (s_ood * 5).round() / 5
    return s_id, s_ood


@pytest.mark.parametrize("ties", [False, True])
def test_matches_sklearn_on_the_concatenation(ties):
    s_id, s_ood = _scores(ties=ties)
    scores = np.concatenate([s_id.numpy(), s_ood.numpy()])
    is_ood = np.r_[np.zeros(300), np.ones(120)]
    assert ood_auroc(s_id, s_ood).item() == pytest.approx(skm.roc_auc_score(is_ood, scores), abs=1e-12)
    aupr_out = skm.average_precision_score(is_ood, scores)
    aupr_in = skm.average_precision_score(1 - is_ood, -scores)
    assert ood_aupr(s_id, s_ood).item() == pytest.approx(aupr_out, abs=1e-12)
    assert ood_aupr(s_id, s_ood, positive="id").item() == pytest.approx(aupr_in, abs=1e-12)


def test_perfect_and_useless_separation():
    s_id, s_ood = torch.zeros(10), torch.ones(5)
    assert ood_auroc(s_id, s_ood).item() == 1.0
    assert ood_aupr(s_id, s_ood).item() == 1.0
    assert ood_auroc(torch.ones(10), torch.ones(5)).item() == 0.5


def test_mixed_dtypes():
    assert ood_auroc(torch.zeros(3), torch.ones(2, dtype=torch.float64)).item() == 1.0


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\(N,\)"):
        ood_auroc(torch.rand(3, 2), torch.rand(3))
    with pytest.raises(ValueError, match="non-empty"):
        ood_auroc(torch.rand(3), torch.rand(0))
    with pytest.raises(ValueError, match="NaN"):
        ood_aupr(torch.tensor([float("nan")]), torch.rand(3))
    with pytest.raises(ValueError, match="positive"):
        ood_aupr(torch.rand(3), torch.rand(3), positive="both")
