"""HTML -> PDF with weasyprint, fast enough to re-render a whole class on every rescore.

Parsing `style.css` is done once per process (one cached `weasyprint.CSS`). The rest of the
cost is fonts. Without HarfBuzz's subsetter (`libharfbuzz-subset0`), weasyprint subsets each
font it embeds with fontTools, keeping every glyph id: ~0.1 s for each DejaVu face and ~2.3 s
for the 65k-glyph Noto Sans CJK. So, when that library is missing:

* once per process, DejaVu Sans / Sans Mono (regular and bold) are cut down to the Latin,
  punctuation and symbol characters reports use, and given to weasyprint as the
  `@font-face` families "DLLab Sans" and "DLLab Mono";
* per document, the few characters outside that set (a Chinese name, a comment in a cell)
  are cut out of Noto Sans CJK (~0.15 s) into the family "DLLab Noto CJK".

`style.css` lists these families first and the system fonts after them, so a character
the small fonts lack still renders, only more slowly. With HarfBuzz-subset installed the
small fonts are not needed and weasyprint embeds the system fonts directly.
"""

from __future__ import annotations

import base64
import functools
import io
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from grader.resources import resource_dir

# The family style.css names between the Latin font and the system CJK fonts.
CJK_FAMILY = "DLLab Noto CJK"
# What the cut-down Latin fonts keep: ASCII, Latin-1, Latin Extended-A, general punctuation,
# arrows and the math signs reports print (−, ±, ×, ≈, ≤, ≥).
_REPERTOIRE = frozenset(
    [*range(0x20, 0x7F), *range(0xA0, 0x180), *range(0x2010, 0x2028), *range(0x2030, 0x203B),
     *range(0x2190, 0x2194), 0x2212, 0x2248, 0x2260, 0x2264, 0x2265, 0x2022, 0x25CF, 0x2713, 0x2717])
# Characters a CJK run may pull into the subset font (pango puts adjacent spaces and
# punctuation in the same run as the Han characters).
_ALWAYS = "".join(chr(c) for c in range(0x20, 0x7F)) + "\u00a0\u2026\u2013\u2014\u2018\u2019\u201c\u201d"
_DATA_URI = re.compile(r"data:[^\"')\s]+")
_TAG = re.compile(r"<[^>]*>")
_LATIN_FACES = (("DLLab Sans", "normal", "DejaVu Sans:style=Book"), ("DLLab Sans", "bold", "DejaVu Sans:style=Bold"),
                ("DLLab Mono", "normal", "DejaVu Sans Mono:style=Book"),
                ("DLLab Mono", "bold", "DejaVu Sans Mono:style=Bold"))
_DROP = ["GSUB", "GPOS", "GDEF", "BASE", "VORG", "vhea", "vmtx", "kern", "MATH", "FFTM", "hdmx", "LTSH", "VDMX"]


@dataclass(frozen=True)
class _Fonts:
    """The small fonts handed to weasyprint, built once per process."""

    latin_css: str
    """@font-face rules (data: URIs) for DLLab Sans and DLLab Mono; empty without DejaVu."""
    latin_cmap: frozenset[int]
    """Code points every DLLab Sans/Mono face has."""
    cjk_file: str | None
    """The Noto Sans CJK collection the per-document subsets are cut from."""
    cjk_index: int
    cjk_cmap: frozenset[int]


def _fc_match(pattern: str) -> tuple[str, int, str] | None:
    try:
        out = subprocess.run(
            ["fc-match", "--format=%{file}|%{index}|%{family[0]}", pattern],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    parts = out.split("|")
    if len(parts) != 3 or not parts[0]:
        return None
    return parts[0], int(parts[1] or 0), parts[2]


def _subset(file: str, index: int, codepoints: object) -> tuple[bytes, frozenset[int]]:
    """A compact subset (new glyph ids, no hinting) of one face, and the code points it covers."""
    from fontTools import subset
    from fontTools.ttLib import TTFont

    options = subset.Options(
        retain_gids=False, hinting=False, desubroutinize=True, ignore_missing_glyphs=True,
        layout_features=[], name_IDs=["*"], notdef_outline=True,
    )
    options.drop_tables += _DROP
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=codepoints)
    with TTFont(file, fontNumber=index, lazy=True) as font:
        for tag in _DROP:  # before subsetting, or fontTools parses GSUB/GPOS only to drop them
            if tag in font:
                del font[tag]
        subsetter.subset(font)
        covered = frozenset(font.getBestCmap() or ())
        out = io.BytesIO()
        font.save(out)
    return out.getvalue(), covered


