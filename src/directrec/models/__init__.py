"""The model zoo: one module per model, all sharing `Recommender` (see base.py)."""

from __future__ import annotations

from pathlib import Path

from directrec.models.als import ALS
from directrec.models.artifacts import read_config
from directrec.models.base import Recommender
from directrec.models.bert4rec import BERT4Rec
from directrec.models.biasedmf import BiasedMF
from directrec.models.bpr import BPR
from directrec.models.cfgan import CFGAN
from directrec.models.content import ContentBased
from directrec.models.ease import EASE
from directrec.models.gru4rec import GRU4Rec
from directrec.models.itemknn import ItemKNN
from directrec.models.llm import LLMRec
from directrec.models.multvae import MultVAE
from directrec.models.nmf import NMF
from directrec.models.pop import MostPopular
from directrec.models.sasrec import SASRec, SASRecCE
from directrec.models.semantic import SemanticID
from directrec.models.svdpp import SVDpp
from directrec.models.userknn import UserKNN

# Name → class, as used by the CLI (`--models pop,ease,…`). Explicit on purpose.
MODELS: dict[str, type[Recommender]] = {
    m.name: m
    for m in (
        MostPopular,
        ItemKNN,
        UserKNN,
        ContentBased,
        EASE,
        ALS,
        BPR,
        MultVAE,
        CFGAN,
        SASRec,
        SASRecCE,
        GRU4Rec,
        BERT4Rec,
        SemanticID,
        LLMRec,
        BiasedMF,
        SVDpp,
        NMF,
    )
}
RATING_MODELS = [n for n, m in MODELS.items() if m.capabilities.rating]


def create(name: str, settings: dict | None = None) -> Recommender:
    """A fresh model by name, with config fields overridden by `settings`."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name](**(settings or {}))


def load_model(path: str | Path) -> Recommender:
    """Load any saved model; its config.json says which class it is."""
    name = read_config(path)["model"]
    if name not in MODELS:
        raise ValueError(f"{path}: unknown model type {name!r}")
    return MODELS[name].load(path)
