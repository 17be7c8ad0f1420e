"""The semantic-ID generator, by job: `network.py` (encoder and code decoder),
`decoding.py` (the trie and beam search), `cold.py` (cold and new items), `model.py`
(codes, training, artefacts). See `model.py` for the method."""

from directrec.models.semantic.decoding import CodeTrie, blended
from directrec.models.semantic.model import ID_WEIGHTS, SemanticID
from directrec.models.semantic.network import DecoderBlock, SemanticNet

__all__ = ["ID_WEIGHTS", "CodeTrie", "DecoderBlock", "SemanticID", "SemanticNet", "blended"]
