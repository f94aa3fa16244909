"""Procedural indoor scenes with exact ground truth, rendered by vectorised ray casting.

A scene is a box-shaped room (textured walls, floor and ceiling) holding a few textured boxes
(rotated about the vertical axis), spheres and upright cylinders that rest on the floor. A camera
moves along an elliptical arc inside the room, between the walls and the objects, always looking
at the objects. Every pixel's ray is intersected with every surface in closed form, so depth,
normals, instance masks, semantic classes and world points are exact (up to float32 rounding).

World frame: z up, floor at z = 0, room centred on the z axis. Cameras: OpenCV camera-to-world.
Shading is Lambertian (view-independent), so a surface point has the same colour in every view.

The layout (room, objects, textures, light, trajectory) is a pure function of ``(config.seed,
scene_index)``; rendering any subset of frames gives bit-identical results to rendering all of them.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..cameras import pixel_rays, project_points
from .sample import Views

__all__ = [
    "SEMANTIC_CLASSES",
    "SyntheticSceneConfig",
    "SyntheticScene",
    "SyntheticRender",
    "generate_scene",
]

SEMANTIC_CLASSES = ("wall", "floor", "ceiling", "box", "sphere", "cylinder")
WALL, FLOOR, CEILING, BOX, SPHERE, CYLINDER = range(len(SEMANTIC_CLASSES))
_EPS = 1e-4
_INF = float("inf")


@dataclass
class SyntheticSceneConfig:
    """How synthetic scenes look and how many there are.

    Args:
        num_scenes: scenes in a dataset. Default 8.
        num_frames: frames along each camera trajectory. Default 24.
        height, width: image size in pixels. Default 64 x 64.
        horizontal_fov_degrees: camera field of view across the width. Default 70.
        min_objects, max_objects: objects per scene (inclusive). Default 3 to 6.
        room_size_min, room_size_max: room extents (x, y, height) in metres. Default (4, 4, 2.6) to (7, 6, 3.2).
        arc_degrees: yaw swept by the camera over the trajectory. Default 100 (consecutive frames
            about 4 degrees apart at 24 frames, so views 8-12 frames apart still overlap strongly).
        camera_height: mean camera height in metres. Default 1.4.
        near, far: near/far planes reported with the views. Default 0.1 / 20.
        seed: base seed; scene ``i`` is drawn from ``(seed, i)``. Default 0.
        render_threads: torch intra-op threads while ray casting (restored afterwards); None keeps
            torch's setting. Default 1: each op is small, and on a shared CPU extra threads mostly
            wait (measured 4x slower with 2 threads than with 1 on a loaded 2-core machine).
    """

    num_scenes: int = 8
    num_frames: int = 24
    height: int = 64
    width: int = 64
    horizontal_fov_degrees: float = 70.0
    min_objects: int = 3
    max_objects: int = 6
    room_size_min: tuple[float, float, float] = (4.0, 4.0, 2.6)
    room_size_max: tuple[float, float, float] = (7.0, 6.0, 3.2)
    arc_degrees: float = 100.0
    camera_height: float = 1.4
    near: float = 0.1
    far: float = 20.0
    seed: int = 0
    render_threads: int | None = 1

    def __post_init__(self) -> None:
        for name in ("num_scenes", "num_frames", "height", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"SyntheticSceneConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.min_objects <= self.max_objects:
            raise ValueError(f"SyntheticSceneConfig needs 0 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if not 1 < self.horizontal_fov_degrees < 170:
            raise ValueError(f"SyntheticSceneConfig.horizontal_fov_degrees must be in (1, 170), got {self.horizontal_fov_degrees}")
        if any(lo > hi or lo <= 0 for lo, hi in zip(self.room_size_min, self.room_size_max)):
            raise ValueError("SyntheticSceneConfig.room_size_min must be positive and <= room_size_max")
        if not 0.5 < self.camera_height < min(self.room_size_min[2], self.room_size_max[2]) - 0.3:
            raise ValueError("SyntheticSceneConfig.camera_height must leave >= 0.3 m below the ceiling")
        self.room_size_min = tuple(float(v) for v in self.room_size_min)
        self.room_size_max = tuple(float(v) for v in self.room_size_max)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Texture:
    base: torch.Tensor  # [K, 3] base colour per instance
    waves: torch.Tensor  # [K, 3, 3] three wave vectors per instance (rad / m)
    phases: torch.Tensor  # [K, 3]
    amplitudes: torch.Tensor  # [K, 3, 3] colour amplitude of each wave
    checker: torch.Tensor  # [K] checker cells per metre (0: none)


@dataclass
class SyntheticRender:
    """Rendered frames of a synthetic scene: :class:`Views` plus exact world points of every pixel."""

    views: Views
    points: torch.Tensor  # [V, H, W, 3] world position of each pixel's surface point


@dataclass
class SyntheticScene:
    """A scene layout with its camera trajectory. Render frames with :meth:`render`."""

    name: str
    config: SyntheticSceneConfig
    room: torch.Tensor  # [3] extents (x, y, height)
    boxes: torch.Tensor  # [nb, 7] centre xyz, half extents xyz, yaw
    spheres: torch.Tensor  # [ns, 4] centre xyz, radius
    cylinders: torch.Tensor  # [nc, 5] base centre xyz, radius, height
    light: torch.Tensor  # [3] point light position
    texture: _Texture
    extrinsics: torch.Tensor  # [F, 4, 4] camera-to-world, OpenCV
    intrinsics: torch.Tensor  # [3, 3] normalised
    instance_classes: torch.Tensor = field(default=None)  # [K] semantic class of each instance id

    # Instance ids: 0-3 walls (-x, +x, -y, +y), 4 floor, 5 ceiling, then boxes, spheres, cylinders.
    def __post_init__(self) -> None:
        classes = [WALL] * 4 + [FLOOR, CEILING] + [BOX] * len(self.boxes) + [SPHERE] * len(self.spheres) + [CYLINDER] * len(self.cylinders)
        self.instance_classes = torch.tensor(classes, dtype=torch.int64)

    @property
    def num_frames(self) -> int:
        return self.extrinsics.shape[0]

    @property
    def num_instances(self) -> int:
        return int(self.instance_classes.numel())

    # ------------------------------------------------------------------ ray casting
    def cast(self, origins: torch.Tensor, directions: torch.Tensor):
        """First surface hit along rays ``origins + t * directions`` (t > 0).

        Args:
            origins: ``[R, 3]`` world ray origins (inside the room).
            directions: ``[R, 3]`` world directions (any length; ``t`` is in units of it).
        Returns:
            ``(t [R], normals [R, 3] world, unit, facing the ray origin, instance ids [R] int64)``.
        """
        candidates_t, candidates_n, candidates_id = [], [], []
        t, n, ids = _cast_room(origins, directions, self.room)
        candidates_t.append(t)
        candidates_n.append(n)
        candidates_id.append(ids)
        next_id = 6
        for caster, primitives in ((_cast_boxes, self.boxes), (_cast_spheres, self.spheres), (_cast_cylinders, self.cylinders)):
            if len(primitives):
                t, n = caster(origins, directions, primitives)  # [P, R], [P, R, 3]
                candidates_t.extend(t.unbind(0))
                candidates_n.extend(n.unbind(0))
                candidates_id.extend(torch.full_like(ids, next_id + i) for i in range(len(primitives)))
                next_id += len(primitives)
        all_t = torch.stack(candidates_t)  # [C, R]
        best = all_t.argmin(dim=0)  # [R]
        t = all_t.gather(0, best[None])[0]
        normals = torch.stack(candidates_n).gather(0, best[None, :, None].expand(1, -1, 3))[0]
        instance = torch.stack(candidates_id).gather(0, best[None])[0]
        return t, normals, instance

    def shade(self, points: torch.Tensor, normals: torch.Tensor, instance: torch.Tensor) -> torch.Tensor:
        """Lambertian colour ``[R, 3]`` in [0, 1] of surface points (view-independent)."""
        tex = self.texture
        waves = tex.waves[instance]  # [R, 3, 3]
        phase = (waves * points[:, None, :]).sum(-1) + tex.phases[instance]  # [R, 3]
        colour = tex.base[instance] + (torch.sin(phase)[:, :, None] * tex.amplitudes[instance]).sum(1)
        cells = tex.checker[instance]  # [R]
        parity = torch.floor(points * cells[:, None] + 1e-3).sum(-1).remainder(2)
        colour = colour * torch.where(cells > 0, 0.75 + 0.25 * parity, torch.ones_like(parity))[:, None]
        to_light = self.light - points
        distance = to_light.norm(dim=-1).clamp_min(1e-6)
        lambert = ((normals * to_light).sum(-1) / distance).clamp_min(0)
        falloff = 1.0 / (1.0 + 0.05 * distance**2)
        return (colour * (0.45 + 0.7 * lambert * falloff)[:, None]).clamp(0, 1)

    def camera_rays(self, frames: torch.Tensor):
        """World ray origins ``[V, 3]`` and directions ``[V, H, W, 3]`` with camera z-component 1."""
        cfg = self.config
        rays_camera = pixel_rays(self.intrinsics, cfg.height, cfg.width)  # [H, W, 3]
        extrinsics = self.extrinsics[frames]  # [V, 4, 4]
        directions = _apply(extrinsics[:, None, None, :3, :3], rays_camera[None])  # [V, H, W, 3]
        return extrinsics[:, :3, 3], directions

    def render(self, frames=None) -> SyntheticRender:
        """Render frames (default: all) into :class:`Views` with depth, normals, masks and semantics."""
        with _intra_op_threads(self.config.render_threads):
            return self._render(frames)

    def _render(self, frames) -> SyntheticRender:
        cfg = self.config
        frames = torch.arange(self.num_frames) if frames is None else torch.as_tensor(frames, dtype=torch.long).reshape(-1)
        if len(frames) and (frames.min() < 0 or frames.max() >= self.num_frames):
            raise IndexError(f"scene {self.name!r} has frames 0..{self.num_frames - 1}, asked for {frames.tolist()}")
        views, height, width = len(frames), cfg.height, cfg.width
        origins, directions = self.camera_rays(frames)
        flat_origins = origins[:, None, None, :].expand(-1, height, width, -1).reshape(-1, 3)
        flat_directions = directions.reshape(-1, 3)
        t, normals_world, instance = self.cast(flat_origins, flat_directions)
        points = flat_origins + t[:, None] * flat_directions
        colour = self.shade(points, normals_world, instance)

        extrinsics = self.extrinsics[frames]
        rotation_t = extrinsics[:, :3, :3].transpose(-1, -2)  # world -> camera rotation
        normals_camera = _apply(rotation_t[:, None], normals_world.reshape(views, -1, 3))
        normals_camera = normals_camera / normals_camera.norm(dim=-1, keepdim=True)
        result = Views(
            images=colour.reshape(views, height, width, 3).permute(0, 3, 1, 2).contiguous(),
            extrinsics=extrinsics.clone(),
            intrinsics=self.intrinsics.expand(views, 3, 3).clone(),
            near=torch.full((views,), cfg.near),
            far=torch.full((views,), cfg.far),
            masks=instance.reshape(views, height, width),
            depths=t.reshape(views, height, width).contiguous(),  # t is z-depth: camera-space rays have z = 1
            normals=normals_camera.reshape(views, height, width, 3).permute(0, 3, 1, 2).contiguous(),
            semantics=self.instance_classes[instance].reshape(views, height, width),
            frame_indices=frames.clone(),
        )
        return SyntheticRender(views=result, points=points.reshape(views, height, width, 3))

    def visible(self, points: torch.Tensor, frame: int, relative_tolerance: float = 1e-4) -> torch.Tensor:
        """Exact visibility ``[P]`` of world points ``[P, 3]`` from camera ``frame`` (no other surface in between).

        Casts the ray from the camera centre through each point; the point is visible when the first
        hit is the point itself (within ``relative_tolerance`` of the ray length). Field-of-view
        bounds are not checked here.
        """
        origin = self.extrinsics[frame, :3, 3]
        directions = points - origin
        with _intra_op_threads(self.config.render_threads):
            t, _, _ = self.cast(origin.expand_as(points), directions)
        return t >= 1 - relative_tolerance

    def correspondences(self, frame_a: int, frame_b: int):
        """Exact ground-truth correspondences from frame ``a`` to frame ``b`` (by ray casting).

        Returns:
            ``(pixels_b [H, W, 2], valid [H, W])``: where each pixel of ``a`` lands in ``b`` (pixel
            centres at +0.5) and whether its surface point is inside ``b``'s image and unoccluded.
        """
        cfg = self.config
        render = self.render([frame_a])
        points = render.points.reshape(-1, 3)
        pixels, z = project_points(points, self.extrinsics[frame_b], self.intrinsics, cfg.height, cfg.width)
        inside = (z > 0) & (pixels[:, 0] >= 0) & (pixels[:, 0] < cfg.width) & (pixels[:, 1] >= 0) & (pixels[:, 1] < cfg.height)
        valid = inside & self.visible(points, frame_b)
        return pixels.reshape(cfg.height, cfg.width, 2), valid.reshape(cfg.height, cfg.width)


# ---------------------------------------------------------------------- primitives
@contextmanager
def _intra_op_threads(count: int | None):
    previous = torch.get_num_threads()
    if count is None or count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _apply(matrices: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """``matrices [..., 3, 3] @ vectors [..., 3]`` by broadcasting and summing.

    Elementwise (no BLAS), so each pixel's result does not depend on how many frames are rendered
    together: a frame rendered alone is bit-identical to the same frame rendered with others.
    """
    return (matrices * vectors[..., None, :]).sum(-1)


def _safe(directions: torch.Tensor) -> torch.Tensor:
    # Replace exact zeros so slab divisions give +-inf rather than nan.
    tiny = torch.full_like(directions, 1e-12)
    return torch.where(directions.abs() < 1e-12, torch.where(directions < 0, -tiny, tiny), directions)


def _cast_room(origins, directions, room):
    """Rays from inside the room: exit distance through the walls (x, y), floor and ceiling (z)."""
    lower = torch.stack([-room[0] / 2, -room[1] / 2, room.new_zeros(())])
    upper = torch.stack([room[0] / 2, room[1] / 2, room[2]])
    d = _safe(directions)
    bound = torch.where(d > 0, upper, lower)
    t_axes = (bound - origins) / d  # [R, 3]
    t, axis = t_axes.min(dim=-1)
    positive = d.gather(1, axis[:, None])[:, 0] > 0
    normals = torch.zeros_like(origins)
    normals.scatter_(1, axis[:, None], torch.where(positive, -1.0, 1.0)[:, None].to(origins.dtype))
    # axis 0: walls 0 (-x) / 1 (+x); axis 1: walls 2 (-y) / 3 (+y); axis 2: floor 4 / ceiling 5.
    ids = axis * 2 + positive.long()
    return t, normals, ids


def _yaw_matrices(yaw):
    c, s = torch.cos(yaw), torch.sin(yaw)
    zero, one = torch.zeros_like(yaw), torch.ones_like(yaw)
    return torch.stack([c, -s, zero, s, c, zero, zero, zero, one], -1).reshape(-1, 3, 3)  # local -> world


def _cast_boxes(origins, directions, boxes):
    """Slab test in each box's frame (boxes rotated by yaw about z). Returns t [P, R], normals [P, R, 3]."""
    centres, half, yaw = boxes[:, None, 0:3], boxes[:, None, 3:6], boxes[:, 6]
    rotation = _yaw_matrices(yaw)  # [P, 3, 3]
    local_o = _apply(rotation.transpose(1, 2)[:, None], origins[None] - centres)  # R^T (o - c)
    local_d = _safe(_apply(rotation.transpose(1, 2)[:, None], directions[None]))
    t1 = (-half - local_o) / local_d
    t2 = (half - local_o) / local_d
    t_near_axes = torch.minimum(t1, t2)
    t_near, axis = t_near_axes.max(dim=-1)
    t_far = torch.maximum(t1, t2).min(dim=-1).values
    hit = (t_far >= t_near) & (t_near > _EPS)
    t = torch.where(hit, t_near, torch.full_like(t_near, _INF))
    sign = torch.where(local_d.gather(-1, axis[..., None])[..., 0] > 0, -1.0, 1.0).to(origins.dtype)
    local_n = torch.zeros_like(local_o)
    local_n.scatter_(-1, axis[..., None], sign[..., None])
    normals = _apply(rotation[:, None], local_n)
    return t, normals


