"""The optimised training-step paths (issue 15) against straightforward restatements of the same formulas.

Each restatement below is the pre-optimisation code written plainly (full-size gathers and temporaries);
the optimised paths must agree within 1e-6 in values and, where autograd flows, in gradients.
"""

import resource

import pytest
import torch
from torch.nn import functional as F

import snd.distill.teacher as teacher_module
from snd.distill.heads import DINOHead
from snd.distill.loss import PrototypeCrossEntropy
from snd.distill.teacher import _low_res_label_rows, _source_positions, blend_segments, mask_aware_upsample
from snd.distill.trainer import build_optimizer

TOL = dict(atol=1e-6, rtol=1e-6)


def restated_mask_aware_upsample(features, masks, fallback, align_corners):
    """Vectorised restatement: four full [N, H*W, C] gathers, weights renormalised over agreeing neighbours."""
    count, channels, low_h, low_w = features.shape
    height, width = masks.shape[-2:]
    y0, y1, fy = _source_positions(height, low_h, align_corners, "cpu")
    x0, x1, fx = _source_positions(width, low_w, align_corners, "cpu")
    low_labels = masks[:, _low_res_label_rows(low_h, height, align_corners, "cpu")][:, :, _low_res_label_rows(low_w, width, align_corners, "cpu")]
    fy, fx = fy[:, None], fx[None, :]
    corners = [(y0, x0, (1 - fy) * (1 - fx)), (y0, x1, (1 - fy) * fx), (y1, x0, fy * (1 - fx)), (y1, x1, fy * fx)]
    agree = [(low_labels[:, ys][:, :, xs] == masks).float() * w for ys, xs, w in corners]  # [N, H, W]
    total = sum(agree)
    rows = features.flatten(2).transpose(1, 2)  # [N, h*w, C]
    out = 0
    for (ys, xs, w), a in zip(corners, agree):
        weight = torch.where(total > 0, a / total.clamp_min(1e-30), w.expand_as(a) if fallback == "bilinear" else torch.zeros_like(a))
        gathered = rows[:, (ys[:, None] * low_w + xs[None, :]).reshape(-1)]  # [N, H*W, C]
        out = out + gathered * weight.reshape(count, -1, 1)
    return out.reshape(count, height, width, channels).permute(0, 3, 1, 2)


def _masks(generator, count, height, width, labels=4):
    masks = torch.randint(0, labels, (count, height, width), generator=generator)
    masks[:, 5, :] = 9  # a thin segment over no low-res label row (at 19 rows, 4 low-res rows): exercises the fallback
    return masks


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("fallback", ["bilinear", "zero"])
def test_mask_aware_upsample_chunked_and_autograd_paths_match_restatement(monkeypatch, fallback, align_corners):
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(2, 5, 4, 6, generator=generator)
    masks = _masks(generator, 2, 19, 27)
    expected = restated_mask_aware_upsample(features, masks, fallback, align_corners)
    # several chunks per image, the last one partial (19 * 27 = 513 pixels, 7 rows of 5 channels per chunk)
    monkeypatch.setattr(teacher_module, "_GATHER_CHUNK_BYTES", 7 * 5 * 4)
    with torch.no_grad():
        chunked = mask_aware_upsample(features, masks, fallback=fallback, align_corners=align_corners)
    torch.testing.assert_close(chunked, expected, **TOL)
    assert chunked.permute(0, 2, 3, 1).is_contiguous()  # channels-last memory, as lifting expects
    # with gradients: the differentiable path, same values, same gradient as the restatement
    leaf = features.clone().requires_grad_(True)
    reference_leaf = features.clone().requires_grad_(True)
    upstream = torch.randn(expected.shape, generator=generator)
    result = mask_aware_upsample(leaf, masks, fallback=fallback, align_corners=align_corners)
    torch.testing.assert_close(result, expected, **TOL)
    (result * upstream).sum().backward()
    (restated_mask_aware_upsample(reference_leaf, masks, fallback, align_corners) * upstream).sum().backward()
    torch.testing.assert_close(leaf.grad, reference_leaf.grad, **TOL)
    if fallback == "zero":
        assert chunked[:, :, 5].abs().max() == 0


