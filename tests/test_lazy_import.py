"""``import snd`` stays light (issue 15): no model, image-processing or plotting stack until used, while
the Auto classes still resolve snd's saved models, image processor and MVSplat in a fresh process."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from snd.models.mvsplat import MVSplatConfig
from snd.models.snd_dinov2 import SnDConfig, SnDImageProcessor, SnDModel

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
# the checkout's own src (a worktree or second clone must not test another checkout's editable install)
ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": SRC}

HEAVY = ["transformers.modeling_utils", "transformers.image_processing_utils", "snd.models.snd_dinov2.modeling_snd_dinov2", "matplotlib", "snd.data", "snd.distill"]


@pytest.mark.parametrize("first", ["auto", "module"])  # transformers' auto module first, or snd's processor module first
def test_import_snd_is_light_and_auto_classes_still_resolve(tmp_path, first):
    SnDModel(SnDConfig.tiny()).save_pretrained(tmp_path / "snd")
    SnDImageProcessor().save_pretrained(tmp_path / "snd")
    MVSplatConfig().save_pretrained(tmp_path / "mvsplat")
    assert json.loads((tmp_path / "snd" / "preprocessor_config.json").read_text())["auto_map"]["AutoImageProcessor"].endswith("SnDImageProcessor")
    script = textwrap.dedent(
        f"""
        import sys
        import snd
        heavy = [name for name in {HEAVY!r} if name in sys.modules]
        assert not heavy, f"import snd loaded {{heavy}}"
        assert snd.SnDConfig.model_type == "snd_dinov2" and "transformers.modeling_utils" not in sys.modules
        if {first!r} == "module":
            # importing the image stack inside snd's processor module runs the registration hook before the class exists
            import snd.models.snd_dinov2.image_processing_snd_dinov2
            import snd.models.mvsplat.modeling_mvsplat
        from transformers import AutoBackbone, AutoConfig, AutoImageProcessor, AutoModel
        processor = AutoImageProcessor.from_pretrained({str(tmp_path / "snd")!r}, backend="pil")
        assert type(processor).__name__ == "SnDImageProcessor" and type(processor).__module__.startswith("snd."), type(processor)
        # no backend: transformers' default, the torchvision class where torchvision is installed
        from transformers.utils import is_torchvision_available
        default = "SnDImageProcessorTorchvision" if is_torchvision_available() else "SnDImageProcessor"
        assert type(AutoImageProcessor.from_pretrained({str(tmp_path / "snd")!r})) is getattr(snd, default)
        model = AutoModel.from_pretrained({str(tmp_path / "snd")!r})
        assert type(model) is snd.SnDModel, type(model)
        assert type(AutoBackbone.from_config(AutoConfig.from_pretrained({str(tmp_path / "snd")!r}))).__name__ == "SnDBackbone"
        assert type(AutoModel.from_config(AutoConfig.from_pretrained({str(tmp_path / "mvsplat")!r}))).__name__ == "MVSplatModel"
        assert snd.SnDModel._auto_class == "AutoModel" and snd.SnDImageProcessor._auto_class == "AutoImageProcessor"
        assert snd.models.snd_dinov2.modeling_snd_dinov2.SnDModel is snd.SnDModel  # submodules as attributes
        try:
            snd.NoSuchName
        except AttributeError as error:
            assert "NoSuchName" in str(error)
        else:
            raise AssertionError("snd.NoSuchName did not raise")
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENVIRONMENT, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_readme_export_path_works_right_after_import_snd():
    """README: `snd.models.export.export_program(model)` after a bare `import snd` (a fresh process, this checkout)."""
    script = textwrap.dedent(
        """
        import sys
        import snd
        assert "snd.models.export" not in sys.modules
        program, names = snd.models.export.export_program(snd.SnDModel(snd.SnDConfig.tiny()))
        assert names == ["last_hidden_state", "pooler_output", "patch_features"], names
        try:
            snd.models.no_such_module
        except AttributeError as error:
            assert "no_such_module" in str(error)
        else:
            raise AssertionError("snd.models.no_such_module did not raise")
        print("ok")
        """
    )
    source = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": source}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


@pytest.mark.parametrize("statement", [
    "from transformers import Dinov2Model",  # transformers.modeling_layers imports the auto module half-way through
    "from transformers import Dinov2Backbone",
    "import transformers.models.dinov2.modeling_dinov2",
])
def test_importing_a_transformers_model_after_snd_registers_quietly(statement):
    """The registration hook fires while transformers.modeling_layers is half-imported (a circular import of
    transformers' own); snd's model module cannot import from it yet. It must wait, not log a traceback, and still
    register every class by the time the user's import returns."""
    script = textwrap.dedent(
        f"""
        import snd
        {statement}
        from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING, MODEL_MAPPING
        names = {{config.__name__: model.__name__ for config, model in MODEL_MAPPING._extra_content.items()}}
        backbones = {{config.__name__: model.__name__ for config, model in MODEL_FOR_BACKBONE_MAPPING._extra_content.items()}}
        assert names.get("SnDConfig") == "SnDModel" and names.get("MVSplatConfig") == "MVSplatModel", names
        assert backbones.get("SnDConfig") == "SnDBackbone", backbones
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENVIRONMENT, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
    assert "failed" not in result.stderr and "Traceback" not in result.stderr, result.stderr[-3000:]
