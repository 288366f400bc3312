"""Documentation build helpers: a mkdocs hook and a griffe extension.

The hook fails the build on reStructuredText roles left in docstrings: mkdocstrings
renders Markdown, so a Sphinx role (``:class:`Foo```) would be printed as it is, and
the strict build would not notice.

The griffe extension (``CommentDocstrings``, named in mkdocs.yml) reads the ``#:``
comments that document attributes throughout the code (``#: The default
retry_backoff...`` above an assignment, or above a TypedDict's field) as their
docstrings, so the API page shows them. griffe itself only reads a string placed
after the assignment.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from griffe import Attribute, Docstring, Extension
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


class CommentDocstrings(Extension):
    """The ``#:`` comment lines right above an attribute become its docstring."""

    def on_attribute_instance(self, *, node: Any, attr: Attribute, **kwargs: Any) -> None:
        if attr.docstring is not None or not isinstance(node, ast.AST) or not attr.lineno:
            return
        try:
            lines = attr.lines_collection[attr.filepath]  # type: ignore[index]
        except (KeyError, TypeError):
            return
        comment: list[str] = []
        index = attr.lineno - 2  # the line above, 0-based
        while index >= 0 and lines[index].lstrip().startswith("#:"):
            comment.insert(0, lines[index].lstrip()[2:].strip())
            index -= 1
        if comment:
            attr.docstring = Docstring(
                "\n".join(comment), lineno=index + 2, endlineno=attr.lineno - 1, parent=attr
            )
