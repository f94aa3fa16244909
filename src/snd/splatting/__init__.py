"""Feature splatting: alpha-composite D-channel Gaussian features into any camera in one pass.

``render_features`` takes gsplat ``rasterization`` arguments; ``render_gaussians`` takes snd's
``Gaussians`` and cameras (camera-to-world OpenCV, normalised intrinsics). CUDA tensors go through
gsplat, everything else through a pure-PyTorch twin with gsplat's classic semantics.
"""

from .render import BACKENDS, RenderOutput, render_features, render_gaussians  # noqa: F401

__all__ = ["BACKENDS", "RenderOutput", "render_features", "render_gaussians"]
