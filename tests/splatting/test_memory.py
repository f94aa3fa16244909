"""Peak memory of the CPU renderer on a large scene, measured in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

GIB = 1 << 30

CHILD = textwrap.dedent(
    """
    import json, resource, sys, torch
    from snd.benchmarks.render import synthetic_lifted_scene
    from snd.splatting import render_features

    torch.set_num_threads(1)
    scene = synthetic_lifted_scene(100_000, 128, 128, 384, seed=0)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with torch.no_grad():
        out = render_features(**scene, backend="torch")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(dict(peak=peak, baseline=baseline, shape=list(out.renders.shape),
                          coverage=out.alphas.mean().item(), finite=bool(torch.isfinite(out.renders).all()))))
    """
)


def test_100k_gaussians_128px_384_channels_stay_under_4_gib():
    """A pixels x Gaussians tensor here would be 128*128 * 100k * 4 B = 6.1 GiB on its own."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shape"] == [1, 128, 128, 384]
    assert report["finite"] and report["coverage"] > 0.5  # the scene really covers the view
    assert report["peak"] < 4 * GIB, f"peak RSS {report['peak'] / GIB:.2f} GiB"
