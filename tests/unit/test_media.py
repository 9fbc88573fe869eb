import io
import zipfile

import cv2
import numpy as np
import pytest
from PIL import Image

from service.media import (
    MediaError,
    UnsafeArchiveError,
    UnsupportedFormatError,
    davis_palette,
    encode_label_png,
    open_frames,
    read_label_png,
    read_masks,
)
from service.media.inputs import inspect_inputs


def _jpg(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def _png(arr: np.ndarray, mode: str | None = None, palette: bytes | None = None) -> bytes:
    img = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    if palette:
        img.putpalette(palette)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_palette_is_davis():
    pal = davis_palette()
    assert len(pal) == 768 and pal[3:6] == bytes((128, 0, 0)) and pal[6:9] == bytes((0, 128, 0))


def test_indexed_png_round_trip_and_void():
    lab = np.zeros((10, 12), np.uint8)
    lab[1:4, 1:4] = 3
    lab[5:7, 5:9] = 12
    lab[0, 0] = 255
    data = encode_label_png(lab)
    out, pal = read_label_png(data)
    assert pal == davis_palette()
    assert out[0, 0] == 0 and out[2, 2] == 3 and out[6, 6] == 12
    assert read_label_png(data, keep_void=True)[0][0, 0] == 255


def test_grayscale_davis2016_mask_is_object_one():
    lab = np.zeros((8, 8), np.uint8)
    lab[2:5, 2:5] = 255
    out, pal = read_label_png(_png(lab))
    assert pal is None and set(np.unique(out)) == {0, 1}


def test_rgb_mask_and_garbage_are_rejected():
    with pytest.raises(UnsupportedFormatError, match="indexed"):
        read_label_png(_png(np.zeros((4, 4, 3), np.uint8)))
    with pytest.raises(MediaError):
        read_label_png(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(UnsupportedFormatError, match="PNG"):
        read_label_png(_jpg(np.zeros((4, 4, 3), np.uint8)))


def _png16(lab: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(lab.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def test_sixteen_bit_masks_hold_at_most_254_objects():
    with pytest.raises(MediaError, match="at most 254"):
        read_label_png(_png16(np.arange(1, 257).reshape(16, 16)))
    with pytest.raises(MediaError, match="ids 1..254"):
        read_label_png(_png16(np.array([[0, 255]])))  # 255 is void in every label PNG, never an object
    labels, _ = read_label_png(_png16(np.array([[0, 3], [254, 7]])))
    assert labels.tolist() == [[0, 3], [254, 7]]


def _frames_zip(path, names, size=(24, 32)):
    with zipfile.ZipFile(path, "w") as zf:
        for i, n in enumerate(names):
            zf.writestr(n, _jpg(np.full((*size, 3), i * 20, np.uint8)))


def test_zip_frames_in_natural_order(tmp_path):
    z = tmp_path / "f.zip"
    _frames_zip(z, ["clip/frame10.jpg", "clip/frame2.jpg", "clip/frame1.jpg", "__MACOSX/._x.jpg"])
    src = open_frames(z)
    assert src.names == ["frame1", "frame2", "frame10"] and src.count == 3 and src.size == (24, 32)
    assert [f.name for f in src] == ["frame1", "frame2", "frame10"]


@pytest.mark.parametrize("name", ["../evil.jpg", "/abs.jpg", "a/../../b.jpg", "C:/x.jpg"])
def test_zip_path_tricks_are_refused(tmp_path, name):
    z = tmp_path / "bad.zip"
    _frames_zip(z, ["ok.jpg", name])
    with pytest.raises(UnsafeArchiveError):
        open_frames(z)


def test_zip_bomb_entry_is_refused(tmp_path):
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("00000.png", b"\0" * (40 << 20))
    with pytest.raises(UnsafeArchiveError, match="over the limit"):
        open_frames(z)


def test_video_and_bad_files(tmp_path):
    p = tmp_path / "v.mp4"
    w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(7):
        w.write(np.full((48, 64, 3), i * 30, np.uint8))
    w.release()
    src = open_frames(p)
    assert src.kind == "video" and src.size == (48, 64)
    assert [f.name for f in src] == [f"{i:05d}" for i in range(7)]
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(MediaError, match="cannot be decoded"):
        open_frames(tmp_path / "junk.mp4")
    (tmp_path / "junk.bin").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(UnsupportedFormatError):
        open_frames(tmp_path / "junk.bin")
    (tmp_path / "trunc.mp4").write_bytes(p.read_bytes()[:300])
    with pytest.raises(MediaError):
        open_frames(tmp_path / "trunc.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MediaError, match="no image frames"):
        open_frames(tmp_path / "empty")
    with pytest.raises(MediaError, match="no such"):
        open_frames(tmp_path / "missing")


def test_frames_of_different_sizes(tmp_path):
    d = tmp_path / "f"
    d.mkdir()
    (d / "0.jpg").write_bytes(_jpg(np.zeros((24, 32, 3), np.uint8)))
    (d / "1.jpg").write_bytes(_jpg(np.zeros((20, 32, 3), np.uint8)))
    with pytest.raises(MediaError, match="first frame"):
        list(open_frames(d))


def test_inspect_inputs_checks(tmp_path):
    d = tmp_path / "f"
    d.mkdir()
    for i in range(3):
        (d / f"{i:05d}.jpg").write_bytes(_jpg(np.zeros((24, 32, 3), np.uint8)))
    lab = np.zeros((24, 32), np.uint8)
    (tmp_path / "empty.png").write_bytes(encode_label_png(lab))
    with pytest.raises(MediaError, match="no object"):
        inspect_inputs(d, tmp_path / "empty.png")
    (tmp_path / "small.png").write_bytes(encode_label_png(np.ones((10, 10), np.uint8)))
    with pytest.raises(MediaError, match="10x10"):
        inspect_inputs(d, tmp_path / "small.png")
    masks = tmp_path / "masks"
    masks.mkdir()
    lab[2:5, 2:5] = 4
    (masks / "00000.png").write_bytes(encode_label_png(lab))
    lab2 = np.zeros_like(lab)
    lab2[10:20, 10:20] = 9
    (masks / "00002.png").write_bytes(encode_label_png(lab2))
    s = inspect_inputs(d, masks)
    assert s.object_ids == [4, 9] and s.schedule == {0: "00000", 2: "00002"}
    (masks / "nope.png").write_bytes(encode_label_png(lab2))
    with pytest.raises(MediaError, match="names no frame"):
        inspect_inputs(d, masks)
    assert read_masks(masks).keys == ["00000", "00002", "nope"]
