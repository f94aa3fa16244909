"""The mask-aware upsampling grid built the release's way (``torch.linspace`` in float32), at the real size."""

import torch

from snd.distill.teacher import _low_res_label_rows, _source_positions, mask_aware_upsample


def release_mask_aware_bilinear_upsample_hr_mask(feats_lr, mask_hr, out_h, out_w):
    """``src/model/vit/utils.py`` ``mask_aware_bilinear_upsample_hr_mask``, restated line by line."""
    _, H_lr, W_lr = feats_lr.shape
    xs = torch.linspace(0, W_lr - 1, out_w)
    ys = torch.linspace(0, H_lr - 1, out_h)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    x0 = torch.floor(grid_x).long()
    x1 = torch.clamp(x0 + 1, max=W_lr - 1)
    y0 = torch.floor(grid_y).long()
    y1 = torch.clamp(y0 + 1, max=H_lr - 1)
    wx = grid_x - x0.float()
    wy = grid_y - y0.float()
    w00, w01, w10, w11 = (1 - wx) * (1 - wy), wx * (1 - wy), (1 - wx) * wy, wx * wy
    lr_ys = torch.linspace(0, out_h - 1, H_lr).round().long().clamp(0, out_h - 1)
    lr_xs = torch.linspace(0, out_w - 1, W_lr).round().long().clamp(0, out_w - 1)
    mask_lr = mask_hr[lr_ys][:, lr_xs]
    w00 = w00 * (mask_lr[y0, x0] == mask_hr).float()
    w01 = w01 * (mask_lr[y0, x1] == mask_hr).float()
    w10 = w10 * (mask_lr[y1, x0] == mask_hr).float()
    w11 = w11 * (mask_lr[y1, x1] == mask_hr).float()
    w_sum = w00 + w01 + w10 + w11
    w_sum = torch.where(w_sum == 0, torch.ones_like(w_sum), w_sum)
    w00, w01, w10, w11 = w00 / w_sum, w01 / w_sum, w10 / w_sum, w11 / w_sum
    return (feats_lr[:, y0, x0] * w00 + feats_lr[:, y0, x1] * w01 + feats_lr[:, y1, x0] * w10
            + feats_lr[:, y1, x1] * w11)


def test_grid_indices_are_the_release_linspace_at_576x880():
    for out_size, in_size in ((576, 41), (880, 62)):
        lower, upper, fraction = _source_positions(out_size, in_size, True, "cpu")
        grid = torch.linspace(0, in_size - 1, out_size)
        assert torch.equal(lower, grid.floor().long())
        assert torch.equal(upper, (grid.floor().long() + 1).clamp(max=in_size - 1))
        assert torch.equal(fraction, grid - grid.floor())
        labels = _low_res_label_rows(in_size, out_size, True, "cpu")
        assert torch.equal(labels, torch.linspace(0, out_size - 1, in_size).round().long())
    # the product formula this replaces takes the other floor neighbour at rows 345, 460 and column 879
    for out_size, in_size, rows in ((576, 41, [345, 460]), (880, 62, [879])):
        product = (torch.arange(out_size, dtype=torch.float32) * ((in_size - 1) / (out_size - 1))).floor().long()
        assert (product != torch.linspace(0, in_size - 1, out_size).floor().long()).nonzero().flatten().tolist() == rows


def test_mask_aware_upsample_equals_the_release_at_576x880():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(1, 2, 41, 62, generator=generator)
    # 8 x 8-pixel blocks of random labels: segment edges everywhere, rows 345 / 460 and column 879 included
    blocks = torch.randint(0, 3, (1, 72, 110), generator=generator)
    masks = blocks.repeat_interleave(8, 1).repeat_interleave(8, 2)  # [1, 576, 880]
    result = mask_aware_upsample(features, masks, fallback="zero", align_corners=True)
    expected = release_mask_aware_bilinear_upsample_hr_mask(features[0], masks[0], 576, 880)
    torch.testing.assert_close(result[0], expected, atol=1e-5, rtol=1e-5)
