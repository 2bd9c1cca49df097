"""llm_magic.images: turning what the user has at hand (a path, PNG/JPEG bytes, a numpy array, a PIL
image, a matplotlib figure) into PNG/JPEG bytes for a vision model; downscaling; bad images."""

from __future__ import annotations

import io

import pytest

from llm_magic.images import MAX_SIDE, Image, ImageError, load_image, png_from_array

from tiny_vision_gguf import png_bytes


def decode(data: bytes):
    import numpy as np
    from PIL import Image as PILImage

    return np.asarray(PILImage.open(io.BytesIO(data)))


def test_png_from_array_round_trips():
    import numpy as np

    arr = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    assert (decode(png_from_array(arr)) == arr).all()
    rgba = np.arange(3 * 2 * 4, dtype=np.uint8).reshape(3, 2, 4)
    assert (decode(png_from_array(rgba)) == rgba).all()
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert (decode(png_from_array(gray)) == np.stack([gray] * 3, axis=-1)).all()


@pytest.mark.parametrize(
    ("array", "match"),
    [
        ("float", "must be uint8"),
        ("shape", "must be H×W×3 uint8"),
    ],
)
def test_png_from_array_refuses_what_is_not_an_image(array, match):
    import numpy as np

    bad = np.zeros((4, 4, 3), dtype=np.float32) if array == "float" else np.zeros((4, 4, 5), dtype=np.uint8)
    with pytest.raises(ImageError, match=match):
        png_from_array(bad)


def test_images_from_a_file_bytes_and_variables(tmp_path):
    import numpy as np
    from PIL import Image as PILImage

    path = tmp_path / "p.png"
    path.write_bytes(png_bytes(40, 24))
    from_file = load_image(str(path))
    assert (from_file.mime, from_file.size, from_file.source, from_file.note) == (
        "image/png",
        (40, 24),
        str(path),
        None,
    )
    assert from_file.data == path.read_bytes()  # small enough: passed on unchanged
    ns = {
        "arr": np.zeros((20, 30, 3), dtype=np.uint8),
        "pil": PILImage.new("RGB", (16, 8)),
        "raw": png_bytes(12, 10),
        "jpeg": _jpeg(),
    }
    assert load_image("arr", ns).size == (30, 20)
    assert load_image("pil", ns).size == (16, 8) and load_image("pil", ns).mime == "image/png"
    assert load_image("raw", ns).size == (12, 10)
    assert load_image("jpeg", ns).mime == "image/jpeg"
    assert load_image(ns["arr"]).source == "ndarray"  # an object, not a name


def _jpeg() -> bytes:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.new("RGB", (8, 8), (0, 128, 255)).save(buf, format="JPEG")
    return buf.getvalue()


def test_a_large_image_is_downscaled_with_a_note():
    import numpy as np

    big = np.random.default_rng(0).integers(0, 255, (MAX_SIDE + 500, 300, 3), dtype=np.uint8)
    image = load_image("huge", {"huge": big})
    assert image.size == (round(300 * MAX_SIDE / (MAX_SIDE + 500)), MAX_SIDE)
    assert image.note == f"huge: downscaled from 300×2548 to {image.size[0]}×{image.size[1]}"
    assert decode(image.data).shape == (MAX_SIDE, image.size[0], 3)
    small = load_image("huge", {"huge": big}, max_side=100)
    assert max(small.size) == 100


def test_bad_images(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    broken = tmp_path / "broken.png"
    broken.write_bytes(png_bytes(8, 8)[:40])  # a PNG header, then nothing
    cases = [
        (str(notes), {}, "is not an image"),
        (str(broken), {}, "is not a readable image"),
        ("/no/such/picture.png", {}, "no image file or variable named '/no/such/picture.png'"),
        ("undefined_var", {}, "no image file or variable"),
        ("n", {"n": 42}, "n is a int; --image takes a file path"),
        (str(tmp_path), {}, "is a directory, not an image file"),
    ]
    for spec, ns, match in cases:
        with pytest.raises(ImageError, match=match):
            load_image(spec, ns)


def test_data_uri():
    image = Image(data=b"abc", mime="image/png", source="x")
    assert image.data_uri() == "data:image/png;base64,YWJj"