def _cast_spheres(origins, directions, spheres):
    centres, radius = spheres[:, None, 0:3], spheres[:, None, 3]
    oc = origins[None] - centres  # [P, R, 3]
    a = (directions * directions).sum(-1)[None]
    b = 2 * (oc * directions[None]).sum(-1)
    c = (oc * oc).sum(-1) - radius**2
    disc = b * b - 4 * a * c
    t = (-b - disc.clamp_min(0).sqrt()) / (2 * a)
    hit = (disc >= 0) & (t > _EPS)
    t = torch.where(hit, t, torch.full_like(t, _INF))
    points = origins[None] + t.clamp(max=1e6)[..., None] * directions[None]
    normals = (points - centres) / radius[..., None]
    return t, normals


def _cast_cylinders(origins, directions, cylinders):
    """Upright cylinders: side surface and top cap (the bottom cap lies on the floor, never visible)."""
    base, radius, height = cylinders[:, None, 0:3], cylinders[:, None, 3], cylinders[:, None, 4]
    oc = origins[None] - base  # [P, R, 3]
    d = directions[None].expand_as(oc)
    a = (d[..., :2] ** 2).sum(-1).clamp_min(1e-12)
    b = 2 * (oc[..., :2] * d[..., :2]).sum(-1)
    c = (oc[..., :2] ** 2).sum(-1) - radius**2
    disc = b * b - 4 * a * c
    t_side = (-b - disc.clamp_min(0).sqrt()) / (2 * a)
    z_side = oc[..., 2] + t_side * d[..., 2]
    side_hit = (disc >= 0) & (t_side > _EPS) & (z_side >= 0) & (z_side <= height)
    t_side = torch.where(side_hit, t_side, torch.full_like(t_side, _INF))
    t_top = (height - oc[..., 2]) / _safe(d[..., 2])
    top_xy = oc[..., :2] + t_top[..., None] * d[..., :2]
    top_hit = (t_top > _EPS) & ((top_xy**2).sum(-1) <= radius**2) & (oc[..., 2] > height)
    t_top = torch.where(top_hit, t_top, torch.full_like(t_top, _INF))
    use_top = t_top < t_side
    t = torch.minimum(t_side, t_top)
    side_points = oc[..., :2] + t_side.clamp(max=1e6)[..., None] * d[..., :2]
    side_normals = torch.cat([side_points / radius[..., None], torch.zeros_like(side_points[..., :1])], -1)
    top_normals = torch.zeros_like(side_normals)
    top_normals[..., 2] = 1
    normals = torch.where(use_top[..., None], top_normals, side_normals)
    return t, normals


