"""Deterministic synthetic street scenes for the quickstart (no download needed).

A scene is a road vanishing at a horizon, sidewalks on both sides, building facades and trees,
sky, and small objects (poles, signs, people, bicycles) whose size follows the perspective: a
far object is a few pixels wide, a near one a few tens (at 256x512). Region colours, textures,
noise and a global colour jitter vary per scene so that the task is not solvable by colour alone,
and the thin classes are too small for a 1/32-resolution branch alone.

Class ids are those of ``taxonomy.STREET_CLASSES``.
"""

from __future__ import annotations

import cv2
import numpy as np

ROAD, SIDEWALK, BUILDING, SKY, VEGETATION, POLE, SIGN, PERSON, BICYCLE = range(9)


class _Canvas:
    """An RGB image and its label map, drawn together so they can never disagree."""

    def __init__(self, height: int, width: int) -> None:
        self.image = np.zeros((height, width, 3), np.uint8)
        self.label = np.zeros((height, width), np.uint8)

    def poly(self, points: np.ndarray, cls: int, colour: np.ndarray) -> None:
        pts = [np.round(points).astype(np.int32)]
        cv2.fillPoly(self.image, pts, _rgb(colour), lineType=cv2.LINE_8)
        cv2.fillPoly(self.label, pts, int(cls), lineType=cv2.LINE_8)

    def rect(self, x0: float, y0: float, x1: float, y1: float, cls: int, colour) -> None:
        self.poly(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]), cls, colour)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, cls: int, colour) -> None:
        centre, axes = (round(cx), round(cy)), (max(1, round(rx)), max(1, round(ry)))
        cv2.ellipse(self.image, centre, axes, 0, 0, 360, _rgb(colour), -1)
        cv2.ellipse(self.label, centre, axes, 0, 0, 360, int(cls), -1)

    def ring(self, cx: float, cy: float, r: float, thickness: int, cls: int, colour) -> None:
        centre, radius = (round(cx), round(cy)), max(1, round(r))
        cv2.circle(self.image, centre, radius, _rgb(colour), thickness)
        cv2.circle(self.label, centre, radius, int(cls), thickness)

    def line(self, p0, p1, thickness: int, cls: int, colour) -> None:
        a, b = tuple(int(round(v)) for v in p0), tuple(int(round(v)) for v in p1)
        cv2.line(self.image, a, b, _rgb(colour), max(1, thickness))
        cv2.line(self.label, a, b, int(cls), max(1, thickness))


