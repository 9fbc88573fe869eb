import os
import pickle

import numpy as np
import pytest
import torch

from service.vos import CheckpointError, ModelNotFoundError, load_model, save_model
from service.vos.checkpoint import convert_official, infer_config


def test_official_checkpoint_loads_strictly(official_ckpt):
    model = load_model(official_ckpt)
    assert model.config.backbone == "resnet50" and model.config.width == 256
    assert not model.training


def test_convert_round_trip_gives_identical_outputs(official_ckpt, tmp_path):
    out = convert_official(official_ckpt, tmp_path / "conv")
    assert (out / "weights.safetensors").is_file() and (out / "model.json").is_file()
    a, b = load_model(official_ckpt), load_model(out)
    image, masks = torch.randn(1, 3, 64, 96), torch.rand(2, 64, 96)
    with torch.no_grad():
        pa = a(image, masks, a.encode_reference(image, masks))
        pb = b(image, masks, b.encode_reference(image, masks))
    assert torch.equal(pa, pb)


def test_pickle_with_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"seg": Evil()}, f)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_model(path)
    assert not marker.exists()


# Random bytes reach different corners of the unpickler (one draw raised IndexError from inside it):
# many fixed draws, so that every run tries the same ones.
_RANDOM = [np.random.default_rng(seed).bytes(4096) for seed in range(40)]


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", *_RANDOM])
def test_garbage_files_are_clear_errors(tmp_path, content):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_model(path)


def test_truncated_official_checkpoint(official_ckpt, tmp_path):
    path = tmp_path / "cut.pth"
    path.write_bytes(official_ckpt.read_bytes()[: 1 << 20])
    with pytest.raises(CheckpointError):
        load_model(path)


def test_wrong_tensors_are_a_clear_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"seg": {"module.Decoder.pred2.weight": torch.zeros(2, 8, 3, 3)}}, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="expected"):
        load_model(path)


def test_folder_errors_and_names(tmp_path, small_model_dir):
    with pytest.raises(ModelNotFoundError):
        load_model("no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="model.json"):
        load_model(tmp_path / "empty")
    with pytest.raises(ModelNotFoundError):
        load_model("tiny")  # not in the bundled models
    # a models folder (AGSS_MODELS_DIR) is looked up first, then the bundled models
    assert load_model("tiny", models_dir=small_model_dir.parent).config.backbone == "resnet18"
    assert load_model("agss-lite", models_dir=small_model_dir.parent).config.backbone == "efficientnet_lite0"


def test_infer_config_for_small_backbones(small_model_dir):
    model = load_model(small_model_dir)
    cfg = infer_config(model.state_dict())
    assert (cfg.backbone, cfg.width) == ("resnet18", 32)


def test_save_writes_provenance(tmp_path, small_model_dir):
    model = load_model(small_model_dir)
    out = save_model(model, tmp_path / "m", provenance={"data": "x"}, extra={"note": "y"})
    card = (out / "model.json").read_text()
    assert '"data": "x"' in card and '"note": "y"' in card
