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


def test_match_maps_are_the_best_cosine_to_the_object_and_to_the_rest():
    from service.vos.network import match_maps

    torch.manual_seed(0)
    feats = torch.randn(1, 8, 3, 4)
    ref_feats = torch.nn.functional.normalize(torch.randn(1, 8, 2, 5), dim=1)
    masks = torch.zeros(3, 2, 5)
    masks[0, 0, :2] = 1  # two whole cells
    masks[1, 1, 4] = 0.25  # smaller than one cell: its best cell still counts as the object
    masks[2] = 1  # everywhere: nothing is "not the object"
    got = match_maps(feats, ref_feats, masks)  # (3,2,3,4)
    cos = torch.einsum("cp,cq->pq", torch.nn.functional.normalize(feats, dim=1).flatten(2)[0],
                       ref_feats.flatten(2)[0])  # (12 frame pixels, 10 reference pixels)
    assert torch.allclose(got[0, 0].flatten(), cos[:, :2].amax(1), atol=1e-6)
    assert torch.allclose(got[0, 1].flatten(), cos[:, 2:].amax(1), atol=1e-6)
    assert torch.allclose(got[1, 0].flatten(), cos[:, 9], atol=1e-6)
    assert torch.allclose(got[1, 1].flatten(), cos[:, :9].amax(1), atol=1e-6)
    assert (got[2, 1] < -0.9).all()  # pushed out of the maximum by 2 per unit of mask


def _with_inputs(seed: int = 0, **inputs):
    """A small effnet model with optional inputs (others, match), their layers made non-zero so that
    they matter."""
    torch.manual_seed(seed)
    model = build_model(AGSSConfig("efficientnet_lite0", 16, 64, **inputs)).eval()
    layers = [model.Encoder.conv1_o, model.Encoder.match_in]
    assert [x is not None for x in layers] == [inputs.get("others", False), inputs.get("match", False)]
    for layer in filter(None, layers):
        assert torch.count_nonzero(layer.weight) == 0  # starts as a no-op
        with torch.no_grad():
            layer.weight.normal_(0, 1.0)
    return model


@pytest.mark.parametrize("inputs", [{"others": True}, {"match": True}, {"others": True, "match": True}])
def test_a_model_with_inputs_starts_as_the_model_without_and_then_uses_them(tmp_path, inputs):
    from service.training.loop import TrainConfig, build
    from service.vos.checkpoint import save_model

    torch.manual_seed(0)
    plain = build_model(AGSSConfig("efficientnet_lite0", 16, 64)).eval()
    save_model(plain, tmp_path / "plain")
    started, opt = build(TrainConfig(model={**plain.config.to_dict(), **inputs}, init=str(tmp_path / "plain"),
                                     input_lr_scale=20), torch.device("cpu"))
    assert [g["lr"] / opt.param_groups[1]["lr"] for g in opt.param_groups] == [0.1, 1, 20]
    assert len(opt.param_groups[2]["params"]) == len(inputs)
    started.eval()
    image = torch.randn(1, 3, 64, 64)
    masks = (torch.rand(3, 64, 64) > 0.6).float()
    with torch.no_grad():
        assert torch.equal(plain.object_probs(image, masks, plain.encode_reference(image, masks)),
                           started.object_probs(image, masks, started.encode_reference(image, masks)))

        model = _with_inputs(**inputs)
        ref = model.encode_reference(image, masks)
        base = model.object_probs(image, masks, ref)
        moved = masks.clone()
        moved[2] = torch.roll(moved[2], 20, dims=1)  # only the third object moves
        after = model.object_probs(image, moved, ref)
        if inputs.get("match"):  # another reference frame changes what the objects look like
            other = model.encode_reference(torch.randn(1, 3, 64, 64), masks)
            assert not torch.allclose(base[0], model.object_probs(image, masks, other), atol=1e-4)
    if inputs.get("others"):
        assert not torch.allclose(base[0], after[0], atol=1e-4)  # the first object's map depends on the third
    save_model(model, tmp_path / "inputs")
    with pytest.raises(ValueError, match=f"without {next(iter(inputs))}"):  # ... cannot start one without
        build(TrainConfig(model=plain.config.to_dict(), init=str(tmp_path / "inputs")), torch.device("cpu"))
    loaded = load_model(tmp_path / "inputs").config
    assert (loaded.others, loaded.match) == (inputs.get("others", False), inputs.get("match", False))


@pytest.mark.parametrize("inputs", [{"others": True}, {"match": True}])
def test_inputs_in_chunks_give_the_same_numbers(monkeypatch, inputs):
    import service.vos.network as network

    model = _with_inputs(1, **inputs)
    image = torch.randn(1, 3, 64, 64)
    masks = torch.rand(5, 64, 64)
    monkeypatch.setattr(network, "OBJECT_CHUNK", {"cpu": 2})
    with torch.no_grad():
        ref = model.encode_reference(image, masks)
        chunked = model.object_probs(image, masks, ref)
        monkeypatch.setattr(network, "OBJECT_CHUNK", {"cpu": 100})
        whole = model.object_probs(image, masks, ref)
    assert torch.allclose(chunked, whole, atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_saturated_predictions_stay_finite_under_bfloat16_autocast(training):
    """CPU autocast leaves softmax in bfloat16, where a confident pixel rounds to exactly 1 and the odds of
    the normalisation across objects divide by zero: every step of a `--amp bf16` run on the CPU was NaN."""
    torch.manual_seed(2)
    model = build_model(AGSSConfig("efficientnet_lite0", 16, 64)).train(training)
    with torch.no_grad():
        model.Decoder.pred2.bias.copy_(torch.tensor([-30.0, 30.0]))  # every pixel certain: foreground
    image = torch.randn(1, 3, 64, 96)
    masks = torch.zeros(2, 64, 96)
    masks[0, 8:30, 10:40], masks[1, 30:60, 50:90] = 1, 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        probs = model(image, masks, model.encode_reference(image, masks))
    assert probs.dtype == torch.float32 and torch.isfinite(probs).all()
    assert torch.allclose(probs.sum(0), torch.ones(64, 96), atol=1e-3)  # two certain objects share each pixel
