"""The segmenter: fixed 30 ms frames in, utterance events out.

Pure logic: no threads, no clock, no device. The speech detector is passed in, so a
test can script it; `webrtc_detector` gives the real one. Times are stream seconds,
counted from the frames fed, never from the wall clock.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from livewhisper.audio.pcm import SAMPLE_RATE, frame_energy, quietest, to_pcm16

FRAME_MS = 30
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 480
FRAME_SECONDS = FRAME_MS / 1000

#: Says whether one frame (FRAME_SAMPLES float32 samples) holds speech.
Detector = Callable[[np.ndarray], bool]


@dataclass(frozen=True)
class SegmenterOptions:
    """When an utterance starts and ends. Lengths are in milliseconds or seconds."""

    pre_roll_ms: int = 300  # audio kept from before speech starts, so first syllables stay
    start_ms: int = 150  # speech needed inside this window to start an utterance...
    start_ratio: float = 0.6  # ...as a fraction of its frames
    silence_ms: int = 500  # silence that ends an utterance
    tail_ms: int = 150  # of that silence, how much stays with the utterance
    min_speech_ms: int = 250  # utterances with less speech than this are dropped
    max_utterance_s: float = 15.0  # longer speech is cut at its quietest point...
    cut_search_s: float = 3.0  # ...within this many seconds before the limit

    def __post_init__(self) -> None:
        if self.silence_ms < FRAME_MS or self.start_ms < FRAME_MS:
            raise ValueError(f"silence_ms and start_ms must be at least {FRAME_MS}")
        if self.max_utterance_s <= self.cut_search_s:
            raise ValueError("max_utterance_s must be longer than cut_search_s")


@dataclass(frozen=True)
class SpeechStarted:
    id: int
    start: float


@dataclass(frozen=True)
class UtteranceClosed:
    """A finished utterance: its audio spans ``start``..``end`` stream seconds.

    ``forced`` is true when it was cut at the length limit rather than by silence.
    """

    id: int
    audio: np.ndarray
    start: float
    end: float
    forced: bool = False


@dataclass(frozen=True)
class SpeechPaused:
    """The open utterance has gone quiet for ``tail_ms``: if the silence lasts, it will
    close with exactly this audio. A transcriber can start on it now and have the
    final ready when the utterance closes (or throw it away if speech resumes)."""

    id: int
    audio: np.ndarray
    start: float
    end: float


@dataclass(frozen=True)
class UtteranceDropped:
    """Speech started but held too little of it (a cough, a click): nothing to transcribe."""

    id: int
    start: float
    end: float


Event = SpeechStarted | SpeechPaused | UtteranceClosed | UtteranceDropped


def _frames(ms: float) -> int:
    return max(1, round(ms / FRAME_MS))


class Segmenter:
    """Feed it `FRAME_SAMPLES`-sample frames; it returns the events each frame causes."""

    def __init__(
        self,
        detector: Detector,
        options: SegmenterOptions | None = None,
        *,
        ids: Iterator[int] | None = None,
    ) -> None:
        """*ids* numbers the utterances as they start (0, 1, 2... by default); the
        inputs of one session share one, so ids are unique across them."""
        self.detector = detector
        self._ids = ids if ids is not None else itertools.count()
        self.options = o = options or SegmenterOptions()
        self._pre_roll_frames = _frames(o.pre_roll_ms)
        self._start_frames = _frames(o.start_ms)
        # The frames before speech starts: the pre-roll and the start window.
        self._pre_roll: deque[np.ndarray] = deque(maxlen=self._pre_roll_frames + self._start_frames)
        self._window: deque[bool] = deque(maxlen=self._start_frames)
        self._silence_frames = _frames(o.silence_ms)
        self._tail_frames = min(_frames(o.tail_ms), self._silence_frames)
        self._min_speech = _frames(o.min_speech_ms)
        self._max_frames = _frames(o.max_utterance_s * 1000)
        self._search_frames = _frames(o.cut_search_s * 1000)
        self._frames_fed = 0
        self._next_id = -1  # the open utterance's, drawn from _ids when it starts
        # The open utterance: its frames, their speech flags, and its first frame's index.
        self._open: list[np.ndarray] | None = None
        self._voiced: list[bool] = []
        self._first = 0
        self._trailing_silence = 0

    @property
    def time(self) -> float:
        """Stream seconds fed so far."""
        return self._frames_fed * FRAME_SECONDS

    @property
    def in_speech(self) -> bool:
        return self._open is not None

    @property
    def quiet_for(self) -> float:
        """Seconds of silence at the end of the open utterance (0 while speaking)."""
        return self._trailing_silence * FRAME_SECONDS if self._open is not None else 0.0

    def open_utterance(self) -> tuple[int, np.ndarray, float] | None:
        """``(id, audio so far, start)`` of the utterance still open, or None."""
        if self._open is None:
            return None
        return self._next_id, np.concatenate(self._open), self._first * FRAME_SECONDS

    def feed(self, frame: np.ndarray) -> list[Event]:
        if frame.shape != (FRAME_SAMPLES,):
            raise ValueError(f"a frame is {FRAME_SAMPLES} samples, not {frame.shape}")
        speech = bool(self.detector(frame))
        self._frames_fed += 1
        if self._open is None:
            return self._idle(frame, speech)
        self._open.append(frame)
        self._voiced.append(speech)
        self._trailing_silence = 0 if speech else self._trailing_silence + 1
        if self._trailing_silence >= self._silence_frames:
            keep = len(self._open) - self._trailing_silence + self._tail_frames
            return self._close(keep, forced=False)
        if len(self._open) >= self._max_frames:
            return self._cut()
        if (
            self._trailing_silence == self._tail_frames < self._silence_frames
            and sum(self._voiced) >= self._min_speech
        ):
            start = self._first * FRAME_SECONDS
            end = (self._first + len(self._open)) * FRAME_SECONDS
            return [SpeechPaused(self._next_id, np.concatenate(self._open), start, end)]
        return []

    def split(self, at: float) -> list[Event]:
        """Close the open utterance at stream time *at* (to the nearest frame) and go on
        with the rest as the next utterance, as a cut at the length limit does: every
        sample lands in exactly one of the two. For a long monologue, cut between
        words, or at a pause after a sentence. If no frame after *at* is speech, the
        utterance closes as silence closes it, and what follows is the pre-roll of
        the next one. No events if *at* is not inside the open utterance."""
        if self._open is None:
            return []
        keep = round(at / FRAME_SECONDS) - self._first
        if not 0 < keep <= len(self._open):
            return []
        if not any(self._voiced[keep:]):
            return self._close(keep, forced=False)
        return self._close(keep, forced=True)

    def flush(self) -> list[Event]:
        """End of stream: close the open utterance, if any."""
        if self._open is None:
            return []
        keep = len(self._open) - max(0, self._trailing_silence - self._tail_frames)
        events = self._close(keep, forced=False)
        self._pre_roll.clear()
        self._window.clear()
        return events

    # ------------------------------------------------------------------ internals

    def _idle(self, frame: np.ndarray, speech: bool) -> list[Event]:
        self._pre_roll.append(frame)
        self._window.append(speech)
        window = self._window
        if len(window) < self._start_frames:
            return []
        if sum(window) < self.options.start_ratio * self._start_frames:
            return []
        # Start: the utterance begins pre_roll_ms before the first speech frame of
        # the window that started it.
        flags = list(window)
        first_voiced = len(self._pre_roll) - len(flags) + flags.index(True)
        begin = max(0, first_voiced - self._pre_roll_frames)
        self._open = list(self._pre_roll)[begin:]
        n = len(self._open)
        self._voiced = [False] * (n - len(flags)) + flags
        self._first = self._frames_fed - n
        self._trailing_silence = 0
        self._pre_roll.clear()
        self._window.clear()
        self._next_id = next(self._ids)
        return [SpeechStarted(self._next_id, self._first * FRAME_SECONDS)]

    def _close(self, keep: int, *, forced: bool) -> list[Event]:
        assert self._open is not None
        frames, voiced = self._open[:keep], self._voiced[:keep]
        rest, rest_voiced = self._open[keep:], self._voiced[keep:]
        uid, first = self._next_id, self._first
        self._open = None
        start, end = first * FRAME_SECONDS, (first + len(frames)) * FRAME_SECONDS
        events: list[Event]
        if sum(voiced) < self._min_speech:
            events = [UtteranceDropped(uid, start, end)]
        else:
            events = [UtteranceClosed(uid, np.concatenate(frames), start, end, forced)]
        if forced:
            # Speech goes on: what follows the cut opens the next utterance at once.
            self._open, self._voiced = rest, rest_voiced
            self._first = first + keep
            self._trailing_silence = 0
            for flag in reversed(rest_voiced):
                if flag:
                    break
                self._trailing_silence += 1
            self._next_id = next(self._ids)
            events.append(SpeechStarted(self._next_id, self._first * FRAME_SECONDS))
        else:
            # The silence after the kept tail seeds the pre-roll of the next utterance.
            for frame in rest:
                self._pre_roll.append(frame)
        return events

    def _cut(self) -> list[Event]:
        """Cut a too-long utterance at its quietest point near the limit, not mid-word."""
        assert self._open is not None
        n = len(self._open)
        lo = max(1, n - self._search_frames)
        energy = frame_energy(np.concatenate(self._open[lo:n]), FRAME_SAMPLES)
        # A frame the detector calls silence always beats one it calls speech; among
        # equals, the lowest energy smoothed over three frames (90 ms) wins.
        voiced = np.array(self._voiced[lo:n], dtype=bool)
        keep = lo + quietest(energy, smooth=3, voiced=voiced)
        return self._close(keep, forced=True)


def webrtc_detector(level: int = 2) -> Detector:
    """A detector backed by WebRTC's VAD; *level* 0 (lenient) to 3 (strict)."""
    import webrtcvad

    if level not in (0, 1, 2, 3):
        raise ValueError(f"VAD level must be 0, 1, 2 or 3, not {level}")
    vad = webrtcvad.Vad(level)

    def detect(frame: np.ndarray) -> bool:
        return bool(vad.is_speech(to_pcm16(frame).tobytes(), SAMPLE_RATE))

    return detect