def _rgb(colour) -> tuple[int, int, int]:
    c = np.clip(np.asarray(colour, np.float64), 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


def _jitter(rng: np.random.Generator, base, spread: float) -> np.ndarray:
    return np.asarray(base, np.float64) + rng.normal(0.0, spread, 3)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1], float32 ``[H, W]``: upsampled coarse random grid."""
    coarse = rng.uniform(-1.0, 1.0, (cells, 2 * cells)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def render_street(index: int, height: int = 256, width: int = 512, seed: int = 0):
    """Renders synthetic street scene number ``index``.

    Args:
      index: scene number; the same (index, height, width, seed) always gives the same scene.
      height, width: output size in pixels (Cityscapes-like scenes want ``width == 2 * height``).
      seed: dataset seed; different seeds give disjoint-looking datasets.

    Returns:
      image: uint8 ``[height, width, 3]`` RGB.
      label: uint8 ``[height, width]`` class ids in ``[0, 9)`` (see ``taxonomy.STREET_CLASSES``).
    """
    rng = np.random.default_rng([seed, index])
    # The draws happen in this order (the scene of an index depends on it).
    scene = _Scene(rng, height, width)
    scene.sky()
    for side in (-1, 1):
        scene.facades(side)
    scene.trees()
    scene.ground()
    scene.objects()
    c = scene.canvas
    return _finish(rng, c.image, c.label), c.label


class _Scene:
    """One scene being drawn: its random source, canvas and perspective (horizon, vanishing
    point, road edges)."""

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.rng, self.h, self.w = rng, height, width
        self.canvas = _Canvas(height, width)
        # Pixel sizes below are designed at 256 rows and scaled with the image.
        self.unit = height / 256.0
        self.horizon = height * rng.uniform(0.38, 0.5)
        self.vp_x = width * rng.uniform(0.4, 0.6)
        self.road_half = self.kerb = 0.0  # drawn by `ground`

    def depth_scale(self, y: float) -> float:
        """Apparent size at image row y relative to the bottom row (0 at the horizon)."""
        return max(0.0, (y - self.horizon) / (self.h - self.horizon))

    def edge_x(self, y: float, side: int, offset: float) -> float:
        """x of the road edge at row y, pushed ``offset`` (in near-pixels) onto the sidewalk."""
        s = self.depth_scale(y)
        return self.vp_x + side * (self.road_half + offset * self.kerb) * s

    def sky(self) -> None:
        """Vertical gradient, daytime blue to hazy white."""
        rng, c = self.rng, self.canvas
        top, bottom = _jitter(rng, (90, 140, 210), 15), _jitter(rng, (190, 210, 230), 12)
        t = np.linspace(0.0, 1.0, self.h, dtype=np.float32)[:, None, None]
        c.image[:] = np.clip(top * (1 - t) + bottom * t, 0, 255).astype(np.uint8)
        c.label[:] = SKY

    def facades(self, side: int) -> None:
        """Building facades along one side, standing on the horizon line's far end and growing
        toward the viewer; windows are texture only (still building)."""
        rng, c, h, w, horizon = self.rng, self.canvas, self.h, self.w, self.horizon
        x = self.vp_x
        while 0 <= x <= w:
            seg = w * rng.uniform(0.05, 0.18)
            x_next = x + side * seg
            near = abs(x_next - self.vp_x) / (w / 2)
            roof = horizon - h * rng.uniform(0.1, 0.3) * (0.4 + near)
            colour = _jitter(
                rng, rng.choice([(150, 120, 100), (120, 120, 125), (170, 160, 140)]), 18
            )
            x0, x1 = sorted((x, x_next))
            c.rect(x0, roof, x1, horizon + 2, BUILDING, colour)
            win = colour * rng.uniform(0.45, 0.7)
            step = max(3.0, 8 * self.unit * (0.4 + near))
            for wy in np.arange(roof + step / 2, horizon - step, step * 1.6):
                for wx in np.arange(x0 + step / 2, x1 - step, step * 1.5):
                    c.image[int(wy) : int(wy + step * 0.7), int(wx) : int(wx + step * 0.6)] = _rgb(
                        win
                    )
            x = x_next

    def trees(self) -> None:
        """Blobs of foliage in front of the facades, a few of them also over the sidewalk."""
        rng, unit = self.rng, self.unit
        for _ in range(rng.integers(3, 9)):
            tx = rng.uniform(0, self.w)
            s = max(0.15, abs(tx - self.vp_x) / (self.w / 2))
            ty = self.horizon - self.h * rng.uniform(0.0, 0.12) * s
            green = _jitter(rng, (70, 110, 45), 15)
            for _ in range(4):
                self.canvas.ellipse(
                    tx + rng.normal(0, 12 * unit * s),
                    ty + rng.normal(0, 8 * unit * s),
                    rng.uniform(14, 36) * unit * s,
                    rng.uniform(10, 26) * unit * s,
                    VEGETATION,
                    green + rng.normal(0, 8, 3),
                )

    def ground(self) -> None:
        """Sidewalks fill the lower image, the road is a wedge from the vanishing point."""
        rng, c, h, w, horizon, vp_x, unit = (
            self.rng, self.canvas, self.h, self.w, self.horizon, self.vp_x, self.unit
        )  # fmt: skip
        self.road_half = road_half = w * rng.uniform(0.3, 0.45)
        self.kerb = w * rng.uniform(0.15, 0.3)
        walk = _jitter(rng, (165, 155, 150), 12)
        c.poly(np.array([[0, horizon], [w, horizon], [w, h], [0, h]]), SIDEWALK, walk)
        road_colour = _jitter(rng, (95, 90, 95), 10)
        road = np.array(
            [[vp_x - 1, horizon], [vp_x + 1, horizon], [vp_x + road_half, h], [vp_x - road_half, h]]
        )
        c.poly(road, ROAD, road_colour)
        # Dashed centre line: texture of the road class.
        for y0 in np.arange(horizon + 4, h, 18 * unit):
            s0, s1 = self.depth_scale(y0), self.depth_scale(y0 + 8 * unit)
            c.image[
                int(y0) : int(y0 + 8 * unit * max(s0, 0.2)) + 1,
                int(vp_x - 2 * s0 * unit) : int(vp_x + 2 * s1 * unit) + 1,
            ] = (220, 220, 210)

    def objects(self) -> None:
        """Small objects at random depths; far ones first so near ones are drawn over them."""
        rng = self.rng
        objects = []
        for _ in range(rng.integers(4, 9)):
            objects.append(("pole", rng.uniform(0.12, 1.0) ** 1.2))
        for _ in range(rng.integers(2, 7)):
            objects.append(("person", rng.uniform(0.12, 1.0) ** 1.2))
        for _ in range(rng.integers(1, 4)):
            objects.append(("bicycle", rng.uniform(0.15, 1.0) ** 1.2))
        objects.sort(key=lambda o: o[1])
        draw = {"pole": self.pole, "person": self.person, "bicycle": self.bicycle}
        for kind, s in objects:
            y = self.horizon + s * (self.h - self.horizon)
            side = int(rng.choice([-1, 1]))
            draw[kind](y, side, s)

    def pole(self, y: float, side: int, s: float) -> None:
        """A pole standing at row y, with a round or square sign on 60% of them."""
        rng, c, unit = self.rng, self.canvas, self.unit
        x = self.edge_x(y, side, rng.uniform(0.05, 0.3))
        height_px = 120 * unit * s
        thick = max(1, round(5 * unit * s))
        grey = _jitter(rng, (110, 110, 115), 20)
        c.rect(x - thick / 2, y - height_px, x + thick / 2, y, POLE, grey)
        if rng.random() < 0.6:
            sw = max(2.0, 14 * unit * s)
            sy = y - height_px + rng.uniform(0, 0.2) * height_px
            sign_colour = rng.choice([(200, 30, 30), (30, 60, 190), (230, 200, 20)])
            if rng.random() < 0.5:
                c.ellipse(x, sy, sw / 2, sw / 2, SIGN, _jitter(rng, sign_colour, 15))
            else:
                c.rect(
                    x - sw / 2, sy - sw / 2, x + sw / 2, sy + sw / 2, SIGN,
                    _jitter(rng, sign_colour, 15),
                )  # fmt: skip

    def person(self, y: float, side: int, s: float) -> None:
        """A person (body, legs, head) standing at row y on the sidewalk."""
        rng, c = self.rng, self.canvas
        x = self.edge_x(y, side, rng.uniform(0.1, 0.9))
        ph = 60 * self.unit * s
        bw = max(1.5, ph * 0.22)
        cloth = rng.uniform(20, 230, 3)
        c.rect(x - bw / 2, y - ph * 0.85, x + bw / 2, y - ph * 0.45, PERSON, cloth)
        leg = max(1, round(bw * 0.35))
        legs = _jitter(rng, (50, 50, 70), 15)
        c.line((x - bw / 4, y - ph * 0.45), (x - bw / 3, y), leg, PERSON, legs)
        c.line((x + bw / 4, y - ph * 0.45), (x + bw / 3, y), leg, PERSON, legs)
        skin = _jitter(rng, (200, 160, 130), 25)
        c.ellipse(x, y - ph * 0.92, bw * 0.4, ph * 0.08, PERSON, skin)

    def bicycle(self, y: float, side: int, s: float) -> None:
        """A bicycle (two wheels, a frame) at row y, at the road's edge."""
        rng, c = self.rng, self.canvas
        x = self.edge_x(y, side, rng.uniform(-0.35, -0.05))
        r = max(1.5, 11 * self.unit * s)
        thick = max(1, round(2.5 * self.unit * s))
        frame = _jitter(rng, rng.choice([(30, 30, 30), (160, 20, 20), (20, 80, 160)]), 15)
        back, front = (x - 1.4 * r, y - r), (x + 1.4 * r, y - r)
        seat = (x - 0.4 * r, y - 2.2 * r)
        c.ring(*back, r, thick, BICYCLE, frame)
        c.ring(*front, r, thick, BICYCLE, frame)
        c.line(back, seat, thick, BICYCLE, frame)
        c.line(seat, (x + 1.1 * r, y - 2.3 * r), thick, BICYCLE, frame)
        c.line((x + 1.1 * r, y - 2.3 * r), front, thick, BICYCLE, frame)
        c.line(back, (x + 0.2 * r, y - r), thick, BICYCLE, frame)


def _finish(rng: np.random.Generator, image: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Texture, shading, sensor noise and a global colour jitter; labels are unaffected."""
    h, w = label.shape
    img = image.astype(np.float32)
    # Class-dependent texture strength: foliage and facades rough, sky smooth.
    roughness = np.array([10, 8, 14, 3, 22, 6, 4, 10, 6], np.float32)[label][..., None]
    img += roughness * _smooth_noise(rng, h, w, 24)[..., None]
    img *= 1.0 + 0.25 * _smooth_noise(rng, h, w, 3)[..., None]  # uneven lighting / shadows
    gain = rng.uniform(0.75, 1.25) * rng.uniform(0.93, 1.07, 3).astype(np.float32)
    img = (img - 128.0) * rng.uniform(0.8, 1.2) + 128.0 + rng.uniform(-20, 20)
    img = img * gain + rng.normal(0.0, rng.uniform(2, 8), (h, w, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)
