"""cnnlib.viz: the offline animation player against matplotlib's own to_jshtml."""

from __future__ import annotations

import doctest
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.animation import FuncAnimation  # noqa: E402

import cnnlib.viz  # noqa: E402
from cnnlib.viz import ICONS, animation_html  # noqa: E402

FRAME = re.compile(r'"data:image/png;base64,([^"]+)"')


@pytest.fixture
def anim():
    fig, ax = plt.subplots(figsize=(1, 1), dpi=20)
    line = ax.plot([0, 1], [0, 0])[0]
    yield FuncAnimation(fig, lambda t: line.set_ydata([0, t]), frames=4)
    plt.close(fig)


def test_no_off_site_url_and_no_font_awesome(anim):
    html = animation_html(anim)
    assert "maxcdn" in anim.to_jshtml()  # what there is to remove, in this matplotlib
    assert not re.search(r"https?://", html)
    assert "font-awesome" not in html and '<i class="fa' not in html


def test_every_button_gets_its_symbol(anim):
    html = animation_html(anim)
    buttons = re.findall(r'<button title="([^"]+)"[^>]*>\s*([^<]*?)</button>', html)
    assert len(buttons) == len(ICONS) == 9
    assert all(symbol.strip() for _, symbol in buttons)
    assert dict(buttons)["Play"] == ICONS["fa fa-play"]
    assert dict(buttons)["Pause"] == ICONS["fa fa-pause"]


def test_frames_and_slider_are_matplotlibs(anim):
    html = animation_html(anim)
    plain = anim.to_jshtml()
    assert FRAME.findall(html) == FRAME.findall(plain)
    assert len(FRAME.findall(html)) == 4
    assert 'type="range"' in html and "set_frame" in html


@pytest.mark.parametrize("mode", ["once", "loop", "reflect"])
def test_default_mode_is_checked(anim, mode):
    html = animation_html(anim, default_mode=mode)
    checked = re.findall(r'value="(\w+)" id="_anim_radio\d_\w+"\s*checked', html)
    assert checked == [mode]


def test_rejects_what_is_not_an_animation():
    with pytest.raises(TypeError, match=r"animation_html: `anim` must be a matplotlib.*got str"):
        animation_html("<html>")


def test_rejects_unknown_mode(anim):
    with pytest.raises(ValueError, match=r"animation_html: `default_mode` must be one of .*'bounce'"):
        animation_html(anim, default_mode="bounce")
    assert "set_frame" in animation_html(anim, default_mode="loop")  # rendered; nothing broken


def test_docstring_example_runs():
    failures, tried = doctest.testmod(
        cnnlib.viz, extraglobs={"plt": plt, "FuncAnimation": FuncAnimation}, report=False
    )
    plt.close("all")
    assert tried > 0 and failures == 0
