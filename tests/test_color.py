import numpy as np
import pytest
import torch
from PIL import Image

from ivfusion.color import rgb_to_luma, rgb_to_ycbcr, ycbcr_to_rgb


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_round_trip_exact(rng, dtype):
    rgb = rng.random((17, 23, 3)).astype(dtype)
    back = ycbcr_to_rgb(rgb_to_ycbcr(rgb), clip=False)
    assert back.dtype == dtype
    np.testing.assert_allclose(back, rgb, atol=1e-5, rtol=0)


def test_torch_round_trip_exact_batched():
    rgb = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(0))
    back = ycbcr_to_rgb(rgb_to_ycbcr(rgb), clip=False)
    assert back.shape == rgb.shape
    assert torch.allclose(back, rgb, atol=1e-5, rtol=0)


def test_numpy_and_torch_agree(rng):
    rgb = rng.random((8, 10, 3)).astype(np.float32)
    via_np = rgb_to_ycbcr(rgb)
    via_torch = rgb_to_ycbcr(torch.from_numpy(rgb).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(via_np, via_torch, atol=1e-6)


def test_known_values():
    # Primaries and neutrals with the BT.601 full-range definition, computed by hand.
    rgb = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.5]]])
    ycc = rgb_to_ycbcr(rgb)[0]
    np.testing.assert_allclose(ycc[0], [0.299, 0.5 - 0.299 / 1.772, 1.0], atol=1e-12)
    np.testing.assert_allclose(ycc[1], [0.587, 0.5 - 0.587 / 1.772, 0.5 - 0.587 / 1.402], atol=1e-12)
    np.testing.assert_allclose(ycc[2], [0.114, 0.5 + 0.886 / 1.772, 0.5 - 0.114 / 1.402], atol=1e-12)
    np.testing.assert_allclose(ycc[3], [0.5, 0.5, 0.5], atol=1e-12)
    np.testing.assert_allclose(rgb_to_luma(rgb)[0], ycc[:, 0], atol=1e-12)


def test_agrees_with_pil_on_uint8(rng):
    rgb8 = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    ours = np.round(rgb_to_ycbcr(rgb8.astype(np.float64) / 255.0) * 255.0)
    pil = np.asarray(Image.fromarray(rgb8).convert("YCbCr")).astype(np.float64)
    assert np.abs(ours - pil).max() <= 1


def test_inverse_clips_out_of_gamut_by_default():
    ycc = np.array([[1.0, 0.0, 1.0]])  # far outside the RGB cube
    rgb = ycbcr_to_rgb(ycc)
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    assert ycbcr_to_rgb(ycc, clip=False).max() > 1.0


def test_errors_name_the_expected_layout():
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        rgb_to_ycbcr(np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\)"):
        rgb_to_ycbcr(torch.zeros(1, 4, 4, 3))
    with pytest.raises(TypeError, match="floating-point"):
        rgb_to_ycbcr(np.zeros((2, 2, 3), dtype=np.uint8))
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        rgb_to_ycbcr([[0.0, 0.0, 0.0]])
