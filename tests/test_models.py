import pytest
import torch

from eae.models import MODELS, count_parameters, create_model


@pytest.mark.parametrize("name", MODELS.names())
def test_features_head_split(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3)).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        z = model.features(x)
        logits = model(x)
    assert z.shape == (2, model.feature_dim)
    assert model.head.weight.shape == (7, model.feature_dim)
    torch.testing.assert_close(model.head(z), logits)


def test_normalisation_is_inside_the_model():
    model = create_model("resnet_small", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).eval()
    x = torch.rand(3, 3, 32, 32)
    normalized = model.normalize(x)
    torch.testing.assert_close(normalized, (x - 0.5) / 0.25)
    # the mean/std buffers are saved with the weights
    assert {"normalize.mean", "normalize.std"} <= set(model.state_dict())


def test_sizes():
    assert count_parameters(create_model("resnet_small")) < 1_000_000
    assert 11.0e6 < count_parameters(create_model("preact_resnet18")) < 11.3e6


def test_channels_last_gives_same_outputs():
    torch.manual_seed(0)
    model = create_model("resnet_small").eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_unknown_model_lists_choices():
    with pytest.raises(KeyError, match="resnet_small"):
        create_model("resnet_999")
