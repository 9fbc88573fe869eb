import json

import numpy as np
import pytest
import torch

from service.vos import AGSSConfig, build_model, load_model, normalize_objects
from service.vos.backbone import ResNet

from ..conftest import FIXTURE, require


def test_official_keys_and_shapes_match_the_fixture():
    keys = json.loads((require(FIXTURE) / "state_dict_keys.json").read_text())
    ours = {k: tuple(v.shape) for k, v in build_model("resnet50").state_dict().items()}
    theirs = {e["key"]: tuple(e["shape"]) for e in keys}
    assert ours == theirs
    n = sum(np.prod(s) for k, s in theirs.items() if not k.endswith("num_batches_tracked"))
    assert round(n / 1e6, 1) == 52.8


def test_parity_with_official_outputs(official_ckpt):
    model = load_model(official_ckpt)
    inp = np.load(FIXTURE / "inputs.npz")
    exp = np.load(FIXTURE / "expected.npz")
    t = {k: torch.from_numpy(inp[k]) for k in inp.files}
    with torch.no_grad():
        ref = model.encode_reference(t["ref_img"], t["ref_merge"])
        stem = model.Encoder.stem(t["cur_img"])
        cur_r5 = model.Encoder.full(stem, t["prev_merge"][None])[0]
        prob = model(t["cur_img"], t["prev_obj"], ref)
    assert np.abs(ref.r5.numpy() - exp["ref_r5"]).max() <= 1e-4
    assert np.abs(cur_r5.numpy() - exp["cur_r5"]).max() <= 1e-4
    assert prob.shape == (3, 96, 128)
    assert np.abs(prob.numpy() - exp["prob"][:, 0]).max() <= 1e-4


@pytest.mark.parametrize("name,channels", [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)])
def test_resnet_feature_shapes(name, channels):
    feats = ResNet(name).eval()(torch.zeros(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert feats[-1].shape[1] == channels


def test_normalisation_properties():
    p = torch.rand(4, 8, 8)
    q = normalize_objects(p)
    assert q.shape == p.shape
    assert (q.sum(0) <= 1 + 1e-6).all()
    # order of objects is preserved: the largest input stays the largest output at every pixel
    assert torch.equal(q.argmax(0), p.argmax(0))
    assert normalize_objects(torch.zeros(0, 8, 8)).shape == (0, 8, 8)


def test_object_chunks_give_the_same_numbers(monkeypatch):
    import service.vos.network as network

    torch.manual_seed(1)
    model = build_model(AGSSConfig("resnet18", 16, 64))
    monkeypatch.setattr(network, "OBJECT_CHUNK", {"cpu": 4})
    k = 4 + 3
    image = torch.randn(1, 3, 64, 64)
    masks = (torch.rand(k, 64, 64) > 0.5).float()
    with torch.no_grad():
        ref = model.encode_reference(image, masks)
        chunked = model.object_probs(image, masks, ref)
        monkeypatch.setattr(network, "OBJECT_CHUNK", {"cpu": 10_000})
        whole = model.object_probs(image, masks, ref)
    assert chunked.shape == (k, 64, 64)
    assert torch.allclose(chunked, whole, atol=1e-6)
    assert not torch.allclose(chunked[0], chunked[1])  # objects really differ


def test_bad_shapes_are_rejected():
    model = build_model(AGSSConfig("resnet18", 16, 64))
    with pytest.raises(ValueError, match="multiples of 32"):
        model.encode_reference(torch.zeros(1, 3, 50, 64), torch.zeros(1, 50, 64))
    with pytest.raises(ValueError, match="masks must be"):
        model.encode_reference(torch.zeros(1, 3, 64, 64), torch.zeros(1, 32, 64))