# ---------------------------------------------------------------------- layout
def _look_at(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """OpenCV camera-to-world looking from ``position`` at ``target`` with world z up."""
    forward = target - position
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, position
    return pose


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    hue, saturation, value = rng.uniform(0, 1), rng.uniform(0.3, 0.8), rng.uniform(0.45, 0.85)
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6) % 6
    return value - value * saturation * np.clip(np.minimum(k, 4 - k), 0, 1)


def generate_scene(config: SyntheticSceneConfig, scene_index: int = 0) -> SyntheticScene:
    """The layout and trajectory of scene ``scene_index`` (a pure function of ``(config.seed, scene_index)``)."""
    rng = np.random.default_rng([int(config.seed) & 0xFFFFFFFF, int(scene_index), 0x5D5])
    room = rng.uniform(config.room_size_min, config.room_size_max)
    # Objects live in the inner ellipse (radii 0.2 * room), cameras on the outer one (0.38 * room).
    num_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
    placed: list[tuple[float, float, float]] = []
    boxes, spheres, cylinders = [], [], []
    for _ in range(num_objects):
        kind = int(rng.integers(3))
        size = rng.uniform(0.2, 0.45)
        for _attempt in range(50):
            radius_fraction, angle = math.sqrt(rng.uniform(0, 1)), rng.uniform(0, 2 * math.pi)
            x = 0.2 * room[0] * radius_fraction * math.cos(angle)
            y = 0.2 * room[1] * radius_fraction * math.sin(angle)
            if all(math.hypot(x - px, y - py) > size + pr + 0.05 for px, py, pr in placed):
                break
        else:
            continue  # no room left for this object
        placed.append((x, y, size * 1.42))
        if kind == 0:
            half = np.array([size, rng.uniform(0.6, 1.0) * size, rng.uniform(0.2, 0.6)])
            boxes.append([x, y, half[2], *half, rng.uniform(0, math.pi)])
            placed[-1] = (x, y, float(np.hypot(half[0], half[1])))
        elif kind == 1:
            elevation = rng.choice([0.0, rng.uniform(0.2, 0.6)])
            spheres.append([x, y, size + elevation, size])
        else:
            cylinders.append([x, y, 0.0, size * 0.8, rng.uniform(0.4, 1.3)])

    num_instances = 6 + len(boxes) + len(spheres) + len(cylinders)
    base = np.stack([_random_colour(rng) for _ in range(num_instances)])
    directions = rng.normal(size=(num_instances, 3, 3))
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    waves = directions * rng.uniform(2.0, 9.0, size=(num_instances, 3, 1))
    phases = rng.uniform(0, 2 * math.pi, size=(num_instances, 3))
    amplitudes = rng.uniform(-0.18, 0.18, size=(num_instances, 3, 3))
    checker = np.where(rng.uniform(size=num_instances) < 0.4, rng.uniform(1.0, 3.0, size=num_instances), 0.0)
    checker[4] = rng.uniform(1.0, 2.5)  # the floor is always tiled

    light = np.array([rng.uniform(-0.3, 0.3) * room[0], rng.uniform(-0.3, 0.3) * room[1], room[2] - 0.2])

    # Trajectory: an arc of the outer ellipse, gently bobbing, looking at a slowly drifting point
    # among the objects.
    start = rng.uniform(0, 2 * math.pi)
    direction = rng.choice([-1.0, 1.0])
    sweep = math.radians(config.arc_degrees)
    centroid = np.mean([p[:2] for p in placed], axis=0) if placed else np.zeros(2)
    focus_phase = rng.uniform(0, 2 * math.pi)
    poses = []
    for frame in range(config.num_frames):
        s = frame / max(config.num_frames - 1, 1)
        angle = start + direction * sweep * s
        position = np.array([
            0.38 * room[0] * math.cos(angle),
            0.38 * room[1] * math.sin(angle),
            config.camera_height + 0.15 * math.sin(2 * math.pi * s + focus_phase),
        ])
        target = np.array([
            centroid[0] + 0.3 * math.cos(focus_phase + 3 * s),
            centroid[1] + 0.3 * math.sin(focus_phase + 3 * s),
            0.35 + 0.15 * math.sin(focus_phase + 2 * s),
        ])
        poses.append(_look_at(position, target))

    focal = 0.5 / math.tan(math.radians(config.horizontal_fov_degrees) / 2)  # normalised fx = f_px / W
    intrinsics = torch.tensor(
        [[focal, 0.0, 0.5], [0.0, focal * config.width / config.height, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float32
    )

    def tensor(values, width):
        return torch.tensor(np.asarray(values, dtype=np.float64).reshape(-1, width), dtype=torch.float32)

    return SyntheticScene(
        name=f"synthetic_{config.seed}_{scene_index:05d}",
        config=config,
        room=torch.tensor(room, dtype=torch.float32),
        boxes=tensor(boxes, 7),
        spheres=tensor(spheres, 4),
        cylinders=tensor(cylinders, 5),
        light=torch.tensor(light, dtype=torch.float32),
        texture=_Texture(
            base=torch.tensor(base, dtype=torch.float32),
            waves=torch.tensor(waves, dtype=torch.float32),
            phases=torch.tensor(phases, dtype=torch.float32),
            amplitudes=torch.tensor(amplitudes, dtype=torch.float32),
            checker=torch.tensor(checker, dtype=torch.float32),
        ),
        extrinsics=torch.tensor(np.stack(poses), dtype=torch.float32),
        intrinsics=intrinsics,
    )
