"""Folder embedding as a pipeline (decode threads ahead of the networks) gives the same answers as one batch."""
from __future__ import annotations

import numpy as np

from facegnet.recognizer import ImageEmbedding
from tests.conftest import ROOT, lfw_photo

ASSETS = ROOT / "facegnet" / "assets"


def test_streamed_chunks_with_decode_threads_equal_one_batch_in_order(recognizer, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    images = [ASSETS / "colin_powell_1.jpg", broken, lfw_photo("Aaron_Peirsol", 1), ASSETS / "serena_williams_1.jpg",
              tmp_path / "missing.jpg", ASSETS / "colin_powell_2.jpg", lfw_photo("George_W_Bush", 1)]
    whole = recognizer.embed_images(images, chunk=64, decode_threads=1)
    stream = recognizer.iter_embeddings(images, chunk=2, decode_threads=3)
    assert not isinstance(stream, list)  # a generator: a folder of any size streams through
    streamed = list(stream)
    assert [r.source for r in streamed] == [r.source for r in whole] == [str(p) for p in images]
    for a, b in zip(streamed, whole):
        assert isinstance(a, ImageEmbedding) and a.ok == b.ok and a.error == b.error and a.faces == b.faces
        if a.ok:
            assert np.allclose(a.embedding, b.embedding, atol=1e-5)
    assert [r.ok for r in streamed] == [True, False, True, True, False, True, True]
    assert "not an image" in streamed[1].error and "not found" in streamed[4].error
    colin = streamed[0].embedding @ streamed[5].embedding
    assert colin > recognizer.threshold > streamed[0].embedding @ streamed[3].embedding
