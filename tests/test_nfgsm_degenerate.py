"""N-FGSM with its extras switched off against FGSM-RS.

N-FGSM (noise U(-k eps, k eps), one signed step of alpha, no projection to the eps-ball)
with k = 1 draws the same noise as FGSM-RS from the same random stream and takes the same
step; the one remaining difference is by design: FGSM-RS projects the result back to the
eps-ball, N-FGSM does not. Hence:

- for the same noise and gradient, FGSM-RS's example is N-FGSM's (k = 1) projected onto
  the eps-ball (the two clamps, to the ball and to the image box, commute: both intervals
  contain 0);
- when the ball holds the whole image box (linf eps = 1) the projection never binds and
  ``eae train`` gives bit-identical weights for ``--method fgsm_rs --fgsm-alpha A`` and
  ``--method n_fgsm --nfgsm-noise 1 --nfgsm-alpha A`` from the same seed;
- at a real eps (8/255) with alpha > 0 the projection binds and the two trainings differ.
"""
from __future__ import annotations

import pytest
import torch

from eae import load, train
from eae.methods.fgsm_rs import fgsm_rs_example
from eae.methods.n_fgsm import n_fgsm_example
from eae.models import create_model
from eae.threat import LinfBall


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("eps,alpha", [(8 / 255, 10 / 255), (8 / 255, 8 / 255), (4 / 255, 6 / 255)])
def test_fgsm_rs_example_is_the_projected_nfgsm_example(eps, alpha):
    torch.manual_seed(0)
    model = create_model("convnet_nobn").train()
    x, y = _data()
    threat = LinfBall(eps)
    torch.manual_seed(1)
    rs = fgsm_rs_example(model, x, y, threat, alpha)
    torch.manual_seed(1)
    nf = n_fgsm_example(model, x, y, threat, alpha, noise=1.0)
    assert torch.allclose(rs, x + (nf - x).clamp(-eps, eps), atol=1e-6, rtol=0)
    assert (nf - x).abs().max() > eps + 1e-4  # N-FGSM left the ball: the projection binds
    assert (rs - x).abs().max() <= eps + 1e-6


def _weights(tmp_path, name, **kw):
    from eae.config import TrainConfig

    cfg = TrainConfig(out=str(tmp_path / name), dataset="synthetic", arch="convnet_nobn", device="cpu",
                      synthetic_train_size=96, synthetic_test_size=32, synthetic_image_size=16, val_size=0,
                      batch_size=32, epochs=2, lr_max=0.1, seed=3, augment=True, **kw)
    res = train(cfg, quiet=True)
    return load(res.run_dir).state_dict()


def test_nfgsm_noise_1_trains_as_fgsm_rs_when_the_ball_holds_the_image_box(tmp_path):
    a = 0.3
    rs = _weights(tmp_path, "rs", method="fgsm_rs", eps=1.0, fgsm_alpha=a)
    nf = _weights(tmp_path, "nf", method="n_fgsm", eps=1.0, nfgsm_noise=1.0, nfgsm_alpha=a)
    assert rs.keys() == nf.keys()
    assert all(torch.equal(rs[k], nf[k]) for k in rs)


def test_at_a_real_eps_the_projection_makes_them_differ(tmp_path):
    eps = 8 / 255
    rs = _weights(tmp_path, "rs", method="fgsm_rs", eps=eps, fgsm_alpha=1.25 * eps)
    nf = _weights(tmp_path, "nf", method="n_fgsm", eps=eps, nfgsm_noise=1.0, nfgsm_alpha=1.25 * eps)
    assert any(not torch.equal(rs[k], nf[k]) for k in rs)
