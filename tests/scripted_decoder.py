"""A decoder whose answer the test chooses: the real model encodes the audio, and
``generate`` returns the text and scores the test scripted.

What Whisper makes of noise or silence depends on the CPU's kernels (CTranslate2
picks Intel MKL or oneDNN by CPU vendor, and its kernels by instruction set), so no
test asks the model what it hears in noise. A test of the guards against invented
text scripts the decoder's result instead, and the guards see exactly what they
would see from the model.

In the test process: ``ScriptedDecoder.install(engine, heard, monkeypatch)``. For the
real command line: ``python tests/scripted_decoder.py HEARD_JSON livewhisper-args...``
runs the CLI with every model it loads scripted, and prints on stderr, last, how
many times the decoder was asked (``scripted decoder: N calls``).
"""

from __future__ import annotations

import atexit
import json
import sys
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest


@dataclass(frozen=True)
class Heard:
    """What the scripted decoder answers for any audio."""

    text: str
    avg_logprob: float
    no_speech_prob: float

    def json(self) -> str:
        return json.dumps(asdict(self))


#: Whisper's tell-tale of text invented from silence: " you", almost surely no speech.
INVENTED = Heard(" you", avg_logprob=-0.9, no_speech_prob=0.95)
#: A confident decode: any guard that drops it is wrong.
CONFIDENT = Heard(" Thank you.", avg_logprob=-0.2, no_speech_prob=0.05)


class ScriptedDecoder:
    """A CTranslate2 Whisper model whose ``generate`` answers *heard*; every other
    attribute (``encode``, ``align``, ``is_multilingual``...) is the real model's."""

    def __init__(self, model: Any, hf_tokenizer: Any, heard: Heard) -> None:
        self._model = model
        self._tokenizer = hf_tokenizer
        self.heard = heard
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate(self, features: Any, prompts: list[list[int]], **kwargs: Any) -> list[Any]:
        self.calls += 1
        text = self.heard.text
        tokens = self._tokenizer.encode(text, add_special_tokens=False).ids if text else []
        # Both faster-whisper and the fitted window take the average log-probability
        # as score * n / (n + 1): script the score that gives *avg_logprob*.
        n = len(tokens)
        score = self.heard.avg_logprob * (n + 1) / n if n else self.heard.avg_logprob
        result = SimpleNamespace(
            sequences_ids=[tokens], scores=[score], no_speech_prob=self.heard.no_speech_prob
        )
        return [result for _ in prompts]

    @classmethod
    def install(cls, engine: Any, heard: Heard, monkeypatch: pytest.MonkeyPatch) -> ScriptedDecoder:
        """Script *engine*'s decoder until the test ends; set ``.heard`` to change it."""
        whisper = engine._model
        decoder = cls(whisper.model, whisper.hf_tokenizer, heard)
        monkeypatch.setattr(whisper, "model", decoder)
        return decoder


def _run_cli(heard: Heard, args: list[str]) -> None:
    """The livewhisper CLI with every faster-whisper model it loads scripted."""
    from faster_whisper import WhisperModel

    decoders: list[ScriptedDecoder] = []
    real_init = WhisperModel.__init__

    def init(self: Any, *a: Any, **kw: Any) -> None:
        real_init(self, *a, **kw)
        self.model = ScriptedDecoder(self.model, self.hf_tokenizer, heard)
        decoders.append(self.model)

    WhisperModel.__init__ = init  # type: ignore[method-assign]

    def report() -> None:
        print(f"scripted decoder: {sum(d.calls for d in decoders)} calls", file=sys.stderr)

    atexit.register(report)
    from livewhisper.cli.app import main

    main(args, prog_name="livewhisper")


def cli_calls(stderr: str) -> int:
    """How many times the scripted CLI's decoder was asked, from its stderr."""
    lines = [line for line in stderr.splitlines() if line.startswith("scripted decoder: ")]
    assert len(lines) == 1, stderr
    return int(lines[0].split()[2])


if __name__ == "__main__":
    _run_cli(Heard(**json.loads(sys.argv[1])), sys.argv[2:])
