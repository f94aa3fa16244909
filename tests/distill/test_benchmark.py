"""scripts/benchmark.py train (snd.benchmarks.train): every stage of the step is timed (no timing asserted)."""

import json

from snd.benchmarks.train import STAGES, main


def test_train_benchmark_reports_every_stage(tmp_path, capsys):
    output = tmp_path / "train.json"
    overrides = ["data.image_height=28", "data.image_width=42", "data.num_scenes=1", "data.num_frames=10", "data.max_gap=9", "head.num_prototypes=64"]
    argv = ["--settings", "tiny", "--steps", "1", "--warmup", "0", "--output", str(output)]
    for override in overrides:
        argv += ["--set", override]
    assert main(argv) == 0
    (result,) = json.loads(output.read_text())
    assert set(result["stages"]) == set(STAGES) | {"total"}
    assert all(values["median_ms"] > 0 and values["peak_mib"] >= 0 for values in result["stages"].values())
    assert result["image"] == [28, 42] and result["prototypes"] == 64
    stages = result["stages"]
    assert all(values["cpu_ms"] > 0 and values["minor_faults"] >= 0 for values in stages.values())
    assert result["hardware"]["flops_per_s"] > 0 and result["hardware"]["bytes_per_s"] > 0
    # FLOPs counted in the stages that multiply matrices, least bytes for the memory-bound ones, bound = their max
    assert stages["student"]["gflop"] > 0 and stages["blend"]["min_mb"] > 0 and stages["data"]["gap"] is None
    blend_bound = 1000 * max(stages["blend"]["gflop"] * 1e9 / result["hardware"]["flops_per_s"], stages["blend"]["min_mb"] * 1e6 / result["hardware"]["bytes_per_s"])
    assert abs(stages["blend"]["bound_ms"] - blend_bound) < 1e-6 * max(1.0, blend_bound)
    output = capsys.readouterr().out
    assert "| render |" in output and "gap (CPU / bound)" in output


def test_settings_start_from_the_named_config():
    """``default`` is the embedded default (nano-2d); ``tiny`` and ``vits224`` build random students, which a
    ``model.preset`` only does with no ``model.pretrained`` (over nano-2d it would be ignored)."""
    from snd.benchmarks.train import SETTINGS
    from snd.distill import load_config

    configs = {name: load_config(base, overrides) for name, (base, overrides) in SETTINGS.items()}
    assert configs["default"] == load_config()
    assert configs["tiny"] == load_config("tiny_synthetic")
    assert configs["vits224"].model.pretrained is None and configs["vits224"].model.preset == "dinov2-s"


def test_train_benchmark_counts_faults_and_peak_memory_inside_each_stage(tmp_path, monkeypatch):
    """The fault counter and the RSS sampler replaced by fakes that move only inside the optimiser step (+1000 faults,
    a 7 MiB transient): the optimiser stage reports exactly those, every other stage 0 faults and 0 MiB, the total
    1000 faults (restating: a stage's faults are the counter's change over it, its peak the sampler's)."""
    import torch

    from snd.benchmarks import train as benchmark

    fake = {"faults": 0, "rss": 0, "max": 0}

    class FakeRSSPeak:
        def __init__(self, interval: float = 0.001) -> None:
            self.start = fake["max"] = fake["rss"]

        def stop(self) -> float:
            return fake["max"] - self.start

    real_step = torch.optim.Adam.step

    def step_with_faults(self, *args, **kwargs):
        fake["faults"] += 1000
        fake["rss"] += 7 * 2**20
        fake["max"] = max(fake["max"], fake["rss"])
        fake["rss"] -= 7 * 2**20
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(benchmark, "_minor_faults", lambda: fake["faults"])
    monkeypatch.setattr(benchmark, "_RSSPeak", FakeRSSPeak)
    monkeypatch.setattr(torch.optim.Adam, "step", step_with_faults)
    output = tmp_path / "train.json"
    argv = ["--settings", "tiny", "--steps", "1", "--warmup", "0", "--output", str(output)]
    for override in ["data.image_height=28", "data.image_width=42", "data.num_scenes=1", "data.num_frames=10", "data.max_gap=9", "head.num_prototypes=64"]:
        argv += ["--set", override]
    assert benchmark.main(argv) == 0
    (result,) = json.loads(output.read_text())
    stages = result["stages"]
    assert stages["optimizer"]["minor_faults"] == 1000 and stages["total"]["minor_faults"] == 1000
    assert stages["optimizer"]["peak_mib"] == 7.0
    for name, values in stages.items():
        if name not in ("optimizer", "total"):
            assert values["minor_faults"] == 0 and values["peak_mib"] == 0.0, name
