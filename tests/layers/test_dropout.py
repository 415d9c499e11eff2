import pytest
import torch

from vipann.layers import MCDropout, mc_sampling


def test_identity_in_eval_active_in_train_and_mc():
    layer = MCDropout(0.5)
    x = torch.ones(1000)
    assert torch.equal(layer.eval()(x), x)
    with mc_sampling(layer):
        y = layer(x)
    assert 0.3 < (y == 0).float().mean() < 0.7
    assert set(y.unique().tolist()) <= {0.0, 2.0}  # inverted dropout scaling
    assert (layer.train()(x) == 0).any()


def test_generator_reproducible_and_p_validated():
    layer = MCDropout(0.3).eval()
    x = torch.ones(50)
    outs = []
    for _ in range(2):
        with mc_sampling(layer, generator=torch.Generator().manual_seed(0)):
            outs.append(layer(x))
    assert torch.equal(outs[0], outs[1])
    with pytest.raises(ValueError, match="dropout probability"):
        MCDropout(1.0)
