"""transformers' own common tests (`ModelTesterMixin`, `BackboneTesterMixin`, `ConfigTester`, the image-processing
mixins) run on `SnDModel`, `SnDBackbone`, `SnDForDepthEstimation`, `SnDForSemanticSegmentation` and
`SnDImageProcessor`, the way transformers tests Dinov2 (tests/models/dinov2/test_modeling_dinov2.py): tiny config
(hidden 32, 2 layers, 30 px images, patch 2).

The mixins are the installed transformers version's, from its sdist (`tests/models/_transformers_mixins.py`:
fetched once into a cache folder; the module skips with the reason when that is impossible, e.g. offline).

The `*Dinov2Reference*` classes (marked slow) run the same mixins on transformers' `Dinov2Model`, `Dinov2Backbone`
and its image processors (Bit) with the same sizes, to tell which failures are the mixins' own. With transformers
5.25.0 (CPU, no torchvision, RUN_SLOW=1), per test method:

    model tests      SnD (4 classes)  95 passed, 68 skipped | Dinov2 (2 classes) 98 passed, 64 skipped, 1 failed
    backbone tests   SnD               8 passed             | Dinov2              8 passed
    image processor  SnD              21 passed,  9 skipped | Dinov2 (Bit)       19 passed,  9 skipped

Dinov2's one failure, `test_reverse_loading_mapping` (its SwiGLU conversion pattern matches no key of a tiny
config), is skipped in its reference class; SnD has no conversion mapping, so the mixin skips it there. SnD skips,
where Dinov2 passes, only what the mixins skip themselves: the two tests of transformers' output-capturing hooks
(`capture_outputs` / `_can_record_outputs`, which SnD's forward does not use: it collects hidden states and
attentions itself) and `test_can_load_from_already_mapped_keys` (no conversion mapping). The rest of the skips are
the same for both (CUDA, flash-attention, multi-device, slow-only, no inputs_embeds...). Not run at all: the
torch.export tests of `ExportTesterMixin` (not in the sdist; SnD's export is tested in test_snd_dinov2_transformers)
and the torchvision image-processor backend where torchvision is not installed.

With torchvision (a separate venv, `scripts/check_torchvision_backend.sh`: torch 2.14.1 + torchvision 0.29.1),
`HF_HUB_OFFLINE=1 RUN_SLOW=1`, the image-processor mixin also runs the torchvision backend (backend equivalence,
save/load across backends, `test_new_models_require_torchvision_backend`...): SnD 26 passed, 3 skipped, 1 failed |
Dinov2 (Bit) 23 passed, 4 skipped, 1 failed; the failure on both sides is `test_backends_equivalence`, which
downloads a COCO image (offline there). The model and backbone counts are the same as without torchvision.
"""

from __future__ import annotations

import functools
import os
import pickle
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.models import _transformers_mixins as mixins

try:
    modeling_common = mixins.load("test_modeling_common")
    backbone_common = mixins.load("test_backbone_common")
    configuration_common = mixins.load("test_configuration_common")
    image_processing_common = mixins.load("test_image_processing_common")
except mixins.MixinsUnavailable as error:
    pytest.skip(f"transformers' common test mixins unavailable: {error}", allow_module_level=True)

from transformers import BitImageProcessor, BitImageProcessorPil, Dinov2Backbone, Dinov2Config, Dinov2Model  # noqa: E402
from transformers.modeling_outputs import SemanticSegmenterOutput  # noqa: E402
from transformers.utils import is_torchvision_available  # noqa: E402

from snd import (  # noqa: E402
    SnDBackbone,
    SnDConfig,
    SnDForDepthEstimation,
    SnDForSemanticSegmentation,
    SnDImageProcessor,
    SnDImageProcessorTorchvision,
    SnDModel,
)

ModelTesterMixin = modeling_common.ModelTesterMixin
BackboneTesterMixin = backbone_common.BackboneTesterMixin
ConfigTester = configuration_common.ConfigTester
floats_tensor = modeling_common.floats_tensor


