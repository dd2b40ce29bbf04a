"""A spinner on stderr while a command loads its model (importing torch and open_clip and
reading the weights takes 5-15 s on a CPU, with nothing else to show for it)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from semstore.collection import Collection
    from semstore.encoders import Encoder


def model_label(collection: Collection) -> str:
    """``model (weights)`` as a user reads it: the pretrained tag, or that there is none."""
    return f"{collection.model} ({collection.pretrained or 'no pretrained weights'})"


def load_encoder(collection: Collection) -> Encoder:
    """The collection's encoder, loaded under a spinner on a terminal's stderr.

    Off a terminal (pipes, ``--json`` consumers, CI logs) nothing is printed. The encoder is
    cached by the database, so the command's own use of it later costs nothing.
    """
    console = Console(stderr=True)
    started = time.perf_counter()
    with console.status(f"loading model {model_label(collection)} ...", spinner="dots"):
        encoder = collection.encoder
    if console.is_terminal:
        console.print(f"[dim]model {model_label(collection)} loaded in {time.perf_counter() - started:.1f} s[/dim]", highlight=False)
    return encoder
