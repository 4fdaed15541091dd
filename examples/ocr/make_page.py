"""Renders a page with known text for the OCR demo: make_page.py OUT.png "TEXT"."""
import sys

from PIL import Image, ImageDraw, ImageFont

out, text = sys.argv[1], sys.argv[2]
font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 48)
left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
img = Image.new("L", (right - left + 120, bottom - top + 120), 255)
ImageDraw.Draw(img).text((60 - left, 60 - top), text, font=font, fill=0)
img.save(out)
