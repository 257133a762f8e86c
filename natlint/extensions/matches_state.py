"""Placeholder: filled in by the extension work."""

from natlint.extensions.spec import ExtensionSpec

SPECS: tuple[ExtensionSpec, ...] = ()
