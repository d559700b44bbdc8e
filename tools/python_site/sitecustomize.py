"""Run by Python at start-up in the recipes: egs2/*/enh_kd1/path.sh puts this folder on PYTHONPATH.

espnet2's enhancement task imports espnet2.text.phoneme_tokenizer, which imports g2p_en, which calls
nltk.download for two data sets at import time: without network every stage printed "[nltk_data] Error
loading averaged_perceptron_tagger_eng ... cmudict". Here ``g2p_en`` starts as a stand-in module that
holds the real one's file attributes (so that scans of sys.modules, such as inspect.getmodule, leave it
be); the first other attribute asked of it (``g2p_en.G2p``: espnet2's g2p tokenizer options, for TTS and
ASR) imports the real g2p_en, with its downloads. Enhancement never asks; espnet2 itself is unchanged.
"""
import importlib
import importlib.util
import sys
import types


class _StandIn(types.ModuleType):
    """A module not imported yet: any attribute beyond the ones set here imports it first."""

    def __getattr__(self, attr: str):
        real = sys.modules.get(self.__name__)
        if real is None or real is self:
            del sys.modules[self.__name__]
            real = importlib.import_module(self.__name__)
        return getattr(real, attr)


def _stand_in(name: str) -> None:
    if name in sys.modules:
        return
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return
    if spec is None:
        return
    module = _StandIn(name)
    module.__spec__, module.__loader__, module.__file__ = spec, spec.loader, spec.origin
    module.__package__ = name if spec.submodule_search_locations is not None else name.rpartition(".")[0]
    if spec.submodule_search_locations is not None:
        module.__path__ = list(spec.submodule_search_locations)
    sys.modules[name] = module


_stand_in("g2p_en")