def restated_blend(features, masks, alpha):
    count, channels, height, width = features.shape
    labels = masks.long().reshape(count, -1)
    keys = labels - labels.min() + (int(labels.max() - labels.min()) + 1) * torch.arange(count)[:, None]
    _, segment = torch.unique(keys.reshape(-1), return_inverse=True)
    flat = features.permute(0, 2, 3, 1).reshape(-1, channels)
    sums = torch.zeros(int(segment.max()) + 1, channels).index_add_(0, segment, flat)
    means = sums / torch.bincount(segment).float()[:, None]
    return (alpha * flat + (1 - alpha) * means[segment]).reshape(count, height, width, channels).permute(0, 3, 1, 2)


@pytest.mark.parametrize("label_offset", [0, -5, 10**9])  # small labels (histogram ids), negative, huge span (sorting ids)
def test_blend_segments_fast_path_matches_restatement(monkeypatch, label_offset):
    generator = torch.Generator().manual_seed(4)
    channels_last = torch.randn(3, 9, 11, 6, generator=generator).permute(0, 3, 1, 2)  # [N, C, H, W], as rendered
    masks = _masks(generator, 3, 9, 11)
    masks[1] += label_offset  # one image's labels far from the others'
    expected = restated_blend(channels_last, masks, 0.5)
    monkeypatch.setattr(teacher_module, "_GATHER_CHUNK_BYTES", 13 * 6 * 4)
    with torch.no_grad():
        torch.testing.assert_close(blend_segments(channels_last, masks, 0.5), expected, **TOL)
        torch.testing.assert_close(blend_segments(channels_last.contiguous(), masks, 0.3), restated_blend(channels_last, masks, 0.3), **TOL)
    leaf = channels_last.detach().clone().requires_grad_(True)
    reference_leaf = channels_last.detach().clone().requires_grad_(True)
    upstream = torch.randn(expected.shape, generator=generator)
    (blend_segments(leaf, masks, 0.5) * upstream).sum().backward()
    (restated_blend(reference_leaf, masks, 0.5) * upstream).sum().backward()
    torch.testing.assert_close(leaf.grad, reference_leaf.grad, **TOL)


def restated_prototype_ce(student, teacher, student_temperature, teacher_temperature, valid=None):
    """The released formula with every temporary: softmax / log_softmax, clamped log for the entropy."""
    p = F.softmax(teacher.float() / teacher_temperature, dim=-1)
    per_patch = -(p * F.log_softmax(student.float() / student_temperature, dim=-1)).sum(-1)
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
    weights = torch.ones_like(per_patch) if valid is None else valid.float()
    return (per_patch * weights).sum() / weights.sum().clamp_min(1.0), (entropy * weights).sum() / weights.sum().clamp_min(1.0)


@pytest.mark.parametrize("temperatures", [(1.0, 1.0), (0.1, 0.04)])
@pytest.mark.parametrize("average", ["all", "valid"])
def test_prototype_cross_entropy_matches_restatement_with_gradients(temperatures, average):
    generator = torch.Generator().manual_seed(5)
    student = (3 * torch.randn(7, 300, generator=generator)).requires_grad_(True)
    teacher = 3 * torch.randn(7, 300, generator=generator)
    teacher[0, :5] = 60.0  # a peaked teacher row: many probabilities underflow to 0 at the small temperature
    valid = torch.tensor([True, False, True, True, False, True, True])
    losses = PrototypeCrossEntropy(*temperatures, average=average)(student, teacher, valid)
    reference_student = student.detach().clone().requires_grad_(True)
    expected_loss, expected_entropy = restated_prototype_ce(reference_student, teacher, *temperatures, valid if average == "valid" else None)
    torch.testing.assert_close(losses["loss"], expected_loss, **TOL)
    torch.testing.assert_close(losses["teacher_entropy"], expected_entropy, **TOL)
    torch.testing.assert_close(losses["kl"], expected_loss.detach() - expected_entropy, **TOL)
    losses["loss"].backward()
    expected_loss.backward()
    torch.testing.assert_close(student.grad, reference_student.grad, **TOL)


def test_prototype_cross_entropy_gradient_keeps_the_student_dtype():
    student = torch.randn(3, 16, dtype=torch.bfloat16, requires_grad=True)
    teacher = torch.randn(3, 16)
    PrototypeCrossEntropy()(student, teacher)["loss"].backward()
    reference = student.detach().float().requires_grad_(True)
    restated_prototype_ce(reference, teacher, 1.0, 1.0)[0].backward()
    assert student.grad.dtype == torch.bfloat16
    torch.testing.assert_close(student.grad.float(), reference.grad, atol=1e-2, rtol=1e-2)


