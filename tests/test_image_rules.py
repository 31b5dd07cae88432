"""Every rule by which predict refuses an image, and every branch that decides which class is ink,
tested just inside and just outside its threshold: moving any threshold, or flipping any branch,
fails a test here. Images are drawn here, exactly (no JPEG, no noise unless the rule is about noise).
"""

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from mnist_softmax.images import ImageError, decode, ink, prepare, rules, to_mnist

READ = "READ"


def _reason(mask: np.ndarray, paper: float = 1.0, ink: float = 0.0, noise: float = 0.0) -> str:
    """What prepare makes of a grey image: paper where mask is False, ink where it is True
    (values in [0, 1]), with Gaussian noise of that σ: READ, or the refusal's message."""
    img = np.where(mask, ink, paper).astype(np.float32)
    if noise:
        img += np.random.default_rng(0).normal(0, noise, img.shape).astype(np.float32)
    return _read(img)


def _read(page: np.ndarray) -> str:
    """READ, or the refusal's message, for a grey page (H, W) in [0, 1]."""
    try:
        prepare(page[..., None], None)
    except ImageError as e:
        return str(e)
    return READ


def _frame(side: int, height: int, width: int, wall: int, at: tuple[int, int] | None = None) -> np.ndarray:
    """A rectangular frame (its walls `wall` px thick) on a side×side page, centred or at (row, col)."""
    mask = np.zeros((side, side), bool)
    r, c = at or ((side - height) // 2, (side - width) // 2)
    mask[r : r + height, c : c + width] = True
    mask[r + wall : r + height - wall, c + wall : c + width - wall] = False
    return mask


def _ring(side: int, radius: float, wall: float) -> np.ndarray:
    y, x = np.mgrid[:side, :side] + 0.5
    d = np.hypot(y - side / 2, x - side / 2)
    return (d <= radius) & (d > radius - wall)


# ------------------------------------------------------------------------------------------ blank


@pytest.mark.parametrize("contrast,refused", [(0.07, True), (0.09, False)])
def test_blank_below_the_contrast_a_digit_needs(contrast, refused):
    reason = _reason(_ring(120, 40, 10), ink=1.0 - contrast)
    assert reason == ("no digit found (blank: ink and paper differ by 0.070; a digit needs 0.08)" if refused else READ)


@pytest.mark.parametrize("sigmas,refused", [(4.0, True), (8.0, False)])
def test_blank_when_a_faint_digit_is_within_the_papers_noise(sigmas, refused):
    """Contrast 0.2 (under 0.25): the ink must stand 6 σ of the paper's noise above it."""
    reason = _reason(_ring(120, 40, 10), ink=0.8, noise=0.2 / sigmas)
    assert reason.startswith("no digit found (blank: ink and paper differ by 0.19") == refused, reason
    assert ("a digit needs 6 σ" in reason) == refused and (reason == READ) != refused


def test_a_clear_digit_is_read_however_noisy_its_paper():
    """Contrast over 0.25: noise alone is no reason to refuse (a grainy photo of a dark digit)."""
    assert _reason(_ring(120, 40, 10), ink=0.6, noise=0.4 / 4.0) == READ


# ------------------------------------------------------------------------------------------ speck


@pytest.mark.parametrize("extent,refused", [(2, True), (3, False)])
def test_a_speck_spans_fewer_than_3_pixels(extent, refused):
    mask = np.zeros((28, 28), bool)
    mask[10 : 10 + extent, 10] = True  # an L of that extent, light on black as MNIST is
    mask[10 + extent - 1, 10 : 10 + extent] = True
    reason = _reason(mask, paper=0.0, ink=1.0)
    want = f"no digit found (a speck: the ink spans {extent}×{extent} px, under 3 px)"
    assert (reason == want) == refused and (reason == READ) != refused, reason


@pytest.mark.parametrize("size,refused", [(19, True), (21, False)])
def test_a_speck_is_under_a_twentieth_of_the_image(size, refused):
    reason = _reason(_frame(400, size, size, 4))
    want = f"no digit found (a speck: the largest mark spans {size}×{size} px, under 1/20 of the image's 400 px)"
    assert (reason == want) == refused and (reason == READ) != refused, reason


# ------------------------------------------------------------------------------------------ too thin


@pytest.mark.parametrize("wall,refused", [(3, True), (5, False)])
def test_too_thin_under_0_3_px_at_mnists_scale(wall, refused):
    """A ring 200 px across with walls of 3 px: 0.23 px at the 20-px scale; of 5 px: 0.4 px."""
    reason = _reason(_ring(240, 100, wall))
    assert reason.startswith("no digit found (too thin: its strokes are 0.2") == refused, reason
    assert (reason == READ) != refused


# ------------------------------------------------------------------------------------------ blot


@pytest.mark.parametrize("notch,refused", [(38, True), (40, False)])
def test_a_blot_fills_over_90_percent_of_its_box(notch, refused):
    """A solid square with a square notch out of a corner: 91% or 89% of its box at the 20-px scale."""
    mask = np.zeros((200, 200), bool)
    mask[40:160, 40:160] = True
    mask[40 : 40 + notch, 40 : 40 + notch] = False
    reason = _reason(mask)
    assert reason.startswith("no digit found (a blot: it fills 91% of its box") == refused, reason
    assert (reason == READ) != refused


@pytest.mark.parametrize("aspect,refused", [(2.6, True), (2.7, False)])
def test_a_blot_has_over_15_percent_of_its_ink_deep_inside(aspect, refused):
    """Solid bars fill all of their box; 2.6× longer than tall, 18% of the ink lies deeper than a
    sixth of the length; 2.7×, 10%."""
    mask = np.zeros((300, 300), bool)
    h = int(200 / aspect)
    mask[150 - h // 2 : 150 - h // 2 + h, 50:250] = True
    reason = _reason(mask)
    assert (reason == "no digit found (a blot: it fills 100% of its box and 18% of its ink lies deeper inside it "
            "than 1/6 of its size; a digit's strokes leave room)") == refused, reason  # fmt: skip
    assert (reason == READ) != refused


# ------------------------------------------------------------------------------------------ a line


@pytest.mark.parametrize("aspect,refused", [(2.9, False), (3.1, True)])
def test_a_line_is_over_3_times_wider_than_tall(aspect, refused):
    reason = _reason(_frame(300, int(240 / aspect), 240, 8))
    want = f"no digit found (a line: the ink is {aspect:.1f}× wider than tall, a digit at most 2×)"
    assert (reason == want) == refused and (reason == READ) != refused, reason


# ------------------------------------------------------------------------------------------ several marks


def _two_frames(gap: int, second: tuple[int, int] = (40, 40), wall: int = 6, stacked: bool = False) -> np.ndarray:
    """A 40×40 frame and a second of (height, width) `gap` px to its right (or below it)."""
    mask = _frame(120, 40, 40, wall, at=(30, 15))
    h, w = second
    mask |= _frame(120, h, w, min(wall, w // 2), at=(30 + (40 - h) // 2, 55 + gap))
    return mask.T.copy() if stacked else mask


SIDE_BY_SIDE = "no digit found (several marks: 2 groups of ink side by side, each the size of a digit; crop the image to one digit)"  # noqa: E501
ABOVE = "no digit found (several marks: 2 groups of ink one above another, each the size of a digit; crop the image to one digit)"  # noqa: E501


@pytest.mark.parametrize("gap,refused", [(2, False), (3, True)])
def test_digits_side_by_side_are_at_least_0_07_of_the_boxs_height_apart(gap, refused):
    """Closer than that, they are one digit's broken strokes (an open 4); 0.07 of 40 px is 2.8."""
    assert _reason(_two_frames(gap)) == (SIDE_BY_SIDE if refused else READ)


def _marks_side_by_side(height: int, width: int, wall: int, gap: int, bridge: float = 0.0):
    """Two height×width frames `gap` columns apart, cropped to their box, and the ink per pixel:
    1 in the frames, `bridge` along a one-pixel line across the gap (the mask and mass that
    rules.several_marks is given)."""
    mask = np.zeros((height, 2 * width + gap), bool)
    for c in (0, width + gap):
        mask[:, c : c + width] = True
        mask[wall:-wall, c + wall : c + width - wall] = False
    mass = mask.astype(np.float32)
    if bridge:
        mask[height // 2, width : width + gap] = True
        mass[height // 2, width : width + gap] = bridge
    return mask, mass


@pytest.mark.parametrize("gap,refused", [(1, False), (2, True)])
def test_digits_side_by_side_are_at_least_2_blank_columns_apart(gap, refused):
    """In a digit 12 px tall (an 8×8 image's), 0.07 of its height is under a pixel: a single blank
    column is the rounding of a stroke, not a gap between two digits."""
    reason = rules.several_marks(*_marks_side_by_side(12, 8, 2, gap))
    assert reason == ("2 groups of ink side by side, each the size of a digit" if refused else "")


def test_only_the_gap_between_digit_sized_groups_counts():
    """A digit split by a blank column stays one digit when a speck lies beside it, farther off."""
    mask, mass = _marks_side_by_side(40, 20, 6, 1)
    mask, mass = np.pad(mask, ((0, 0), (0, 7))), np.pad(mass, ((0, 0), (0, 7)))
    mask[20:23, -2:], mass[20:23, -2:] = True, 1.0  # 5 blank columns, then a 2×3 speck
    assert rules.several_marks(mask, mass) == ""
    mask, mass = _marks_side_by_side(40, 20, 6, 1)  # the same, turned: one above another
    mask, mass = np.pad(mask.T, ((0, 10), (0, 0))), np.pad(mass.T, ((0, 10), (0, 0)))
    mask[-2:, 20:23], mass[-2:, 20:23] = True, 1.0  # 8 blank rows (over 0.3 of 20), then the speck
    assert rules.several_marks(mask, mass) == ""


@pytest.mark.parametrize("bridge,refused", [(0.55, True), (0.65, False)])
def test_columns_with_a_twentieth_of_the_median_columns_ink_join_digits_side_by_side(bridge, refused):
    """A thin join across the gap (a thick 8's waist) keeps one digit; fainter, it is anti-aliasing:
    the median column holds 12 (the frames' 6-px walls, 40 px tall), a twentieth of it is 0.6."""
    reason = rules.several_marks(*_marks_side_by_side(40, 40, 6, 6, bridge))
    assert reason == ("2 groups of ink side by side, each the size of a digit" if refused else "")


@pytest.mark.parametrize("gap,refused", [(11, False), (12, True)])
def test_digits_one_above_another_are_at_least_0_3_of_a_digits_height_apart(gap, refused):
    """Closer than that, they are one digit broken across (a 5's loose bar, an 8 in two rings)."""
    assert _reason(_two_frames(gap, stacked=True)) == (ABOVE if refused else READ)


@pytest.mark.parametrize("gap,refused", [(11, False), (12, True)])
def test_a_narrow_digit_one_above_another_counts_as_a_digit(gap, refused):
    """A 1 (a frame 8 px wide, 40 tall) below a 40×40 frame: as narrow as it is, it is a digit of its
    own once 0.3 of its height apart (a 1 stacked over a 7 was read as one digit)."""
    assert _reason(_two_frames(gap, (8, 40), stacked=True)) == (ABOVE if refused else READ)


@pytest.mark.parametrize("width,refused", [(16, False), (15, True)])
def test_a_narrow_group_one_above_another_is_a_digit_from_twice_as_tall_as_wide(width, refused):
    """Under half the box's width (20 px), a group 30 px tall counts as a digit when it is twice as
    tall as wide (a 1), not when it is squatter (a 9's loose tail, a piece of a broken 3)."""
    assert _reason(_two_frames(14, (width, 30), stacked=True)) == (ABOVE if refused else READ)


@pytest.mark.parametrize("height,refused", [(23, False), (24, True)])
def test_digits_one_above_another_are_each_at_least_0_6_of_the_tallest_ones_height(height, refused):
    """Below a 40×40 frame, 14 px apart, a frame `height` tall: 0.6 of 40 is 24 px; a shorter group
    is a broken stroke (a 5's bar), not a digit."""
    assert _reason(_two_frames(14, (40, height), stacked=True)) == (ABOVE if refused else READ)


@pytest.mark.parametrize("width,refused", [(3, False), (4, True)])
def test_digits_one_above_another_each_hold_0_15_of_the_ink(width, refused):
    """Below a 40×40 frame (816 px of ink), 14 px apart, a solid bar 40 px tall: 3 px wide holds 120
    px, 0.13 of the ink; 4 px holds 160, 0.16 (a thin 1 over a bold 8 holds 0.15 and more)."""
    mask = _frame(120, 40, 40, 6, at=(15, 30))
    mask[69:109, 48 : 48 + width] = True
    assert _reason(mask) == (ABOVE if refused else READ)


def test_a_1_over_another_mnist_digit_is_two_digits_not_one(mnist):
    """30 MNIST 1s, each over another test digit, 0.4 of a digit's height apart: 14 of 30 were read as
    one digit (the 1 was too narrow to count)."""
    from userstyle import stacked_pair

    rng = np.random.default_rng(0)
    ones, others = np.flatnonzero(mnist.test_labels == 1), np.flatnonzero(mnist.test_labels != 1)
    for k in range(30):
        page = stacked_pair(mnist.test_images[rng.choice(ones)], mnist.test_images[rng.choice(others)], 0.4)
        assert _read(page) == ABOVE, k


APART = "no digit found (several marks: 2 marks the size of a digit, apart; crop the image to one digit)"


def _far_apart(height: int, width: int = 40, solid: bool = False) -> np.ndarray:
    """A 40×40 frame and a second mark 125 px to its right on a 250-px page: too far to join it."""
    mask = _frame(250, 40, 40, 6, at=(100, 15))
    second = _frame(250, height, width, 6, at=(100 + (40 - height) // 2, 180))
    if solid:
        second[100:140, 180 : 180 + width] = True
    return mask | second


@pytest.mark.parametrize("height,refused", [(17, False), (18, True)])
def test_a_mark_too_far_to_join_the_digit_is_another_digit_from_half_its_height(height, refused):
    """Dust or a dash elsewhere on the page is left out; half the digit's height (20 px, read on
    the view in 2-px blocks) is another digit ("3     7"), not something to ignore."""
    assert _reason(_far_apart(height)) == (APART if refused else READ)


@pytest.mark.parametrize("width,refused", [(4, False), (5, True)])
def test_a_mark_too_far_to_join_the_digit_is_another_digit_from_a_fifth_of_its_ink(width, refused):
    """A bar as tall as the frame: 4 px wide holds 160 px of ink, under a fifth of the frame's 816."""
    assert _reason(_far_apart(40, width, solid=True)) == (APART if refused else READ)


@pytest.mark.parametrize("height,refused", [(18, False), (20, True)])
def test_several_digits_are_each_at_least_half_the_boxs_height(height, refused):
    assert _reason(_two_frames(10, (height, height))) == (SIDE_BY_SIDE if refused else READ)


@pytest.mark.parametrize("width,refused", [(5, False), (6, True)])
def test_several_digits_each_hold_a_fifth_of_the_ink(width, refused):
    """A frame beside a solid bar of its height: 5 px wide, under a fifth of the ink; 6 px, over."""
    mask = _frame(120, 40, 40, 6, at=(30, 15))
    mask[30:70, 65 : 65 + width] = True
    assert _reason(mask) == (SIDE_BY_SIDE if refused else READ)


LINES = "no digit found (several marks: 2 lines of ink one above another; crop the image to one digit)"


@pytest.mark.parametrize("width,gap,refused", [(59, 4, False), (60, 4, True), (60, 2, False), (60, 3, True)])
def test_lines_of_text_are_three_times_wider_than_tall_and_0_15_of_their_height_apart(width, gap, refused):
    """Two 20-px-tall outlined bars one above another: lines from 60 px wide, apart from 3 px."""
    mask = _frame(120, 20, width, 4, at=(36, 20)) | _frame(120, 20, width, 4, at=(56 + gap, 20))
    assert _reason(mask) == (LINES if refused else READ)


def _page(draw, size=(420, 300)) -> Image.Image:
    im = Image.new("L", size, 245)
    draw(ImageDraw.Draw(im))
    return im


@pytest.mark.parametrize("gap", [0.1, 0.3, 0.6, 2.0])
def test_two_mnist_digits_side_by_side_are_refused_not_read_as_one(gap, mnist, tmp_path):
    seven, two = (
        np.asarray(Image.fromarray(mnist.test_images[i]).resize((140, 140)), np.float32) / 255 for i in (0, 1)
    )
    cols = [np.flatnonzero(d.max(0) > 0.2) for d in (seven, two)]
    seven, two = (d[:, c[0] : c[-1] + 1] for d, c in zip((seven, two), cols, strict=True))
    page = np.zeros((260, 80 + seven.shape[1] + int(gap * 140) + two.shape[1] + 80), np.float32)
    page[60:200, 80 : 80 + seven.shape[1]] = seven
    page[60:200, -80 - two.shape[1] : -80] = two
    Image.fromarray((240 - 210 * page).astype(np.uint8)).save(tmp_path / "72.png")
    with pytest.raises(ImageError, match=r"no digit found \(several marks: 2 (groups of ink side by side|marks)"):
        to_mnist(tmp_path / "72.png")


def test_a_digit_cut_across_by_a_gap_is_still_one_digit(mnist):
    """A pen that skips, a fold in the paper: two rows blanked across the middle of each of the
    first 30 test digits (a tenth of their height) leave each one digit, not two one above another."""
    for i in range(30):
        digit = mnist.test_images[i].copy()
        rows = np.flatnonzero(digit.max(1))
        middle = (rows[0] + rows[-1]) // 2
        digit[middle : middle + 2] = 0
        assert _reason(digit > 127, paper=0.0, ink=1.0) == READ, i


def test_a_page_of_text_is_refused_not_read_as_a_digit(tmp_path):
    font = ImageFont.load_default(size=48)
    text = "Dear Ann,\nthe meeting\nis at ten."
    _page(lambda d: d.multiline_text((30, 30), text, font=font, fill=20, stroke_width=2, stroke_fill=20)).save(
        tmp_path / "text.png"
    )
    with pytest.raises(ImageError, match=r"no digit found \(several marks: 3 lines of ink one above another"):
        to_mnist(tmp_path / "text.png")


# ------------------------------------------------------------------------------------------ dithering


def test_a_dithered_scan_is_read_like_the_same_digit_thresholded(mnist, trained, tmp_path):
    """Floyd–Steinberg dithering draws a grey pencil digit as scattered dots, which measured as
    strokes 0.1 px wide: read through a blur, it is the same digit as the thresholded scan, and
    classified alike (a one-pixel line drawing stays too thin)."""
    from mnist_softmax.checkpoint import load_checkpoint
    from mnist_softmax.model import classify

    model = load_checkpoint(trained[0] / "runs" / "latest" / "model.npz").model

    digit = np.asarray(Image.fromarray(mnist.test_images[0]).resize((224, 224), Image.Resampling.BILINEAR))
    page = np.full((304, 304), 245, np.uint8)
    page[40:264, 40:264] = 245 - (245 - 110) * (digit / 255)  # a grey pencil 7
    Image.fromarray(page).convert("1").save(tmp_path / "dithered.png")  # Pillow dithers by Floyd–Steinberg
    Image.fromarray(page).point(lambda v: 0 if v < 178 else 255).convert("1").save(tmp_path / "thresholded.png")
    dithered, thresholded = to_mnist(tmp_path / "dithered.png"), to_mnist(tmp_path / "thresholded.png")
    p = classify(model, np.stack([dithered.digit, thresholded.digit]))
    assert p.argmax(1).tolist() == [7, 7] and p[:, 7].min() > 0.9, p[:, 7]
    line = Image.new("1", (420, 300), 1)  # a clean two-colour drawing: white paper, a black diagonal
    ImageDraw.Draw(line).line([(60, 250), (300, 40)], fill=0, width=1)
    line.save(tmp_path / "line.png")
    with pytest.raises(ImageError, match=r"too thin"):
        to_mnist(tmp_path / "line.png")


@pytest.mark.parametrize("density,dithered", [(0.008, False), (0.012, True)])
def test_dithering_is_a_hundredth_of_the_pixels_unlike_all_four_neighbours(density, dithered):
    """Isolated dots scattered over a two-colour page at that density."""
    rng = np.random.default_rng(1)
    page = np.full((200, 200), 255, np.uint8)
    cells = rng.choice(100 * 100, int(density * 200 * 200), replace=False)
    page[2 * (cells // 100), 2 * (cells % 100)] = 0  # on a grid of 2: never touching
    assert decode.dithered(Image.fromarray(page)) == dithered
    assert not decode.dithered(Image.fromarray(page[:60, :60]))  # under 64 px: read as it is


# ------------------------------------------------------------------------------------------ polarity


def _classes(bright_border: float, bright_share: float, side: int = 50) -> np.ndarray:
    """upper (side, side) bool: the border that bright a share, the whole image that bright a share."""
    upper = np.zeros((side, side), bool)
    border = [(0, c) for c in range(side)] + [(side - 1, c) for c in range(side)]
    border += [(r, 0) for r in range(1, side - 1)] + [(r, side - 1) for r in range(1, side - 1)]
    for r, c in border[: round(bright_border * len(border))]:
        upper[r, c] = True
    inside = [(r, c) for r in range(1, side - 1) for c in range(1, side - 1)]
    extra = round(bright_share * side * side) - int(upper.sum())
    for r, c in inside[:extra]:
        upper[r, c] = True
    return upper


def _values(upper: np.ndarray, bright_sigma: float, dark_sigma: float) -> np.ndarray:
    rng = np.random.default_rng(3)
    return np.where(upper, 0.8 + rng.normal(0, bright_sigma, upper.shape), 0.2 + rng.normal(0, dark_sigma, upper.shape))


@pytest.mark.parametrize(
    "bright_border,dark_is_ink",
    [(0.81, True), (0.79, None), (0.21, None), (0.19, False)],
)
def test_the_paper_holds_80_percent_of_the_border(bright_border, dark_is_ink):
    """None: undecided by the border, so the next rule (here: bright share 0.5, equal spreads:
    the fallback, dark is ink) decides."""
    upper = _classes(bright_border, 0.5)
    got = ink._dark_is_ink(upper, _values(upper, 0.02, 0.02))
    assert got == (True if dark_is_ink is None else dark_is_ink)
    if dark_is_ink is None:  # and it is the share, not the border, that decides: a bright minority is ink
        upper = _classes(bright_border, 0.40)
        assert ink._dark_is_ink(upper, _values(upper, 0.02, 0.02)) is False


@pytest.mark.parametrize("bright_share,decided", [(0.41, False), (0.43, None), (0.57, None), (0.59, True)])
def test_the_ink_is_the_class_with_at_most_42_percent_of_the_pixels(bright_share, decided):
    """With the border even, a class under 42% of the pixels is the ink; between, the flatter
    class is the paper: here the bright one is flatter, so dark is ink, unless the share decided."""
    upper = _classes(0.5, bright_share)
    assert ink._dark_is_ink(upper, _values(upper, 0.01, 0.05)) == (True if decided is None else decided)
    assert ink._dark_is_ink(upper, _values(upper, 0.05, 0.01)) == (False if decided is None else decided)


@pytest.mark.parametrize("hole,loop_decides", [(0.019, False), (0.021, True)])
def test_a_class_closing_around_two_percent_of_the_pixels_is_the_ink(hole, loop_decides):
    """Border and share even: a bright class that closes around a dark hole of 2% of the pixels is the
    ink (a loop); a smaller hole leaves it to the next rules (here the fallback: dark is ink)."""
    side = 100
    upper = _classes(0.5, 0.5, side)
    n = round(hole * side * side)
    rows = np.flatnonzero(upper[:, side // 2])
    r0 = rows[len(rows) // 2] - 8  # inside the bright class, away from the dark one and the edges
    cells = [(r0 + k // 20, 40 + k % 20) for k in range(n)]
    for r, c in cells:
        upper[r, c] = False
    assert not any(upper[r, c] for r in range(side) for c in (0, side - 1) if (r, c) in cells)
    got = ink._dark_is_ink(upper, _values(upper, 0.02, 0.02))
    assert got is (not loop_decides)


@pytest.mark.parametrize("ratio,flat_decides", [(0.45, True), (0.55, False)])
def test_the_paper_is_the_class_with_under_half_the_others_spread(ratio, flat_decides):
    """Border and share even: a class whose spread is under half the other's is the paper; else the
    fallback: the darker class is the ink (True) either way round."""
    upper = _classes(0.5, 0.5)
    assert ink._dark_is_ink(upper, _values(upper, 0.04 * ratio, 0.04)) is True
    assert ink._dark_is_ink(upper, _values(upper, 0.04, 0.04 * ratio)) is (not flat_decides)


@pytest.mark.parametrize(
    "encoding",
    ["1", "L", "P", "RGB", "RGBA", "LA", "RGBA, paper transparent", "LA, paper transparent", "GIF, paper transparent"],
)
def test_a_dithered_scan_is_read_alike_whatever_its_encoding(mnist, trained, tmp_path, encoding):
    """The same dithered digit saved with an alpha channel (opaque, or with the paper transparent) reads
    as it does as a 1-bit PNG: transparency no longer hides that it is dithered."""
    from mnist_softmax.checkpoint import load_checkpoint
    from mnist_softmax.model import classify

    model = load_checkpoint(trained[0] / "runs" / "latest" / "model.npz").model
    rng = np.random.default_rng(len(encoding))
    for i in rng.choice(10000, 4, replace=False):
        digit = np.asarray(Image.fromarray(mnist.test_images[i]).resize((224, 224), Image.Resampling.BILINEAR))
        page = np.full((304, 304), 245, np.uint8)
        page[40:264, 40:264] = 245 - (245 - 110) * (digit / 255)  # a grey pencil digit
        dots = Image.fromarray(page).convert("1")
        dots.save(tmp_path / "one-bit.png")
        mode, _, paper = encoding.partition(", ")
        if paper:  # the dots opaque black, the paper fully transparent
            ink = np.asarray(dots.convert("L")) < 128
            la = np.stack([np.zeros_like(page), np.where(ink, 255, 0).astype(np.uint8)], -1)
            im = Image.fromarray(la, "LA")
            if mode == "RGBA":
                im = im.convert("RGBA")
            elif mode == "GIF":
                im = im.convert("RGBA").convert("P", palette=Image.Palette.ADAPTIVE, colors=2)
                im.info["transparency"] = im.getpixel((0, 0))
            path = tmp_path / f"dithered.{'gif' if mode == 'GIF' else 'png'}"
            im.save(path, **({"transparency": im.info["transparency"]} if mode == "GIF" else {}))
        else:
            path = tmp_path / "dithered.png"
            dots.convert(mode).save(path)
        read, reference = to_mnist(path), to_mnist(tmp_path / "one-bit.png")
        assert np.abs(read.digit.astype(int) - reference.digit).max() <= 1, (i, encoding)
        assert classify(model, read.digit[None]).argmax() == classify(model, reference.digit[None]).argmax()


def _touching(cover: np.ndarray, edges: int) -> np.ndarray:
    """cover (h, w) on a margin of paper, cut at its ink (level 0.5) on `edges` of its sides: top,
    then left, bottom, right."""
    rows, cols = np.flatnonzero((cover > 0.5).any(1)), np.flatnonzero((cover > 0.5).any(0))
    page = np.pad(cover, 40)
    cuts = [("top", rows[0] + 40), ("left", cols[0] + 40), ("bottom", rows[-1] + 41), ("right", cols[-1] + 41)]
    box = {"top": 0, "left": 0, "bottom": page.shape[0], "right": page.shape[1]}
    box.update(dict(cuts[:edges]))
    return page[box["top"] : box["bottom"], box["left"] : box["right"]]


def _loops(mnist) -> list[np.ndarray]:
    """Ink covers (h, w) in [0, 1] of closed loops: drawn rings (ellipses, and rounded boxes that run
    along the edges they touch) thin to thick, and MNIST's 0, 6, 8, 9."""
    out = []
    for width in (0.08, 0.2, 0.35):
        for radius in (None, 0.5, 0.35, 0.2):
            ring = Image.new("L", (480, 400), 0)
            draw = ImageDraw.Draw(ring)
            if radius is None:
                draw.ellipse([0, 0, 479, 399], outline=255, width=int(width * 400))
            else:
                draw.rounded_rectangle([0, 0, 479, 399], radius=int(radius * 400), outline=255, width=int(width * 400))
            out.append(np.asarray(ring.resize((120, 100), Image.Resampling.BOX), np.float32) / 255)
    for label in (0, 6, 8, 9):
        for i in np.flatnonzero(mnist.test_labels == label)[:3]:
            big = Image.fromarray(mnist.test_images[i]).resize((224, 224), Image.Resampling.BICUBIC)
            out.append(np.clip(np.asarray(big, np.float32) / 255, 0, 1))
    return out


@pytest.mark.parametrize("edges", [1, 2, 3, 4])
@pytest.mark.parametrize("dark_ink", [True, False])
def test_the_paper_outside_a_loop_touching_the_edges_stays_paper(mnist, edges, dark_ink, tmp_path):
    """A 0 (or 6, 8, 9, a drawn ring thin or thick) cropped to touch one to four edges: the loop is the
    ink in either polarity, so the paper outside it (the corners) never comes out as ink, framing the
    digit. A thick ring cut on all four sides is over half the pixels: the smaller class is not the ink."""
    for k, cover in enumerate(_loops(mnist)):
        crop = _touching(cover, edges)
        img = 235 - 205 * crop if dark_ink else 30 + 205 * crop
        Image.fromarray(np.round(img).astype(np.uint8)).save(tmp_path / "loop.png")
        read = to_mnist(tmp_path / "loop.png")
        assert read.inverted is dark_ink, (k, edges)
        if k < 12:  # a drawn ring: the corners of its box lie outside it, on the paper
            d = read.digit
            rows, cols = np.flatnonzero(d.max(1) > 0), np.flatnonzero(d.max(0) > 0)
            corners = d[rows[[0, 0, -1, -1]], cols[[0, -1, 0, -1]]]
            assert corners.max() < 40, (k, edges, corners)
