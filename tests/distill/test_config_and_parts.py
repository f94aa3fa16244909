"""Config loading/validation, the schedule, data order, checkpoint bookkeeping and LoRA merging."""

import pytest
import torch

from snd.distill import ConfigError, DistillConfig, load_config, preset_names
from snd.distill.checkpoints import checkpoint_dir, list_checkpoints, resolve_resume, write_checkpoint_marker
from snd.distill.config import apply_overrides, config_from_dict, dotted_flags_to_overrides
from snd.distill.trainer import ShardedEpochBatchSampler, one_cycle_factor


def test_presets_load_and_say_what_they_are():
    assert {"default", "tiny_synthetic", "scannetpp_dinov2s", "scannetpp_dinov2b", "scannetpp_dinov2s_no_blending",
            "scannetpp_dinov2b_no_blending"} <= set(preset_names())
    default = load_config()
    assert default.data.dataset == "synthetic" and default.lifter.kind == "depth" and default.model.pretrained == "nano-2d"
    assert load_config("default") == default
    tiny = load_config("tiny_synthetic")  # the embedded default before nano-2d shipped: a tiny random student
    assert tiny.data.dataset == "synthetic" and tiny.lifter.kind == "depth" and tiny.model.pretrained is None
    assert tiny.model.preset == "tiny" and (tiny.data.image_height, tiny.data.image_width) == (42, 56)
    paper = load_config("scannetpp_dinov2s")
    assert (paper.data.image_height, paper.data.image_width, paper.training.batch_size, paper.training.max_steps) == (576, 880, 14, 300001)
    assert paper.lifter.kind == "mvsplat" and paper.head.num_prototypes == 65536 and paper.teacher.blend_alpha == 0.5
    assert load_config("scannetpp_dinov2b_no_blending").teacher.blend_alpha == 1.0
    assert load_config("scannetpp_dinov2b").model.pretrained == "facebook/dinov2-base"


def test_embedded_default_distils_the_shipped_nano_2d_backbone():
    """No arguments: full fine-tuning of the shipped 2D-pretrained nano ViT (patch 8) at 64 x 80 (an 8 x 10 grid),
    loaded from the package folder (offline), not a random model."""
    from safetensors.torch import load_file

    import snd.assets
    from snd.distill.build import build_student

    config = load_config()
    assert config.model.pretrained == "nano-2d" and config.model.finetune == "full"
    assert config.teacher.target == "splat" and config.lifter.kind == "depth"
    assert config.data.image_height % 8 == 0 and config.data.image_width % 8 == 0
    folder = snd.assets.path("nano-2d")
    assert snd.assets.resolve(config.model.pretrained) == str(folder)
    student = build_student(config)
    assert student.patch_size == 8 and student.backbone.config.patch_size == 8
    assert type(student.backbone).__name__ == "SnDModel"
    shipped = load_file(str(folder / "model.safetensors"))
    state = student.backbone.state_dict()
    assert shipped and shipped.keys() <= state.keys()
    for name, value in shipped.items():
        assert torch.equal(state[name], value), name
    trainable = [name for name, p in student.backbone.named_parameters() if p.requires_grad]
    assert trainable and not any("lora_" in name for name in trainable)  # full fine-tuning, no LoRA wrapper


def test_overrides_from_set_and_dotted_flags(tmp_path):
    overrides = dotted_flags_to_overrides(["--training.lr", "1e-4", "--data.image_width=70", "--model.lora_target_modules", "[qkv]"])
    assert overrides == ["training.lr=1e-4", "data.image_width=70", "model.lora_target_modules=[qkv]"]
    config = load_config("default", overrides + ["teacher.blend_alpha=1.0"])
    assert config.training.lr == 1e-4 and isinstance(config.training.lr, float)
    assert config.data.image_width == 70 and config.model.lora_target_modules == ["qkv"] and config.teacher.blend_alpha == 1.0
    # a YAML file round-trips through to_yaml
    path = tmp_path / "run.yaml"
    path.write_text(config.to_yaml())
    assert load_config(str(path)) == config
    with pytest.raises(ConfigError, match="section.key"):
        apply_overrides({}, ["lr=1"])
    with pytest.raises(ConfigError, match="unrecognised argument"):
        dotted_flags_to_overrides(["--lr", "1"])


@pytest.mark.parametrize(
    "values, message",
    [
        ({"training": {"lr": "fast"}}, "training.lr: expected float"),
        ({"training": {"max_steps": 0}}, "training.max_steps must be > 0"),
        ({"teacher": {"blend_alpha": 1.5}}, "teacher.blend_alpha"),
        ({"teacher": {"upsample": "nearest"}}, "teacher.upsample must be one of"),
        ({"head": {"prototypes": 3}}, "unknown key(s) ['prototypes']"),
        ({"data": {"dataset": "scannetpp", "root": None}, "lifter": {"kind": "depth"}}, "data.root is required"),
        ({"data": {"dataset": "synthetic"}, "lifter": {"kind": "mvsplat"}}, "lifter.checkpoint is required"),
        ({"training": {"batch_size": True}}, "training.batch_size: expected int"),
        ({"data": {"dataset": "re10k", "root": "/data"}, "lifter": {"kind": "depth"}}, "RealEstate10K does not have"),
    ],
)
def test_validation_names_the_field(values, message):
    base = {"data": {"dataset": "synthetic"}, "lifter": {"kind": "depth"}}
    merged = {**base, **{k: {**base.get(k, {}), **v} for k, v in values.items()}}
    with pytest.raises(ConfigError) as error:
        config_from_dict(merged, "test.yaml")
    assert message in str(error.value) and "test.yaml" in str(error.value)


