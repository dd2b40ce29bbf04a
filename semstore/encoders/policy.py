"""Which encoder models a server lets its clients ask for.

A client (an HTTP request, an imported archive) names a model and a pretrained tag; loading
one costs seconds and up to gigabytes, and a pretrained value could be a file path that
``torch.load`` would open. :class:`ModelPolicy` decides before anything loads: the model must
be the configured default or listed in ``settings.allowed_models``, and the weights a tag of
open_clip's registry (the configured default weights may be anything the operator chose,
e.g. a local checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from semstore.encoders.base import EncoderError
from semstore.encoders.configs import TINY_TEST_MODEL

if TYPE_CHECKING:
    from semstore.config import Settings


class ModelNotAllowedError(EncoderError):
    """The requested model or weights are not among those this server may load."""

    def __init__(self, message: str, allowed: list[str]) -> None:
        super().__init__(f"{message}; this server allows: {', '.join(allowed)}")
        self.allowed = allowed


@dataclass(frozen=True)
class ModelPolicy:
    """The models (and, per model, the weights) clients may choose.

    ``allowed`` entries are ``"model"`` (any registry tag of it) or ``"model/tag"`` (that tag
    only; the first tag listed for a model is its default when a client names none).
    """

    default_model: str
    default_pretrained: str | None
    allowed: tuple[str, ...] = ()
    allow_test_model: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelPolicy:
        return cls(
            default_model=settings.model,
            default_pretrained=settings.pretrained or None,
            allowed=tuple(settings.allowed_models),
            allow_test_model=settings.allow_test_model,
        )

    def described(self) -> list[str]:
        """The allowed models as shown in errors, the default first."""
        default = self.default_model if self.default_model == TINY_TEST_MODEL else (
            f"{self.default_model}/{self.default_pretrained}" if self.default_pretrained else self.default_model
        )
        shown = [f"{default} (default)"]
        shown += [entry for entry in self.allowed if entry != default]
        if self.allow_test_model and self.default_model != TINY_TEST_MODEL:
            shown.append(TINY_TEST_MODEL)
        return shown

    def _tags_for(self, model: str) -> tuple[bool, list[str]]:
        """Whether ``model`` is listed, and the tags its entries pin (empty: any registry tag)."""
        listed, tags = False, []
        for entry in self.allowed:
            name, _, tag = entry.partition("/")
            if name == model:
                listed = True
                if tag:
                    tags.append(tag)
                else:
                    return True, []
        return listed, tags

    def resolve(self, model: str | None, pretrained: str | None) -> tuple[str, str | None]:
        """The ``(model, pretrained)`` to load for a client's choice; raises :class:`ModelNotAllowedError`.

        A missing model means the default one; missing weights mean the default weights of
        the default model, or the first tag listed for another model.
        """
        chosen = model or self.default_model
        if chosen == TINY_TEST_MODEL:
            if chosen != self.default_model and not self.allow_test_model:
                raise ModelNotAllowedError(f"model {chosen!r} (the non-semantic test model) is not enabled", self.described())
            if pretrained is not None:
                raise ModelNotAllowedError(f"model {chosen!r} has no pretrained weights to choose", self.described())
            return chosen, None
        if chosen == self.default_model:
            if pretrained is None or pretrained == self.default_pretrained:
                return chosen, self.default_pretrained
            listed, tags = self._tags_for(chosen)
            if listed:
                return chosen, self._registry_tag(chosen, pretrained, tags)
            raise ModelNotAllowedError(
                f"weights {pretrained!r} are not allowed for model {chosen!r}", self.described()
            )
        listed, tags = self._tags_for(chosen)
        if not listed:
            raise ModelNotAllowedError(f"model {chosen!r} is not allowed", self.described())
        if pretrained is None:
            if not tags:
                raise ModelNotAllowedError(f"name the pretrained weights (a tag) for model {chosen!r}", self.described())
            return chosen, self._registry_tag(chosen, tags[0], tags)
        return chosen, self._registry_tag(chosen, pretrained, tags)

    def check(self, model: str, pretrained: str | None) -> None:
        """Raise :class:`ModelNotAllowedError` unless exactly ``model``/``pretrained`` may be loaded."""
        resolved = self.resolve(model, pretrained)
        if resolved[1] != (pretrained or None):
            raise ModelNotAllowedError(
                f"weights {pretrained!r} are not allowed for model {model!r}", self.described()
            )

    def _registry_tag(self, model: str, tag: str, pinned: list[str]) -> str:
        import open_clip

        from semstore.encoders.configs import register_model_configs

        if pinned and tag not in pinned:
            raise ModelNotAllowedError(f"weights {tag!r} are not allowed for model {model!r}", self.described())
        register_model_configs()
        if model not in open_clip.list_models():
            raise ModelNotAllowedError(f"model {model!r} is not an open_clip model", self.described())
        if tag not in open_clip.list_pretrained_tags_by_model(model):
            # Never a path: a client must not make the server open a file.
            raise ModelNotAllowedError(f"{tag!r} is not a pretrained tag of model {model!r}", self.described())
        return tag
