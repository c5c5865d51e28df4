"""What every command shares: the two rich consoles and the parsing of ``--shape`` options."""

from __future__ import annotations

from rich.console import Console

stdout = Console()
stderr = Console(stderr=True)


def parse_shapes(items: tuple[str, ...]) -> dict[str, list[int]]:
    """``--shape name=d0,d1,...`` options as a mapping (a bad one is a BadInputError)."""
    from onnxopt.data import parse_shape_option

    return parse_shape_option(list(items))
