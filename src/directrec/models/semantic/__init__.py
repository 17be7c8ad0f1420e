"""The semantic-ID generator, by job: `codes.py` (the RQ-VAE codes and their trie),
`network.py` (encoder and code decoder), `train.py` (the epoch loops, the ID weight),
`decoding.py` (beam search), `cold.py` (cold and new items), `model.py` (the config, the
model and its artefacts). See `model.py` for the method."""

from directrec.models.semantic.decoding import CodeTrie, blended
from directrec.models.semantic.model import SemanticID
from directrec.models.semantic.network import DecoderBlock, SemanticNet
from directrec.models.semantic.train import ID_WEIGHTS

__all__ = ["ID_WEIGHTS", "CodeTrie", "DecoderBlock", "SemanticID", "SemanticNet", "blended"]
