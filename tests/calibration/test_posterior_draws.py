"""Laplace and IVON models take predict's ``draws=`` like every Monte-Carlo model (and ignore it: no Flipout)."""

import pytest
import torch

import vipann
from vipann.calibration import attach_ivon_posterior, fit_laplace

X = 0.1 * torch.randn(3, 16000, generator=torch.Generator().manual_seed(0))


def _models():
    torch.manual_seed(0)
    det = vipann.create_model("det-tiny", num_classes=3).eval()
    laplace = fit_laplace(det, (X, torch.tensor([0, 1, 2])), subset="last_layer", hessian="kron")
    net = vipann.create_model("det-tiny", num_classes=3).eval()
    names = ["fc_audioset.weight", "fc_audioset.bias"]
    ivon = attach_ivon_posterior(net, names, 50.0, ess=100.0, weight_decay=1e-4)
    return {"laplace": laplace, "ivon": ivon}


@pytest.mark.parametrize("name", ["laplace", "ivon"])
def test_draws_is_accepted_checked_and_does_not_change_the_samples(name):
    model = _models()[name]
    plain = vipann.predict(model, X, num_samples=4, generator=3).probs
    for draws in ("independent", "shared"):
        torch.testing.assert_close(vipann.predict(model, X, num_samples=4, generator=3, draws=draws).probs, plain)
    with pytest.raises(ValueError, match="draws"):
        vipann.predict(model, X, num_samples=4, draws="per-layer")
    ensemble = vipann.Ensemble([model, model])
    assert vipann.predict(ensemble, X, num_samples=2, draws="shared", generator=0).probs.shape == (4, 3, 3)