def _face(family: str, weight: str, data: bytes, kind: str) -> str:
    uri = f"data:font/{kind};base64," + base64.b64encode(data).decode("ascii")
    return f'@font-face {{ font-family: "{family}"; font-weight: {weight}; src: url({uri}); }}\n'


@functools.lru_cache(maxsize=1)
def _fonts() -> _Fonts | None:
    """None when weasyprint subsets fast by itself (HarfBuzz-subset is installed)."""
    try:
        from weasyprint.text.ffi import harfbuzz, harfbuzz_subset

        if harfbuzz_subset and harfbuzz.hb_version_atleast(4, 1, 0):
            return None
    except (ImportError, AttributeError):
        pass
    css, cmap = "", None
    for family, weight, pattern in _LATIN_FACES:
        match = _fc_match(pattern)
        if match is None or not match[2].startswith("DejaVu"):
            css, cmap = "", None
            break
        data, covered = _subset(match[0], match[1], _REPERTOIRE)
        css += _face(family, weight, data, "ttf")
        cmap = covered if cmap is None else cmap & covered
    cjk = _fc_match("Noto Sans CJK TC:style=Regular")
    if cjk is None or "CJK" not in cjk[2]:
        cjk = None
    cjk_cmap = frozenset()
    if cjk is not None:
        from fontTools.ttLib import TTFont

        with TTFont(cjk[0], fontNumber=cjk[1], lazy=True) as font:
            cjk_cmap = frozenset(font.getBestCmap() or ())
    return _Fonts(css, cmap or frozenset(), cjk[0] if cjk else None, cjk[1] if cjk else 0, cjk_cmap)


class _Engine:
    """One per process: the parsed stylesheet, the small fonts and their configuration."""

    def __init__(self, css_path: Path) -> None:
        import weasyprint
        from weasyprint.text.fonts import FontConfiguration

        self._weasyprint = weasyprint
        self._font_config_cls = FontConfiguration
        self.fonts = _fonts()
        self.font_config = FontConfiguration()
        self.css = weasyprint.CSS(filename=str(css_path), font_config=self.font_config)
        self.faces = weasyprint.CSS(string=self.fonts.latin_css, font_config=self.font_config) \
            if self.fonts and self.fonts.latin_css else None

    def render(self, html: str) -> bytes:
        weasyprint = self._weasyprint
        font_config = self.font_config
        stylesheets = [self.css] + ([self.faces] if self.faces else [])
        fonts = self.fonts
        if fonts is not None and fonts.cjk_file:
            text = _TAG.sub(" ", _DATA_URI.sub("", html))
            needed = ({ord(c) for c in set(text)} - fonts.latin_cmap) & fonts.cjk_cmap
            if needed:
                data, _ = _subset(fonts.cjk_file, fonts.cjk_index, {ord(c) for c in _ALWAYS} | needed)
                # A fresh configuration per such document: the family name can stay fixed
                # and the subsets of earlier students never pile up in fontconfig.
                font_config = self._font_config_cls()
                faces = fonts.latin_css + _face(CJK_FAMILY, "normal", data, "otf") \
                    + _face(CJK_FAMILY, "bold", data, "otf")
                stylesheets = [self.css, weasyprint.CSS(string=faces, font_config=font_config)]
        # base_url=None keeps relative links (feedback/<id>.pdf) relative in the PDF,
        # so the output folder can be moved or zipped for the TAs.
        document = weasyprint.HTML(string=html, base_url=None)
        return document.write_pdf(stylesheets=stylesheets, font_config=font_config)


@functools.lru_cache(maxsize=1)
def _engine() -> _Engine:
    return _Engine(resource_dir("templates") / "style.css")


def html_to_pdf(html: str) -> bytes:
    """The PDF of `html` (which must embed its images as data: URIs), styled by style.css."""
    return _engine().render(html)


def stylesheet_text() -> str:
    """style.css, for inlining into the HTML copies so they stand alone in a browser."""
    return (resource_dir("templates") / "style.css").read_text(encoding="utf-8")
