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
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=300)
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
