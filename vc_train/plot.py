"""A loss curve drawn with PIL (matplotlib is not a ComfyUI requirement)."""
import math

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
AXIS = (60, 60, 60)
GRID = (225, 225, 225)
RAW = (160, 190, 230)
SMOOTH = (20, 70, 160)
STAGE = (200, 80, 60)


def _ema(values, weight):
    out, avg = [], None
    for v in values:
        avg = v if avg is None else weight * avg + (1 - weight) * v
        out.append(avg)
    return out


def render_loss_curve(steps, losses, stage_starts=(), width=768, height=432, title="training loss"):
    """RGB PIL image: raw loss (light), smoothed loss (dark), a vertical line where a stage starts."""
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    left, right, top, bottom = 64, 16, 28, 36
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    draw.text((left, 8), title, fill=AXIS, font=font)
    draw.rectangle([x0, y0, x1, y1], outline=AXIS)
    points = [(s, l) for s, l in zip(steps, losses) if l is not None and math.isfinite(l)]
    if not points:
        draw.text((x0 + 10, (y0 + y1) // 2), "no loss recorded yet", fill=AXIS, font=font)
        return img
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    smin, smax = min(xs), max(xs)
    lmin, lmax = min(ys), max(ys)
    if smax == smin:
        smax = smin + 1
    if lmax - lmin < 1e-12:
        lmin, lmax = lmin - 0.5 * abs(lmin or 1), lmax + 0.5 * abs(lmax or 1)

    def px(step, loss):
        return (x0 + (step - smin) / (smax - smin) * (x1 - x0), y1 - (loss - lmin) / (lmax - lmin) * (y1 - y0))

    for i in range(5):  # horizontal grid with loss labels
        value = lmin + (lmax - lmin) * i / 4
        _, y = px(smin, value)
        draw.line([x0, y, x1, y], fill=GRID)
        draw.text((4, y - 6), f"{value:.4g}", fill=AXIS, font=font)
    draw.text((x0, y1 + 8), f"step {smin}", fill=AXIS, font=font)
    draw.text((x1 - 70, y1 + 8), f"step {smax}", fill=AXIS, font=font)
    for start in stage_starts:
        if smin < start <= smax:
            x, _ = px(start, lmin)
            draw.line([x, y0, x, y1], fill=STAGE)
    if len(points) > 1:
        draw.line([px(s, l) for s, l in zip(xs, ys)], fill=RAW, width=1)
        draw.line([px(s, l) for s, l in zip(xs, _ema(ys, 0.9 if len(ys) > 20 else 0.5))], fill=SMOOTH, width=2)
    else:
        x, y = px(xs[0], ys[0])
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=SMOOTH)
    return img
