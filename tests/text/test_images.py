"""Item images: the pretrained encoder, the catalogue's image column (paths, refusals),
the store's cache, and the item_features setting."""

from __future__ import annotations

import os

import duckdb
import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from directrec.cli import app
from directrec.data.dataset import Dataset
from directrec.data.schema import DataError
from directrec.data.store import open_store
from directrec.data.tables import read_catalogue
from directrec.models import create
from directrec.text import images
from directrec.text.effnet import MEAN, STD, pretrained
from directrec.text.features import item_features
from tests.text.imagegen import write_images


def test_pretrained_weights_recognise_a_photo():
    """The shipped weights in this network see what ImageNet taught them: the photo of
    Grace Hopper that matplotlib ships is a 'military uniform' (ImageNet class 652). A
    wrong layer, padding or input scale gives another class (or noise)."""
    photo = os.path.join(
        os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg"
    )
    x = torch.from_numpy(images.load_image(photo))[None]
    with torch.no_grad():
        probs = pretrained()((x - MEAN) / STD).softmax(-1)[0]
    assert int(probs.argmax()) == 652 and float(probs.max()) > 0.3


def _files(tmp_path, n=4):
    names = write_images(tmp_path / "pics", [i % 4 for i in range(n)])
    pd.DataFrame(
        {
            "user_id": [f"u{i % 3}" for i in range(2 * n)],
            "item_id": [f"i{i % n}" for i in range(2 * n)],
            "timestamp": range(1000, 1000 + 2 * n),
        }
    ).to_csv(tmp_path / "log.csv", index=False)
    return names


def _catalogue(tmp_path, cells):
    df = pd.DataFrame({"item_id": [f"i{i}" for i in range(len(cells))], "title": "", "pic": cells})
    df.to_csv(tmp_path / "items.csv", index=False)
    return tmp_path / "items.csv"


def test_image_column_relative_to_the_catalogue_and_absolute(tmp_path):
    names = _files(tmp_path)
    absolute = str((tmp_path / "pics" / names[1]).resolve())
    cat = read_catalogue(
        _catalogue(tmp_path, [f"pics/{names[0]}", absolute, "", f"pics/{names[3]}"]),
        "image=pic",
    )
    got = cat.items["image"].tolist()
    assert got[0] == str((tmp_path / "pics" / names[0]).resolve())
    assert got[1] == absolute and got[2] == ""


@pytest.mark.parametrize(
    "cell, words",
    [
        ("https://example.com/a.png", "is a URL"),
        ("s3://bucket/a.png", "is a URL"),
        ("pics/nothere.png", "not found"),
        ("log.csv", "not a readable image"),
    ],
)
def test_bad_image_cells_name_file_line_and_field(tmp_path, cell, words):
    names = _files(tmp_path)
    path = _catalogue(tmp_path, [f"pics/{names[0]}", cell])
    with pytest.raises(DataError, match=words) as e:
        read_catalogue(path, "image=pic")
    assert e.value.file == str(path) and e.value.line == 3 and e.value.field == "pic"


def test_ingest_refuses_a_url_and_writes_nothing(tmp_path):
    names = _files(tmp_path)
    path = _catalogue(tmp_path, [f"pics/{names[0]}", "http://shop.example/p.jpg", "", ""])
    db = tmp_path / "s.duckdb"
    r = CliRunner().invoke(
        app,
        ["ingest", "--db", str(db), "--interactions", str(tmp_path / "log.csv"), "--items",
         str(path), "--item-columns", "image=pic"],
    )  # fmt: skip
    assert r.exit_code != 0 and "is a URL" in r.output and "items.csv:3" in r.output
    assert not db.exists()


