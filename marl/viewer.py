"""The replay viewer: a pygame window over a recorded battle, and headless export to PNG and GIF.

What a frame shows: the map's walkable ground (lighter on higher cliff levels, cliff edges drawn
darker), the units as circles in their team's colour with the unit type's letter, health and shield
bars, attack and heal lines, the communication edges between the agents at that step (sender to
receiver) with listening agents (open gate) ringed, and a HUD with the step, map, outcome and speed.

Playback is a small pure class, `Playback`, driven by key names, so it is tested without a window.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from marl.replay import Replay

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # pygame's import banner would garble CLI output

SPEEDS = (1, 2, 4, 8, 16, 32)  # playback speeds in steps per second; SMAC's step is half a game second
DEFAULT_SPEED = 8
EXPORT_SIZE = (960, 600)

TEAM_COLOURS = ((70, 140, 255), (235, 75, 60))  # the agents, the enemies
DEAD_COLOUR = (95, 95, 100)
BACKGROUND = (18, 18, 22)
BLOCKED = (34, 36, 40)
GROUND = ((92, 88, 74), (120, 116, 98), (146, 142, 122), (170, 166, 146))  # by cliff level, low to high
CLIFF = (66, 54, 40)
HUD_BG = (12, 12, 16)
HUD_TEXT = (230, 230, 235)
HUD_DIM = (150, 150, 160)
ATTACK_AGENT = (255, 215, 70)
ATTACK_ENEMY = (255, 120, 110)
HEAL = (90, 255, 130)
COMM = (200, 120, 255)
LISTENING = (235, 200, 255)
HEALTH = (80, 220, 90)
HEALTH_LOST = (110, 30, 30)
SHIELD = (90, 200, 255)
OUTCOME_COLOURS = {"won": (110, 230, 120), "lost": (240, 110, 100), "draw": (230, 200, 110),
                   "timeout": (230, 200, 110)}
UNIT_RADIUS = 0.55  # map cells; drawn the same for every type so that the type letter stays readable
MIN_LETTER_RADIUS = 7  # pixels: smaller circles get no letter (it would not be readable)

# the mark drawn in a unit's circle: one letter, or two where a roster has several types of one letter
KNOWN_MARKS = {"marine": "M", "marauder": "M", "medivac": "M", "stalker": "S", "zealot": "Z", "colossus": "C",
               "hydralisk": "H", "zergling": "Z", "baneling": "B", "spine_crawler": "Sc"}
KNOWN_MARKS_LONG = {"marine": "Ma", "marauder": "Mr", "medivac": "Md", "zealot": "Ze", "zergling": "Zg",
                    "stalker": "St", "spine_crawler": "Sc"}

# pygame's default font has no arrow glyphs, so the arrow keys are named in words
KEYS_HELP = ("space play/pause", "left/right step", "up/down speed", "Home/End first/last", "r restart", "q quit")


class ViewerError(ValueError):
    """A window that cannot open or an export that cannot be written; the message is one line."""


@dataclass
class Playback:
    """Where playback stands (frame, paused, speed), changed by key names and by elapsed time."""

    n_frames: int
    frame: int = 0
    paused: bool = False
    speed: int = DEFAULT_SPEED
    quit: bool = False
    _elapsed: float = field(default=0.0, repr=False)

    @property
    def last(self) -> int:
        """Index of the final frame."""
        return self.n_frames - 1

    def press(self, key: str) -> None:
        """Apply one key, named as pygame.key.name() names it ("space", "left", "home", "q", ...)."""
        if key == "space":
            if self.paused and self.frame == self.last:
                self.frame = 0  # play at the end starts over
            self.paused = not self.paused
        elif key in ("right", "left"):
            self.paused = True
            self.frame = min(self.frame + 1, self.last) if key == "right" else max(self.frame - 1, 0)
        elif key in ("up", "down"):
            i = SPEEDS.index(self.speed) + (1 if key == "up" else -1)
            self.speed = SPEEDS[min(max(i, 0), len(SPEEDS) - 1)]
        elif key == "home":
            self.frame = 0
        elif key == "end":
            self.frame, self.paused = self.last, True
        elif key == "r":
            self.frame, self.paused = 0, False
        elif key in ("q", "escape"):
            self.quit = True
        self._elapsed = 0.0

    def tick(self, seconds: float) -> None:
        """Advance by the frames `seconds` of playing time cover; stops (paused) at the final frame."""
        if self.paused:
            return
        self._elapsed += seconds
        advance = int(self._elapsed * self.speed)
        if advance:
            self._elapsed -= advance / self.speed
            self.frame = min(self.frame + advance, self.last)
        if self.frame == self.last:
            self.paused, self._elapsed = True, 0.0


def on_event(playback: Playback, event) -> None:
    """Feed one pygame event to the playback state (key presses and the window's close button)."""
    import pygame

    if event.type == pygame.QUIT:
        playback.quit = True
    elif event.type == pygame.KEYDOWN:
        playback.press(pygame.key.name(event.key))


class Layout:
    """Where things go on a surface: a HUD bar on top, `bottom_rows` bars below, the map letterboxed between."""

    def __init__(self, replay: Replay, width: int, height: int, bottom_rows: int = 1):
        self.width, self.height = width, height
        self.bar = max(20, min(36, height // 22))  # HUD bar height, readable at any window size
        self.bottom = bottom_rows * self.bar
        x0, x1, y0, y1 = view_bounds(replay)
        self.view = (x0, x1, y0, y1)
        avail_w, avail_h = width - 8, height - self.bar - self.bottom - 8
        self.scale = max(min(avail_w / (x1 - x0), avail_h / (y1 - y0)), 1e-3)  # pixels per map cell
        self.map_w, self.map_h = (x1 - x0) * self.scale, (y1 - y0) * self.scale
        self.left = (width - self.map_w) / 2
        self.top = self.bar + (height - self.bar - self.bottom - self.map_h) / 2

    def to_screen(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates of map points (y grows upwards on the map, downwards on screen)."""
        x0, _, _, y1 = self.view
        return (self.left + (np.asarray(x) - x0) * self.scale, self.top + (y1 - np.asarray(y)) * self.scale)

    def unit_pixels(self, replay: Replay, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """Integer pixel centres of every unit at a frame."""
        px, py = self.to_screen(replay.x[frame], replay.y[frame])
        return np.rint(px).astype(int), np.rint(py).astype(int)


def view_bounds(replay: Replay) -> tuple[int, int, int, int]:
    """The map cells worth showing: the walkable area and everywhere a unit went, plus one cell."""
    xs, ys = np.nonzero(replay.walkable)
    X, Y = replay.walkable.shape
    if len(xs) == 0:
        xs, ys = np.array([0, X - 1]), np.array([0, Y - 1])
    x0 = min(xs.min(), int(np.floor(replay.x.min()))) - 1
    x1 = max(xs.max() + 1, int(np.ceil(replay.x.max()))) + 1
    y0 = min(ys.min(), int(np.floor(replay.y.min()))) - 1
    y1 = max(ys.max() + 1, int(np.ceil(replay.y.max()))) + 1
    return max(x0, 0), min(x1, X), max(y0, 0), min(y1, Y)


def _ground_rgb(replay: Replay) -> np.ndarray:
    """uint8[X, Y, 3] colours of the map cells: blocked, cliff faces, and ground lighter the higher it lies."""
    walk, level = replay.walkable, replay.level.astype(int)
    levels = np.unique(level[walk]) if walk.any() else np.zeros(1, int)
    # ranks, not raw levels, pick the shade: maps use few levels spread over 0..255
    shade = np.searchsorted(levels, level).clip(0, len(GROUND) - 1)
    rgb = np.asarray(GROUND, np.uint8)[shade]
    rgb[~walk] = BLOCKED
    rgb[replay.cliff & ~walk] = CLIFF
    return rgb


def type_marks(unit_types) -> dict[str, str]:
    """A short mark per unit type of a roster: its letter, or two letters where letters would clash."""
    names = sorted({str(t) for t in unit_types})
    marks = {n: KNOWN_MARKS.get(n, n[:1].upper()) for n in names}
    clashing = {m for m in marks.values() if list(marks.values()).count(m) > 1}
    return {n: (m if m not in clashing else KNOWN_MARKS_LONG.get(n, n[:2].capitalize())) for n, m in marks.items()}


class Renderer:
    """Draws frames of one replay onto pygame surfaces of any size (cached background per size)."""

    def __init__(self, replay: Replay):
        import pygame

        pygame.font.init()
        self.replay = replay
        self._ground = _ground_rgb(replay)
        self._cache: dict[tuple[int, int], tuple[Layout, object]] = {}
        self._fonts: dict[int, object] = {}
        self.marks = type_marks(replay.unit_type)
        self.letters = [self.marks[str(t)] for t in replay.unit_type]

    def font(self, size: int):
        """pygame's default font at a pixel size (cached)."""
        import pygame

        if size not in self._fonts:
            self._fonts[size] = pygame.font.Font(None, size)
        return self._fonts[size]

    def layout(self, size: tuple[int, int], bottom_rows: int = 1) -> Layout:
        """The layout for a surface size (two bottom rows in a window: the legend, then the keys)."""
        return self._background(size, bottom_rows)[0]

    def _background(self, size: tuple[int, int], bottom_rows: int):
        import pygame

        key = (*size, bottom_rows)
        if key not in self._cache:
            lay = Layout(self.replay, *size, bottom_rows=bottom_rows)
            x0, x1, y0, y1 = lay.view
            cells = self._ground[x0:x1, y0:y1][:, ::-1]  # surfarray is [x, y] with y downwards
            ground = pygame.transform.scale(pygame.surfarray.make_surface(np.ascontiguousarray(cells)),
                                            (max(int(round(lay.map_w)), 1), max(int(round(lay.map_h)), 1)))
            self._cache = {key: (lay, ground)}  # only the current size is worth keeping
        return self._cache[key]

    def draw(self, surface, frame: int, playback: Playback | None = None) -> None:
        """Draw frame `frame` (HUD included) onto surface."""
        import pygame

        r = self.replay
        lay, ground = self._background(surface.get_size(), 1 if playback is None else 2)
        surface.fill(BACKGROUND)
        surface.blit(ground, (int(round(lay.left)), int(round(lay.top))))
        px, py = lay.unit_pixels(r, frame)
        alive = r.alive[frame]
        A = r.n_agents
        radius = max(int(round(UNIT_RADIUS * lay.scale)), 3)
        step = min(frame, r.n_steps - 1)  # the final frame has no action of its own: show the last one's

        overlay = pygame.Surface(surface.get_size(), pygame.SRCALPHA)
        if r.meta.get("has_comm") and frame < r.n_steps:
            comm = r.comm[step] & alive[:A, None] & alive[None, :A]
            for receiver, sender in zip(*np.nonzero(comm)):
                if receiver != sender:
                    _arrow(overlay, (*COMM, 150), (px[sender], py[sender]), (px[receiver], py[receiver]),
                           radius, max(1, radius // 5))
        surface.blit(overlay, (0, 0))

        width = max(1, radius // 4)
        for u in np.flatnonzero(alive):
            t = int(r.target[step, u]) if u < A and frame < r.n_steps else int(r.unit_target[frame, u])
            if t < 0 or t >= r.n_units or not alive[t]:
                continue
            heal = r.team[t] == r.team[u]
            colour = HEAL if heal else (ATTACK_AGENT if u < A else ATTACK_ENEMY)
            _arrow(surface, colour, (px[u], py[u]), (px[t], py[t]), radius, width if u < A else max(1, width - 1))

        fonts = {1: self.font(max(int(radius * 1.7), 10)), 2: self.font(max(int(radius * 1.3), 9))}
        listening = r.meta.get("has_gates") and frame < r.n_steps
        order = np.argsort(-r.team, kind="stable")  # the agents last, on top of any enemy they touch
        for u in order:
            (cx, cy) = centre = (int(px[u]), int(py[u]))
            if not alive[u]:
                d = max(radius // 2, 2)
                pygame.draw.line(surface, DEAD_COLOUR, (cx - d, cy - d), (cx + d, cy + d), 2)
                pygame.draw.line(surface, DEAD_COLOUR, (cx - d, cy + d), (cx + d, cy - d), 2)
                continue
            if listening and u < A and r.gates[step, u] > 0.5:
                pygame.draw.circle(surface, LISTENING, centre, radius + max(2, radius // 3), max(1, radius // 5))
            pygame.draw.circle(surface, TEAM_COLOURS[int(r.team[u])], centre, radius)
        # bars, then letters, over all circles: in a melee the circles overlap, and these must stay readable
        living = [u for u in order if alive[u]]
        for u in living:
            self._bars(surface, u, frame, (int(px[u]), int(py[u])), radius)
        if radius >= MIN_LETTER_RADIUS:
            for u in living:
                text = fonts[min(len(self.letters[u]), 2)].render(self.letters[u], True, (255, 255, 255))
                surface.blit(text, text.get_rect(center=(int(px[u]), int(py[u]) + 1)))
        self._hud(surface, lay, frame, playback)

    def _bars(self, surface, u: int, frame: int, centre: tuple[int, int], radius: int) -> None:
        import pygame

        r = self.replay
        w, h = 2 * radius, max(2, radius // 4)
        x, y = centre[0] - radius, centre[1] - radius - h - 2
        bars = [(r.health[frame, u] / max(r.health_max[u], 1e-6), HEALTH)]
        if r.shield_max[u] > 0:
            bars.append((r.shield[frame, u] / r.shield_max[u], SHIELD))
        for fraction, colour in bars:
            pygame.draw.rect(surface, HEALTH_LOST if colour == HEALTH else BLOCKED, (x, y, w, h))
            pygame.draw.rect(surface, colour, (x, y, int(round(w * min(max(fraction, 0.0), 1.0))), h))
            y -= h + 1

    def _hud(self, surface, lay: Layout, frame: int, playback: Playback | None) -> None:
        import pygame

        m = self.replay.meta
        W, H, bar = surface.get_width(), surface.get_height(), lay.bar
        pygame.draw.rect(surface, HUD_BG, (0, 0, W, bar))
        pygame.draw.rect(surface, HUD_BG, (0, H - lay.bottom, W, lay.bottom))
        font = self.font(int(bar * 0.8))
        small = self.font(int(bar * 0.7))
        y = bar // 2
        right = 10
        if playback is not None:  # playback state first: it is what a user looks for while pressing keys
            state = f"{'paused' if playback.paused else 'playing'}  {playback.speed} steps/s"
            img = font.render(state, True, HUD_TEXT)
            surface.blit(img, img.get_rect(midright=(W - 10, y)))
            right += img.get_width() + 24
        top = [(f"step {frame} / {m['episode_limit']}", HUD_TEXT), (m["map"], HUD_TEXT),
               (f"{m['outcome'].upper()}  return {m['episode_return']:.1f}", OUTCOME_COLOURS[m["outcome"]]),
               (f"{m['learner']} @ {m['env_steps']:,} steps", HUD_DIM)]
        _row(surface, font, top, 10, W - right, y, 24)
        # the bottom bars: what the colours and letters mean, and below that (in a window) the keys
        if playback is not None:
            _row(surface, small, [(k, HUD_DIM) for k in KEYS_HELP], 10, W - 10, H - bar // 2, 22)
        y = H - lay.bottom + bar // 2
        legend = [("agents", TEAM_COLOURS[0]), ("enemies", TEAM_COLOURS[1]), ("attack", ATTACK_AGENT),
                  ("enemy attack", ATTACK_ENEMY), ("heal", HEAL)]
        if m.get("has_comm"):
            legend.append(("message", COMM))
        if m.get("has_gates"):
            legend.append(("listening", LISTENING))
        if not m.get("has_comm"):
            legend.append(("no communication", HUD_DIM))
        legend += [(f"{mark} {name}", HUD_DIM) for name, mark in self.marks.items()]
        _row(surface, small, legend, 10, W - 10, y, 16)


def _row(surface, font, items, left: int, right: int, y: int, gap: int) -> None:
    """Texts left to right from x = left, as many as fit before x = right."""
    x = left
    for text, colour in items:
        img = font.render(text, True, colour)
        if x + img.get_width() > right:
            break
        surface.blit(img, img.get_rect(midleft=(x, y)))
        x += img.get_width() + gap


def _arrow(surface, colour, start, end, radius: int, width: int) -> None:
    """A line from the edge of the circle at start to the edge of the one at end, with a small head."""
    import pygame

    s, e = np.asarray(start, float), np.asarray(end, float)
    d = e - s
    length = float(np.hypot(*d))
    if length <= 2 * radius:
        return
    u = d / length
    a, b = s + u * radius, e - u * (radius + 1)
    pygame.draw.line(surface, colour, a, b, width)
    head = max(4.0, radius * 0.6)
    normal = np.array([-u[1], u[0]])
    pygame.draw.polygon(surface, colour, [b, b - u * head + normal * head * 0.5, b - u * head - normal * head * 0.5])


def show(replay: Replay, size: tuple[int, int] = (1200, 760)) -> None:
    """Open a resizable window playing the replay until q, Esc or the window is closed."""
    import pygame

    if (sys.platform.startswith("linux") and not os.environ.get("SDL_VIDEODRIVER")
            and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")):
        # SDL would fall back to a driver that shows nothing, after printing its own complaints
        raise ViewerError("cannot open a window (no display: DISPLAY and WAYLAND_DISPLAY are unset); "
                          "export instead: marl replay FILE --export out.gif")
    try:
        pygame.display.init()
        if pygame.display.get_driver() in ("dummy", "offscreen"):
            raise pygame.error(f"SDL video driver {pygame.display.get_driver()!r} shows nothing")
        screen = pygame.display.set_mode(size, pygame.RESIZABLE)
    except pygame.error as err:
        pygame.display.quit()
        raise ViewerError(f"cannot open a window ({err}); export instead: marl replay FILE --export out.gif"
                          ) from None
    try:
        pygame.display.set_caption(f"marl replay: {replay.meta['map']} {replay.meta['learner']}")
        renderer = Renderer(replay)
        playback = Playback(replay.n_steps + 1)
        clock = pygame.time.Clock()
        while not playback.quit:
            for event in pygame.event.get():
                on_event(playback, event)
            playback.tick(clock.tick(60) / 1000.0)
            renderer.draw(screen, playback.frame, playback)
            pygame.display.flip()
    finally:
        pygame.display.quit()


def export(replay: Replay, out, step: int | None = None, size: tuple[int, int] = EXPORT_SIZE,
           speed: int = DEFAULT_SPEED) -> list[Path]:
    """Render without a display: a GIF of every step, one PNG (of `step`), or a folder of PNG frames."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # no window is opened, but SDL must not look for one
    import pygame

    text = str(out)
    out = Path(out)
    is_dir = text.endswith(("/", os.sep)) or out.is_dir()
    if not is_dir and out.suffix.lower() not in (".gif", ".png"):
        raise ViewerError(f"--export {text}: give a .gif or .png file, or a folder ending in /")
    last = replay.n_steps
    if step is not None and not 0 <= step <= last:
        raise ViewerError(f"--step {step} is outside this replay's steps 0..{last}")
    if step is not None and (is_dir or out.suffix.lower() == ".gif"):
        raise ViewerError("--step goes with a .png export (a .gif or a folder holds every step)")
    renderer = Renderer(replay)
    surface = pygame.Surface(size)
    frames = [step or 0] if not is_dir and out.suffix.lower() == ".png" else list(range(last + 1))
    if is_dir:
        out.mkdir(parents=True, exist_ok=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if is_dir or out.suffix.lower() == ".png":
        for f in frames:
            renderer.draw(surface, f)
            path = out / f"frame_{f:04d}.png" if is_dir else out
            pygame.image.save(surface, str(path))
            written.append(path)
        return written
    from PIL import Image

    images = []
    for f in frames:
        renderer.draw(surface, f)
        rgb = pygame.surfarray.array3d(surface).transpose(1, 0, 2)
        images.append(Image.fromarray(rgb).quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=0))
    durations = [int(1000 / speed)] * len(images)
    durations[-1] = 2000  # hold the end of the battle before the loop starts again
    images[0].save(out, save_all=True, append_images=images[1:], duration=durations, loop=0, optimize=True)
    return [out]
