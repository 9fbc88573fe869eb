"""EfficientNet-Lite0 / -Lite2 as written here: the packages' ImageNet weights load with strict keys, and with
the packages' classifier heads the trunks name real DAVIS frames right (a wrong stage table, tap or
normalisation would still load but not classify)."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
import torch
import torch.nn.functional as F

from service.vos import effnet
from service.vos.network import AGSSVOS, PRESETS, encoder_channels

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
# ImageNet classes: 100 black swan, 354 Arabian camel
FRAMES = {"blackswan": 100, "camel": 354}


def _package_state(name: str) -> dict[str, torch.Tensor]:
    mod = pytest.importorskip(effnet.VARIANTS[name].package.replace("-", "_"))
    path = getattr(mod, f"EfficientnetLite{name[-1]}ModelFile").get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("name", list(effnet.VARIANTS))
def test_imagenet_weights_load_strictly_and_classify_real_frames(name):
    net = effnet.EfficientNetLite(name)
    effnet.load_imagenet_weights(net, name)
    net.eval()
    state = _package_state(name)
    if not REAL.is_dir():
        pytest.skip("../shared/data/real is not here")
    for seq, label in FRAMES.items():
        frame = sorted((REAL / seq).rglob("*.jpg"))[0]
        rgb = cv2.resize(cv2.cvtColor(cv2.imread(str(frame)), cv2.COLOR_BGR2RGB), (260, 260))
        x = (torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.5  # (1,3,H,W) in [-1,1]
        with torch.no_grad():
            h = net.forward_blocks(F.relu6(net._bn0(net._conv_stem(x))), 0, len(net._blocks))
            h = F.conv2d(h, state["_conv_head.weight"])
            h = F.batch_norm(h, state["_bn1.running_mean"], state["_bn1.running_var"], state["_bn1.weight"],
                             state["_bn1.bias"], eps=effnet.BN_EPS)
            logits = F.linear(F.relu6(h).mean((2, 3)), state["_fc.weight"], state["_fc.bias"])  # (1,1000)
        assert int(logits.argmax()) == label, f"{name} on {seq}: class {int(logits.argmax())}, expected {label}"


def test_lite2_taps_have_the_strides_and_channels_the_decoder_expects():
    model = AGSSVOS(PRESETS["lite2"]).eval()
    enc = model.Encoder
    x = torch.zeros(1, 3, 64, 96)
    h = F.relu6(enc.bn0(enc.conv_stem(x)))
    shapes = []
    for i, b in enumerate(enc.blocks):
        h = b(h)
        if i in enc.taps:
            shapes.append(tuple(h.shape[1:]))
    assert shapes == [(c, 64 // s, 96 // s) for c, s in zip(encoder_channels("efficientnet_lite2"), (4, 8, 16, 32),
                                                              strict=True)]
    image = torch.rand(1, 3, 64, 96)
    masks = torch.zeros(2, 64, 96)  # (K,H,W)
    masks[0, 10:30, 10:30] = masks[1, 30:60, 50:90] = 1
    with torch.no_grad():
        probs = model.object_probs(image, masks, model.encode_reference(image, masks))
    assert probs.shape == (2, 64, 96) and bool(((probs >= 0) & (probs <= 1)).all())