def test_dino_head_follows_its_parameters_through_in_place_updates_and_loads():
    torch.manual_seed(0)
    head = DINOHead(in_dim=8, num_prototypes=40, hidden_dim=16, bottleneck_dim=6, num_layers=2)
    features = torch.randn(5, 8)
    direction = head.last_layer.parametrizations.weight.original1
    gain = head.last_layer.parametrizations.weight.original0

    def restated(x):
        hidden = F.normalize(head.mlp(x), dim=-1)
        return hidden @ (gain * direction / direction.norm(dim=1, keepdim=True)).T

    with torch.no_grad():
        first = head(features)
        torch.testing.assert_close(first, restated(features), **TOL)
        direction.mul_(0.5).add_(0.1)  # an in-place update, as the EMA does
        torch.testing.assert_close(head(features), restated(features), **TOL)
        assert not torch.allclose(head(features), first)
        state = {k: v.clone() for k, v in head.state_dict().items()}
        state["last_layer.parametrizations.weight.original0"].fill_(2.0)
        head.load_state_dict(state)
        torch.testing.assert_close(head(features), restated(features), **TOL)
    # with autograd the weight is rebuilt with its graph: gradients reach both g and v
    head(features).sum().backward()
    # ... equal to autograd through the restated g * v / ||v|| on copies of the same parameters
    gain_copy, direction_copy = gain.detach().clone().requires_grad_(True), direction.detach().clone().requires_grad_(True)
    hidden = F.normalize(head.mlp(features), dim=-1).detach()
    (hidden @ (gain_copy * direction_copy / direction_copy.norm(dim=1, keepdim=True)).T).sum().backward()
    assert gain_copy.grad.abs().max() > 1e-3 and direction_copy.grad.abs().max() > 1e-3
    torch.testing.assert_close(gain.grad, gain_copy.grad, **TOL)
    torch.testing.assert_close(direction.grad, direction_copy.grad, **TOL)


@pytest.mark.parametrize("implementation", ["auto", "fused", "foreach"])
def test_build_optimizer_matches_the_for_loop_adam(implementation):
    from types import SimpleNamespace

    training = SimpleNamespace(lr=1e-2, adam_betas=[0.9, 0.99], adam_eps=1e-8, weight_decay=0.01)
    torch.manual_seed(0)
    start = [torch.randn(33, 7), torch.randn(5)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(3)]
    results = []
    for name in (implementation, "for-loop"):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        optimizer = build_optimizer(params, training, implementation=name)
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = g.clone()
            optimizer.step()
        results.append(params)
        if name in ("auto", "fused"):
            assert optimizer.defaults["fused"] is True
    for fast, reference in zip(*results):
        torch.testing.assert_close(fast, reference, **TOL)
        assert not torch.equal(fast, start[0] if fast.ndim == 2 else start[1])
    with pytest.raises(ValueError, match="implementation"):
        build_optimizer(results[0], training, implementation="lamb")


def test_reuse_large_allocations_stops_page_faults_on_reallocation(monkeypatch):
    from snd.runtime import reuse_large_allocations

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert reuse_large_allocations() is False  # the user's glibc setting wins
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    if not reuse_large_allocations():
        pytest.skip("not glibc")
    size = 48 * 2**20 // 4  # 48 MiB: above glibc's largest adaptive mmap threshold (32 MiB)
    torch.ones(size)  # allocated and freed: the heap now holds the block
    counts = []
    for _ in range(3):  # the least of three: the heap may still grow once after earlier tests' allocations
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(size)
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    assert min(counts) < 1000, f"{counts} minor faults re-allocating 48 MiB (a fresh mmap costs ~12k each time)"


def test_default_cpu_threads_respects_the_users_choice(monkeypatch):
    from snd.runtime import default_cpu_threads

    previous = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        torch.set_num_threads(2)
        assert default_cpu_threads("cpu") is None and torch.get_num_threads() == 2
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert default_cpu_threads("meta") is None and torch.get_num_threads() == 2  # not a CPU run: untouched
        assert default_cpu_threads("cpu") == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)
