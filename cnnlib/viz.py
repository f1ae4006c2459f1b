"""Animations for the book's pages, as self-contained HTML that works offline.

Introduced in chapter 01, notebooks/01-convolution.ipynb. Matplotlib's ``to_jshtml`` embeds every
frame as a PNG and adds a slider and playback buttons, but it styles the buttons with Font Awesome
loaded from a CDN: offline (and on a site that refuses off-site requests, as the book's browser
test does) the buttons are empty. `animation_html` removes that stylesheet and draws the buttons
with Unicode symbols instead.
"""

from __future__ import annotations

import re
from typing import Any

from matplotlib.animation import Animation

MODES = ("once", "loop", "reflect")

# Font Awesome 4 icons in matplotlib's template -> the Unicode symbols of a media player.
# U+FE0E asks for the text (not emoji) form of the triangles.
ICONS = {
    "fa fa-minus": "\u2212",  # slower
    "fa fa-fast-backward": "|\u25c0\ufe0e\u25c0\ufe0e",  # first frame
    "fa fa-step-backward": "|\u25c0\ufe0e",  # previous frame
    "fa fa-play fa-flip-horizontal": "\u25c0\ufe0e",  # play backwards
    "fa fa-pause": "\u275a\u275a",  # pause
    "fa fa-play": "\u25b6\ufe0e",  # play
    "fa fa-step-forward": "\u25b6\ufe0e|",  # next frame
    "fa fa-fast-forward": "\u25b6\ufe0e\u25b6\ufe0e|",  # last frame
    "fa fa-plus": "+",  # faster
}
_ICON_TAG = re.compile(r'<i class="(fa [^"]*)"></i>')
_STYLESHEET = re.compile(r"<link[^>]*font-awesome[^>]*>\s*")


def animation_html(anim: Any, default_mode: str = "once") -> str:
    """A matplotlib animation as one HTML string: frames, slider and buttons, no off-site request.

    Equal to ``anim.to_jshtml(default_mode=default_mode)`` except that the Font Awesome
    stylesheet link is removed and each button's icon is replaced by a Unicode symbol (see
    `ICONS`), so the player works in a notebook, on a static site and offline alike. Display it
    with ``IPython.display.HTML(animation_html(anim))``.

    Args:
        anim: a `matplotlib.animation.Animation` (e.g. a `FuncAnimation`) with a finite number
            of frames.
        default_mode: what the player does at the last frame: "once" (stop), "loop" or
            "reflect" (play backwards).

    Returns:
        str: HTML with the frames embedded as base64 PNGs and no URL outside the page.

    Raises:
        TypeError: `anim` is not a matplotlib Animation.
        ValueError: `default_mode` is not one of "once", "loop", "reflect".

    Example:
        >>> fig, ax = plt.subplots()
        >>> anim = FuncAnimation(fig, lambda t: ax.set_title(str(t)), frames=3)
        >>> "https://" in animation_html(anim)
        False

    Introduced in chapter 01, notebooks/01-convolution.ipynb.
    """
    where = "animation_html"
    if not isinstance(anim, Animation):
        raise TypeError(
            f"{where}: `anim` must be a matplotlib.animation.Animation; got "
            f"{type(anim).__name__}. Build one with FuncAnimation(fig, update, frames=n)."
        )
    if default_mode not in MODES:
        raise ValueError(
            f"{where}: `default_mode` must be one of {MODES}; got {default_mode!r}. "
            f"Use \"once\" to stop at the last frame."
        )
    html = anim.to_jshtml(default_mode=default_mode)  # (frames as base64 PNGs, player JS)
    html = _STYLESHEET.sub("", html)
    # An icon this version of matplotlib adds and ICONS lacks keeps its (now empty) tag.
    return _ICON_TAG.sub(lambda m: ICONS.get(m.group(1), m.group(0)), html)