def _ingested(tmp_path):
    names = _files(tmp_path)
    path = _catalogue(tmp_path, [f"pics/{n}" for n in names[:3]] + [""])
    db = tmp_path / "s.duckdb"
    r = CliRunner().invoke(
        app,
        ["ingest", "--db", str(db), "--interactions", str(tmp_path / "log.csv"), "--items",
         str(path), "--item-columns", "image=pic"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return db, path


def test_images_are_encoded_once_then_read_from_the_store(tmp_path, monkeypatch):
    db, _ = _ingested(tmp_path)
    ds = Dataset.from_store(db)
    assert ds.catalog.has_images and ds.catalog.images[3] == ""
    vecs = images.item_image_embeddings(ds, db)
    assert vecs.shape == (4, 1280)
    assert np.allclose(np.linalg.norm(vecs[:3], axis=1), 1.0, atol=1e-5)
    assert not vecs[3].any()  # no image: a zero vector

    def refuse(*a, **k):
        raise AssertionError("encoded again despite the cache")

    monkeypatch.setattr(images, "encode_images", refuse)
    assert np.array_equal(images.item_image_embeddings(Dataset.from_store(db), db), vecs)


def test_a_reingested_catalogue_row_drops_its_cached_vector(tmp_path):
    db, path = _ingested(tmp_path)
    ds = Dataset.from_store(db)
    images.item_image_embeddings(ds, db)
    with open_store(db) as s:
        assert s.embeddings(images.MODEL_NAME, ["i0", "i1", "i2", "i3"]) is not None
    r = CliRunner().invoke(
        app,
        ["ingest", "--db", str(db), "--interactions", str(tmp_path / "log.csv"), "--items",
         str(path), "--item-columns", "image=pic", "--append"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    with open_store(db) as s:
        assert s.embeddings(images.MODEL_NAME, ["i0", "i1", "i2", "i3"]) is None


def test_a_store_from_before_images_reads_and_takes_them(tmp_path):
    db, path = _ingested(tmp_path)
    con = duckdb.connect(str(db))
    con.execute("ALTER TABLE items DROP COLUMN image")
    con.close()
    with open_store(db) as s:
        assert s.items()["image"].tolist() == ["", "", "", ""]
    assert not Dataset.from_store(db).catalog.has_images
    r = CliRunner().invoke(
        app,
        ["ingest", "--db", str(db), "--interactions", str(tmp_path / "log.csv"), "--items",
         str(path), "--item-columns", "image=pic", "--append"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert Dataset.from_store(db).catalog.has_images


def test_transparency_is_flattened_onto_white(tmp_path):
    Image.new("RGBA", (40, 30), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("RGB", (40, 30), (255, 255, 255)).save(tmp_path / "white.png")
    a, b = (images.load_image(tmp_path / f) for f in ("clear.png", "white.png"))
    assert a.shape == (3, 224, 224) and np.array_equal(a, b)


def test_a_missing_file_at_encoding_names_it(tmp_path):
    with pytest.raises(DataError, match="not found") as e:
        images.encode_images([str(tmp_path / "gone.png")])
    assert e.value.file == str(tmp_path / "gone.png")


def test_item_features_text_image_both(tmp_path):
    db, _ = _ingested(tmp_path)
    ds = Dataset.from_store(db)
    assert item_features(ds, db, "text") is None  # the catalogue has no titles or text
    img = item_features(ds, db, "image")
    both = item_features(ds, db, "both")
    assert img.shape == (4, 1280) and both is not None and np.array_equal(both, img)
    ds.catalog.titles = ["red circle", "blue square", "", "yellow cross"]
    both = item_features(ds, None, "both")
    assert both.shape == (4, 384 + 1280)
    assert np.allclose(np.linalg.norm(both, axis=1), 1.0, atol=1e-5)  # one-part rows too
    # with both halves present, the cosine is the mean of the text and image cosines
    text = item_features(ds, None, "text")
    want = (text[0] @ text[1] + img[0] @ img[1]) / 2
    assert both[0] @ both[1] == pytest.approx(want, abs=1e-5)


def test_the_setting_is_checked_and_recorded():
    with pytest.raises(ValueError, match="item_features must be one of"):
        create("content", {"item_features": "audio"})
    assert create("content", {"item_features": "image"}).run.item_features == "image"


def test_a_model_fit_on_images_keeps_them_for_mmr(tmp_path):
    """`train --set item_features=image` records the choice with the model; `recommend
    --diversity` then re-ranks over the image vectors (the catalogue has no text at all)."""
    from directrec.generate.context import ModelContext
    from directrec.generate.stages import load_pipeline

    db, _ = _ingested(tmp_path)
    out = tmp_path / "m"
    cli = CliRunner()
    r = cli.invoke(
        app,
        ["train", "content", "--db", str(db), "--set", "item_features=image", "--out", str(out)],
    )
    assert r.exit_code == 0, r.output
    model, _ = load_pipeline(out)
    assert model.meta["item_features"] == "image"
    ctx = ModelContext.build(model, db, vectors=True)
    assert ctx.info.vectors.shape == (4, 1280) and ctx.info.vectors[0].any()
    r = cli.invoke(
        app, ["recommend", "--model", str(out), "--db", str(db), "--user", "u0", "--k", "3",
              "--diversity", "0.5", "--json"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output


def test_images_on_postgres(pg_url, tmp_path, monkeypatch):
    """The column, the upsert of a re-ingested row and the cache on a PostgreSQL store."""
    names = _files(tmp_path)
    path = _catalogue(tmp_path, [f"pics/{names[0]}", "", f"pics/{names[2]}", ""])
    args = ["ingest", "--db", pg_url, "--interactions", str(tmp_path / "log.csv"), "--items",
            str(path), "--item-columns", "image=pic"]  # fmt: skip
    assert CliRunner().invoke(app, args).exit_code == 0
    ds = Dataset.from_store(pg_url)
    assert ds.catalog.images[0].endswith(names[0]) and ds.catalog.images[1] == ""
    vecs = images.item_image_embeddings(ds, pg_url)
    monkeypatch.setattr(images, "encode_images", None)  # a second encoding would fail
    assert np.array_equal(images.item_image_embeddings(ds, pg_url), vecs)
    _catalogue(tmp_path, ["", f"pics/{names[1]}", f"pics/{names[2]}", ""])
    assert CliRunner().invoke(app, [*args, "--append"]).exit_code == 0
    ds = Dataset.from_store(pg_url)
    assert ds.catalog.images[0] == "" and ds.catalog.images[1].endswith(names[1])
    with open_store(pg_url) as s:
        assert s.embeddings(images.MODEL_NAME, ["i0", "i1", "i2", "i3"]) is None


def test_an_oversized_image_is_refused_not_decoded(tmp_path, monkeypatch):
    """Pillow's decompression-bomb guard (here lowered to 100 pixels) becomes a DataError."""
    names = _files(tmp_path)
    path = _catalogue(tmp_path, [f"pics/{names[0]}"])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match="not a readable image") as e:
        read_catalogue(path, "image=pic")
    assert e.value.line == 2
    with pytest.raises(DataError, match="not a readable image"):
        images.load_image(tmp_path / "pics" / names[0])


def test_the_service_reranks_by_the_vectors_the_model_was_fit_on(tmp_path):
    """A model fit on images, served: MMR (and any cold item) uses the image vectors, as
    `recommend` does, not the text ones (this catalogue has no text at all)."""
    from fastapi.testclient import TestClient

    from directrec.serve.app import create_app
    from directrec.serve.service import ServeConfig

    db, _ = _ingested(tmp_path)
    out = tmp_path / "m"
    r = CliRunner().invoke(
        app,
        ["train", "content", "--db", str(db), "--set", "item_features=image", "--out", str(out)],
    )
    assert r.exit_code == 0, r.output
    with TestClient(create_app(ServeConfig(model=out, db=db, watch_seconds=0))) as c:
        svc = c.app.state.service
        assert svc.loaded.info.vectors.shape == (4, 1280)
        assert np.array_equal(svc.loaded.info.vectors, svc.item_vectors("image"))
        assert svc.text_vectors() is None  # sentence search still needs text
        res = c.get("/v1/users/u0/recommendations", params={"k": 3, "diversity": 0.5})
        assert res.status_code == 200, res.text
        assert res.json()["items"]  # u0 has seen most of the four items
