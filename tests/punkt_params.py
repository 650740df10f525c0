"""Punkt parameters as comparable facts, and what nltk's own trainer learns: what the tests of
the project's Punkt learning compare against."""

from __future__ import annotations

from nltk.tokenize.punkt import PunktParameters, PunktTrainer

from megatron_seqpt.text.sentences import MultilingualLanguageVars


def params_facts(params: PunktParameters) -> tuple:
    return (params.abbrev_types, params.collocations, params.sent_starters,
            dict(params.ortho_context))


def nltk_learned(text: str) -> PunktParameters:
    """``PunktTrainer.train`` on ``text`` with the project's language variables."""
    trainer = PunktTrainer(lang_vars=MultilingualLanguageVars())
    trainer.train(text, finalize=True)
    return trainer.get_params()