def test_bad_yaml_file_is_named(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(str(path))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))


def test_one_cycle_factor_matches_torch_one_cycle():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([parameter], lr=2e-5)
    total = 1001
    reference = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-5, total_steps=total, pct_start=0.01, anneal_strategy="cos", cycle_momentum=False)
    for step in range(total):
        assert one_cycle_factor(step, total, 0.01) * 2e-5 == pytest.approx(reference.get_last_lr()[0], rel=1e-9, abs=1e-15)
        optimizer.step()
        reference.step() if step < total - 1 else None
    assert one_cycle_factor(0, 2, 0.01) == 1.0  # too short to warm up: start at the peak


def test_sharded_batches_are_a_partition_and_reproducible():
    single = ShardedEpochBatchSampler(10, batch_size=2, num_processes=1, seed=4)
    shards = [ShardedEpochBatchSampler(10, batch_size=1, num_processes=2, process_index=r, seed=4) for r in range(2)]
    for epoch in range(2):
        single.set_epoch(epoch)
        for shard in shards:
            shard.set_epoch(epoch)
        global_batches = list(single)
        per_rank = [list(shard) for shard in shards]
        assert len(global_batches) == 5
        assert [a + b for a, b in zip(*per_rank)] == global_batches
        assert sorted(i for batch in global_batches for i in batch) == list(range(10))
    single.set_epoch(1, start_batch=3)
    full = ShardedEpochBatchSampler(10, batch_size=2, seed=4)
    full.set_epoch(1)
    assert list(single) == list(full)[3:]
    first = ShardedEpochBatchSampler(10, batch_size=2, seed=4)
    first.set_epoch(0)
    assert list(first) != list(full)  # epochs reshuffle
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ShardedEpochBatchSampler(3, batch_size=2, num_processes=2)


def test_latest_checkpoint_ignores_incomplete_saves(tmp_path):
    assert resolve_resume(tmp_path, "latest") is None
    for step in (5, 10):
        path = checkpoint_dir(tmp_path, step)
        path.mkdir(parents=True)
        (path / "model.safetensors").write_bytes(b"weights")
        write_checkpoint_marker(path, step)
    # a save killed half way: the temporary directory, and a final-looking directory without the marker
    (tmp_path / "checkpoints" / ".tmp-checkpoint-00000015").mkdir()
    checkpoint_dir(tmp_path, 20).mkdir()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [5, 10]
    assert resolve_resume(tmp_path, "latest") == checkpoint_dir(tmp_path, 10)
    assert resolve_resume(tmp_path, str(checkpoint_dir(tmp_path, 5))) == checkpoint_dir(tmp_path, 5)
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        resolve_resume(tmp_path, str(checkpoint_dir(tmp_path, 20)))


def test_lora_merge_gives_the_adapted_model():
    from snd import SnDConfig, SnDModel
    from snd.distill.build import apply_finetuning, merged_backbone
    from snd.distill.config import ModelConfig

    base = SnDModel(SnDConfig.tiny())
    adapted = apply_finetuning(base, ModelConfig(finetune="lora", lora_rank=2, lora_dropout=0.0))
    trainable = {name for name, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert any(".qkv." in name for name in trainable) and any(".proj." in name for name in trainable)
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    pixels = torch.randn(1, 3, 28, 42)
    adapted.eval()
    expected = adapted(pixel_values=pixels).patch_features
    merged = merged_backbone(adapted)
    assert type(merged).__name__ == "SnDModel"
    assert not any("lora" in name for name in merged.state_dict())
    torch.testing.assert_close(merged(pixel_values=pixels).patch_features, expected, atol=1e-5, rtol=1e-5)
    assert any("lora_B" in name for name, _ in adapted.named_parameters()), "merging must not modify the training model"


def test_default_dataclass_is_the_paper_setting():
    config = DistillConfig()
    assert (config.training.lr, config.training.batch_size, config.teacher.momentum, config.teacher.update_every) == (2e-5, 14, 0.999, 10)
    assert (config.model.lora_rank, config.model.lora_alpha, config.model.lora_dropout) == (8, 8.0, 0.1)


def test_student_initialises_from_a_saved_checkpoint(tmp_path):
    from snd import SnDConfig, SnDModel
    from snd.distill.build import load_backbone
    from snd.distill.config import ModelConfig

    torch.manual_seed(1)
    original = SnDModel(SnDConfig.tiny())
    original.save_pretrained(tmp_path / "tiny")
    loaded = load_backbone(ModelConfig(pretrained=str(tmp_path / "tiny")))
    for name, value in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)
    random = load_backbone(ModelConfig(pretrained=None, preset="tiny", config_overrides={"num_hidden_layers": 1}))
    assert random.config.num_hidden_layers == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_backbone(ModelConfig(pretrained=str(tmp_path / "empty")))


def test_string_overrides_keep_their_text_and_whole_quotes_are_removed():
    from snd.distill.config import load_config

    config = load_config("tiny_synthetic", ["training.output_dir=runs/a #2", 'model.finetune="lora"',
                                            "training.hub_model_id='me/x #1'", "training.report_to=none"])
    assert config.training.output_dir == "runs/a #2"  # not cut at a YAML comment
    assert config.model.finetune == "lora"  # json.dumps-quoted, as scripts/gpu_check writes overrides
    assert config.training.hub_model_id == "me/x #1"
