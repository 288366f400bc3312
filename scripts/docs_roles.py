"""A mkdocs hook: the build fails on reStructuredText roles left in docstrings.

mkdocstrings renders Markdown: a Sphinx role (``:class:`Foo```) would be printed
as it is, and the strict build would not notice.
"""

from __future__ import annotations

import re
from typing import Any

from mkdocs.exceptions import PluginError

_ROLE = re.compile(r":(?:class|meth|func|attr|exc|data|mod|obj|ref|py:\w+):(?:`|<code>)")


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    found = sorted(set(_ROLE.findall(html)))
    if found:
        raise PluginError(
            f"{page.file.src_path}: reStructuredText roles left in the text "
            f"({', '.join(found)}); write Markdown (`Name` or [Name][tidings.Name])"
        )
    return html
