"""One encoder factory (issue #16): the Database's default, load_encoder and the Ray ingest
actors all build encoders through semstore.encoders.build_encoder, and a Database's injected
factory is the one its Ray actors use too."""

from __future__ import annotations

import pickle
from pathlib import Path

import semstore
from semstore.config import Settings
from semstore.distributed.stages import EncoderSpec
from semstore.encoders import TINY_TEST_MODEL, OpenClipEncoder, build_encoder, load_encoder


class _Recording:
    """A picklable factory (Ray ships it to the actors) that records what it was asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def __call__(self, model: str, pretrained: str | None) -> OpenClipEncoder:
        self.calls.append((model, pretrained))
        return build_encoder(model, pretrained, threads=1, batch_size=4)


def test_the_default_paths_build_the_same_encoder(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'x.db'}", model=TINY_TEST_MODEL, pretrained=None, batch_size=8)
    spec = EncoderSpec(TINY_TEST_MODEL, None, batch_size=8)
    db = semstore.connect(settings=settings)
    try:
        assert db.injected_encoder_factory is None
        encoders = [load_encoder(settings), spec.build(), db.encoder(TINY_TEST_MODEL, None)]
        assert {type(e) for e in encoders} == {OpenClipEncoder}
        texts = [e.encode_texts(["a red circle"]) for e in encoders]
        assert all((t == texts[0]).all() for t in texts)  # same seeded tiny weights: same embedding
    finally:
        db.close()


def test_an_injected_factory_reaches_the_ray_actors(tmp_path: Path) -> None:
    factory = _Recording()
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'x.db'}", model=TINY_TEST_MODEL, pretrained=None)
    db = semstore.connect(settings=settings, encoder_factory=factory)
    try:
        assert db.injected_encoder_factory is factory
        spec = EncoderSpec(TINY_TEST_MODEL, None, factory=db.injected_encoder_factory)
        shipped = pickle.loads(pickle.dumps(spec))  # as Ray sends it to an actor
        encoder = shipped.build()
        assert isinstance(encoder, OpenClipEncoder) and shipped.factory.calls == [(TINY_TEST_MODEL, None)]
    finally:
        db.close()
