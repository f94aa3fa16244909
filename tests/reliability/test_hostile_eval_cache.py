"""The evaluation feature cache is keyed by the weights, not only the model's name (issue 21 part 2): a model
retrained or replaced under the same name must never be evaluated on the features of the old one."""

from __future__ import annotations

import torch

import snd
from snd.eval.features import FeatureExtractor
from snd.eval.runner import EvaluationConfig, Evaluator, weights_fingerprint


class _Images:
    cache_key = "tiny-images"

    def __init__(self):
        self.images = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return {"image": self.images[index]}


def test_changed_weights_under_the_same_name_do_not_reuse_cached_features(tmp_path):
    evaluator = Evaluator(EvaluationConfig(output_dir=str(tmp_path), cache_features=True, progress=False))
    model = snd.SnDModel(snd.SnDConfig.tiny()).eval()
    dataset = _Images()
    first = evaluator._features("student", FeatureExtractor(model), dataset, {})
    again = evaluator._features("student", FeatureExtractor(model), dataset, {})
    torch.testing.assert_close(first.patches, again.patches)  # same weights: the cache is used
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.5)  # the model was retrained; its name did not change
    second = evaluator._features("student", FeatureExtractor(model), dataset, {})
    expected = FeatureExtractor(model)(dataset.images).patches
    torch.testing.assert_close(second.patches, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(first.patches, second.patches)
    assert len(list((tmp_path / "feature_cache" / "student").iterdir())) == 2  # one folder per weights fingerprint


def test_fingerprint_depends_on_values_names_and_class():
    model = snd.SnDModel(snd.SnDConfig.tiny())
    before = weights_fingerprint(model)
    assert weights_fingerprint(model) == before
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-3
    assert weights_fingerprint(model) != before
    assert weights_fingerprint(model, extra="resize=none") != weights_fingerprint(model)