class SnDModelTester:
    """Dinov2ModelTester's sizes and inputs, for SnD's config."""

    def __init__(self, parent, config_class=SnDConfig, batch_size=4, image_size=30, patch_size=2, num_channels=3,
                 hidden_size=32, num_hidden_layers=2, num_attention_heads=4, is_training=True, **config_kwargs):  # fmt: skip
        self.parent = parent
        self.config_class = config_class
        self.batch_size = batch_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.is_training = is_training
        self.config_kwargs = config_kwargs
        num_patches = (image_size // patch_size) ** 2
        self.seq_length = num_patches + 1  # + CLS
        self.mask_length = num_patches  # bool_masked_pos covers the patches
        self.num_masks = int(0.5 * self.seq_length)

    def get_config(self):
        return self.config_class(
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_channels=self.num_channels,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            attn_implementation="eager",
            **self.config_kwargs,
        )

    def prepare_config_and_inputs_for_common(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        return self.get_config(), {"pixel_values": pixel_values}


class _Common:
    """What Dinov2ModelTest overrides or skips, shared by the SnD and the Dinov2 reference test cases."""

    test_resize_embeddings = False
    test_torch_exportable = True

    def test_config(self):
        self.config_tester.run_common_tests()

    @unittest.skip(reason="vision model: no inputs_embeds (as Dinov2ModelTest)")
    def test_inputs_embeds(self):
        pass

    @unittest.skip(reason="vision model: no inputs_embeds (Dinov2 skips it too)")
    def test_inputs_embeds_matches_input_ids(self):
        pass

    @unittest.skip(reason="no feed-forward chunking (as Dinov2ModelTest)")
    def test_feed_forward_chunking(self):
        pass

    def test_model_get_set_embeddings(self):  # as Dinov2ModelTest: no output embeddings, input ones are a Module
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIsInstance(model.get_input_embeddings(), torch.nn.Module)
            output = model.get_output_embeddings()
            self.assertTrue(output is None or isinstance(output, torch.nn.Linear))


_TASK_MODELS = (SnDForDepthEstimation, SnDForSemanticSegmentation)


class SnDModelTest(_Common, ModelTesterMixin, unittest.TestCase):
    all_model_classes = (SnDModel, SnDBackbone, *_TASK_MODELS)
    # The embeddings' mask_token only takes part with bool_masked_pos, so it has no gradient in a training step
    # (Dinov2ModelTest skips the gradient-checkpointing tests altogether; here they run, less this one check).
    test_all_params_have_gradient = False
    # The mixin runs this only for models whose config file carries a copyright year >= 2023 (snd's carry none).
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        self.model_tester = SnDModelTester(self)
        self.config_tester = ConfigTester(
            self, config_class=SnDConfig, has_text_modality=False, hidden_size=36, num_attention_heads=6
        )

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels:
            batch, _, height, width = inputs_dict["pixel_values"].shape
            if model_class is SnDForSemanticSegmentation:
                inputs_dict["labels"] = torch.zeros(batch, height, width, dtype=torch.long)
            elif model_class is SnDForDepthEstimation:  # metres, the same on every call
                inputs_dict["labels"] = torch.linspace(0.5, 5.0, batch * height * width).reshape(batch, height, width)
        return inputs_dict

    # The mixins tell base models (no loss) from task models by transformers' own Auto mappings, which list
    # Dinov2Model but not SnDModel: the training tests run on the task models only, as they do for Dinov2.
    def test_training(self):
        self.all_model_classes = _TASK_MODELS
        super().test_training()

    def check_training_gradient_checkpointing(self, gradient_checkpointing_kwargs=None):
        self.all_model_classes = _TASK_MODELS
        super().check_training_gradient_checkpointing(gradient_checkpointing_kwargs)


def _marked_slow(function):
    @functools.wraps(function)
    def test(self, *args, **kwargs):
        return function(self, *args, **kwargs)

    return pytest.mark.slow(test)


# eager vs sdpa in float16 on the CPU: ~2 s each of the 8 (float32 and bfloat16 stay in the quick suite)
for _name in [name for name in dir(SnDModelTest) if name.startswith("test_eager_matches_sdpa_inference_") and "fp16" in name]:
    setattr(SnDModelTest, _name, _marked_slow(getattr(SnDModelTest, _name)))


class SnDBackboneTest(BackboneTesterMixin, unittest.TestCase):
    all_model_classes = (SnDBackbone,)
    config_class = SnDConfig
    has_attentions = False  # as Dinov2BackboneTest

    def setUp(self):
        self.model_tester = SnDModelTester(self)


@pytest.mark.slow
class Dinov2ReferenceModelTest(_Common, ModelTesterMixin, unittest.TestCase):
    all_model_classes = (Dinov2Model, Dinov2Backbone)

    def setUp(self):
        self.model_tester = SnDModelTester(self, config_class=Dinov2Config)
        self.config_tester = ConfigTester(self, config_class=Dinov2Config, has_text_modality=False, hidden_size=37)

    @unittest.skip(
        reason="fails for Dinov2 itself: its conversion mapping's `mlp.weights_in` (SwiGLU) matches no key of a "
        "non-SwiGLU config (SnD has no conversion mapping: the mixin skips it there)"
    )
    def test_reverse_loading_mapping(self):
        pass


@pytest.mark.slow
class Dinov2ReferenceBackboneTest(BackboneTesterMixin, unittest.TestCase):
    all_model_classes = (Dinov2Backbone,)
    config_class = Dinov2Config
    has_attentions = False

    def setUp(self):
        self.model_tester = SnDModelTester(self, config_class=Dinov2Config)


class SnDImageProcessingTester(image_processing_common.ImageProcessingTester):
    """Small images through a resize-and-crop that keeps them small (the mixin draws 30 to 400 px images)."""

    def __init__(self, parent, backends, **kwargs):
        self.backends = backends
        kwargs.setdefault("size", {"shortest_edge": 20})
        kwargs.setdefault("crop_size", {"height": 18, "width": 18})
        kwargs.setdefault("num_labels", 3)
        super().__init__(parent, batch_size=7, num_channels=3, min_resolution=30, max_resolution=80, **kwargs)

    def _get_image_processing_classes(self):
        # The mixin looks the classes up by the test file's folder name in transformers' own mapping.
        return dict(self.backends)

    def prepare_post_process_semantic_segmentation_inputs(self):
        height, width = self.crop_size["height"], self.crop_size["width"]
        logits = torch.randn(self.batch_size, self.num_labels, height, width)
        return {"outputs": SemanticSegmenterOutput(logits=logits)}, {
            "num_labels": self.num_labels, "height": height, "width": width
        }


_SND_PROCESSORS = {"pil": SnDImageProcessor}
if is_torchvision_available():
    _SND_PROCESSORS["torchvision"] = SnDImageProcessorTorchvision


class SnDImageProcessingTest(
    image_processing_common.ImageProcessingTestMixin,
    image_processing_common.PostProcessSemanticSegmentationTestMixin,
    unittest.TestCase,
):
    def setUp(self):
        self.image_processor_tester = SnDImageProcessingTester(self, _SND_PROCESSORS)

    def test_new_models_require_torchvision_backend(self):
        if "torchvision" not in self.image_processing_classes:
            self.skipTest(
                "torchvision is not installed: SnDImageProcessorTorchvision (the torchvision backend) is registered "
                "only where it is (snd does not depend on torchvision: a wheel not matching the CPU torch breaks imports)"
            )
        super().test_new_models_require_torchvision_backend()

    @pytest.mark.slow  # a Python subprocess; transformers marks it slow too
    def test_pil_can_run_without_torchvision(self):
        """The mixin's check with `import snd` in its subprocess: there, a folder saved by a model that lives outside
        transformers loads through AutoImageProcessor once its package has registered it (without, only as remote
        code, which the mixin's script does not allow)."""
        processor = SnDImageProcessor(**self.image_processor_dict)
        inputs = self.image_processor_tester.prepare_processor_inputs(equal_resolution=False)
        expected = processor(**inputs, return_tensors=None)
        script = (
            "import pickle, sys\n"
            "sys.modules['torchvision'] = None\n"
            "import snd\n"
            "from transformers import AutoImageProcessor\n"
            "folder, inputs, outputs = sys.argv[1:]\n"
            "processor = AutoImageProcessor.from_pretrained(folder, backend='pil')\n"
            "assert type(processor).__name__ == 'SnDImageProcessor', type(processor)\n"
            "result = processor(**pickle.load(open(inputs, 'rb')), return_tensors=None)\n"
            "pickle.dump(result.data, open(outputs, 'wb'))\n"
        )
        root = Path(__file__).resolve().parents[2]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "src"), str(root)]))
        with tempfile.TemporaryDirectory() as folder:
            processor.save_pretrained(folder)
            with open(os.path.join(folder, "inputs.pkl"), "wb") as file:
                pickle.dump(inputs, file)
            done = subprocess.run(
                [sys.executable, "-c", script, folder, *(os.path.join(folder, f"{n}.pkl") for n in ("inputs", "outputs"))],
                capture_output=True, text=True, env=env,
            )  # fmt: skip
            self.assertEqual(done.returncode, 0, done.stderr)
            with open(os.path.join(folder, "outputs.pkl"), "rb") as file:
                outputs = pickle.load(file)
        np.testing.assert_equal(outputs, expected.data)


@pytest.mark.slow
class Dinov2ReferenceImageProcessingTest(image_processing_common.ImageProcessingTestMixin, unittest.TestCase):
    """Dinov2's processors (BitImageProcessor / BitImageProcessorPil) through the same mixin and sizes."""

    def setUp(self):
        backends = {"pil": BitImageProcessorPil}
        if is_torchvision_available():
            backends["torchvision"] = BitImageProcessor
        self.image_processor_tester = SnDImageProcessingTester(self, backends)

    @unittest.skip(reason="Bit (Dinov2's processor) is on the mixin's list of models exempt from it")
    def test_new_models_require_torchvision_backend(self):
        pass
