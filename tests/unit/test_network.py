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


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_other_objects_is_the_largest_of_the_others(k):
    from service.vos.network import other_objects

    torch.manual_seed(k)
    masks = torch.rand(k, 6, 7).round(decimals=1)  # rounded, so that ties occur
    got = other_objects(masks)
    for i in range(k):
        rest = torch.cat([masks[:i], masks[i + 1:]])
        want = rest.max(dim=0).values if len(rest) else torch.zeros(6, 7)
        assert torch.equal(got[i], want)


def _with_others(seed: int = 0):
    """A small effnet model with `others`, its conv1_o made non-zero so that the other objects matter."""
    torch.manual_seed(seed)
    model = build_model(AGSSConfig("efficientnet_lite0", 16, 64, others=True)).eval()
    assert torch.count_nonzero(model.Encoder.conv1_o.weight) == 0  # starts as a no-op
    with torch.no_grad():
        model.Encoder.conv1_o.weight.normal_(0, 1.0)
    return model


def test_others_model_starts_as_the_model_without_and_then_sees_the_other_objects(tmp_path):
    from service.training.loop import TrainConfig, build
    from service.vos.checkpoint import save_model

    torch.manual_seed(0)
    plain = build_model(AGSSConfig("efficientnet_lite0", 16, 64)).eval()
    save_model(plain, tmp_path / "plain")
    started, _ = build(TrainConfig(model={**plain.config.to_dict(), "others": True}, init=str(tmp_path / "plain")),
                       torch.device("cpu"))
    started.eval()
    image = torch.randn(1, 3, 64, 64)
    masks = (torch.rand(3, 64, 64) > 0.6).float()
    with torch.no_grad():
        ref = plain.encode_reference(image, masks)
        assert torch.equal(plain.object_probs(image, masks, ref), started.object_probs(image, masks, ref))

        model = _with_others()
        ref = model.encode_reference(image, masks)
        base = model.object_probs(image, masks, ref)
        moved = masks.clone()
        moved[2] = torch.roll(moved[2], 20, dims=1)  # only the third object moves
        after = model.object_probs(image, moved, ref)
    assert not torch.allclose(base[0], after[0], atol=1e-4)  # the first object's map depends on it
    save_model(model, tmp_path / "others")
    with pytest.raises(ValueError, match="with others"):  # a model with others cannot start one without
        build(TrainConfig(model=plain.config.to_dict(), init=str(tmp_path / "others")), torch.device("cpu"))
    assert load_model(tmp_path / "others").config.others


def test_others_in_chunks_gives_the_same_numbers(monkeypatch):
    import service.vos.network as network

    model = _with_others(1)
    image = torch.randn(1, 3, 64, 64)
    masks = torch.rand(5, 64, 64)
    monkeypatch.setattr(network, "OBJECT_CHUNK", {"cpu": 2})
    with torch.no_grad():
        ref = model.encode_reference(image, masks)
        chunked = model.object_probs(image, masks, ref)
        monkeypatch.setattr(network, "OBJECT_CHUNK", {"cpu": 100})
        whole = model.object_probs(image, masks, ref)
    assert torch.allclose(chunked, whole, atol=1e-6)
