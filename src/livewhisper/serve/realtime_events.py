"""The events of OpenAI's Realtime transcription session (docs/realtime.md), with no
socket, thread or clock: client events parsed and checked, the session's settings,
and the server's events built (`realtime_items` keeps the items).

`ws_realtime` runs a connection over these. The names and fields follow the
``openai`` SDK's types (``openai.types.realtime``; the beta ``transcription_session.*``
names from ``openai.types.beta.realtime``).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from livewhisper.audio.pcm import Resampler, from_pcm16
from livewhisper.engine.contract import TranscribeOptions
from livewhisper.serve import openai_errors as oe
from livewhisper.serve.close import clip

MIN_COMMIT_MS = 100  # OpenAI's least audio for a commit
DEFAULT_RATE = 24_000  # OpenAI's PCM16 rate
RATES = range(8000, 48_001)

Dialect = Literal["ga", "beta"]  # session.* events, or the beta transcription_session.*
CLIENT_EVENTS = (
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
)
TRANSCRIPTION = "conversation.item.input_audio_transcription"


class RealtimeError(oe.OpenAIError):
    """A client event that cannot be done; becomes an ``error`` event, and the session
    goes on."""


# ------------------------------------------------------------------ client events


def decode_event(text: str) -> dict[str, Any]:
    """A client event's JSON object."""
    try:
        message = json.loads(text)
    except ValueError as exc:
        raise RealtimeError(f"The event is not valid JSON: {exc}.", code=oe.INVALID_JSON) from None
    if not isinstance(message, dict):
        raise RealtimeError("The event must be a JSON object.", code=oe.INVALID_TYPE)
    return message


def event_type(message: dict[str, Any]) -> str:
    """The ``type`` of a client event, one this server does."""
    kind: str = required(message, "type", "string", "type")
    if kind not in CLIENT_EVENTS:
        raise invalid(kind, "type", ", ".join(f"'{k}'" for k in CLIENT_EVENTS))
    return kind


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    names = {float: "number", str: "string", list: "array", dict: "object"}
    return names.get(type(value), "null")


def get(obj: dict[str, Any], key: str, kind: str, param: str) -> Any:
    """*obj*[*key*] if it is of JSON type *kind* (object, string, integer) or null;
    None when absent."""
    value = obj.get(key)
    if value is not None and _json_type(value) != kind:
        raise RealtimeError(
            f"Invalid type for '{param}': expected {_article(kind)}, "
            f"but got {_article(_json_type(value))} instead.",
            code=oe.INVALID_TYPE,
            param=param,
        )
    return value


def required(obj: dict[str, Any], key: str, kind: str, param: str) -> Any:
    """*obj*[*key*], which must be there, of JSON type *kind*."""
    value = get(obj, key, kind, param)
    if value is None:
        raise RealtimeError(
            f"Missing required parameter: '{param}'.",
            code=oe.MISSING_REQUIRED_PARAMETER,
            param=param,
        )
    return value


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def invalid(value: object, param: str, supported: str) -> RealtimeError:
    return RealtimeError(
        f"Invalid value: {json.dumps(value)}. Supported values are: {supported}.",
        code=oe.INVALID_VALUE,
        param=param,
    )


def append_samples(resampler: Resampler, carry: bytes, audio: str) -> tuple[np.ndarray, bytes]:
    """An append's base64 PCM16, after *carry* (the odd byte of the last append), as
    16 kHz samples, and the odd byte of this one."""
    try:
        data = carry + base64.b64decode(audio, validate=True)
    except binascii.Error:
        raise bad_audio() from None
    cut = len(data) - len(data) % 2
    if not cut:
        return np.zeros(0, np.float32), data
    return resampler(from_pcm16(data[:cut])), data[cut:]


# ------------------------------------------------------------------ the session's settings


@dataclass(frozen=True)
class SessionConfig:
    """What a client may set: the PCM rate, turn detection, language and prompt."""

    rate: int = DEFAULT_RATE
    vad: bool = True  # server VAD; False: turn_detection null, the client commits
    language: str | None = None
    prompt: str | None = None


def _transcription(config: SessionConfig, t: dict[str, Any] | None, param: str) -> SessionConfig:
    if t is None:
        return config
    get(t, "model", "string", f"{param}.model")  # any name: the server has one model
    language = get(t, "language", "string", f"{param}.language")
    prompt = get(t, "prompt", "string", f"{param}.prompt")
    if "language" in t:
        config = dataclasses.replace(config, language=language or None)
    if "prompt" in t:
        config = dataclasses.replace(config, prompt=prompt or None)
    return config


def _turn_detection(config: SessionConfig, session: dict[str, Any], param: str) -> SessionConfig:
    if "turn_detection" not in session:
        return config
    turn = get(session, "turn_detection", "object", param)
    if turn is None:
        return dataclasses.replace(config, vad=False)
    kind = get(turn, "type", "string", f"{param}.type") or "server_vad"
    if kind != "server_vad":
        raise invalid(kind, f"{param}.type", "'server_vad' or turn_detection null")
    return dataclasses.replace(config, vad=True)


def parse_session(config: SessionConfig, message: dict[str, Any]) -> tuple[SessionConfig, Dialect]:
    """The settings after *message* (a ``session.update`` or ``transcription_session.update``),
    and the dialect to answer in; fields left out keep their value, and fields this
    server does not use (noise reduction, include, VAD thresholds) are ignored."""
    session = required(message, "session", "object", "session")
    if message["type"] == "transcription_session.update":
        audio_format = get(session, "input_audio_format", "string", "session.input_audio_format")
        if audio_format not in (None, "pcm16"):
            raise invalid(audio_format, "session.input_audio_format", "'pcm16'")
        if audio_format is not None:
            config = dataclasses.replace(config, rate=DEFAULT_RATE)
        param = "session.input_audio_transcription"
        config = _transcription(config, get(session, param[8:], "object", param), param)
        return _turn_detection(config, session, "session.turn_detection"), "beta"
    kind = required(session, "type", "string", "session.type")
    if kind != "transcription":
        raise invalid(kind, "session.type", "'transcription' (this server only transcribes)")
    audio = get(session, "audio", "object", "session.audio") or {}
    sound = get(audio, "input", "object", "session.audio.input") or {}
    fmt = get(sound, "format", "object", "session.audio.input.format")
    if fmt is not None:
        fmt_type = get(fmt, "type", "string", "session.audio.input.format.type") or "audio/pcm"
        if fmt_type != "audio/pcm":
            raise invalid(fmt_type, "session.audio.input.format.type", "'audio/pcm'")
        rate = get(fmt, "rate", "integer", "session.audio.input.format.rate") or DEFAULT_RATE
        if rate not in RATES:
            raise invalid(rate, "session.audio.input.format.rate", "24000, 16000 (8000 to 48000)")
        config = dataclasses.replace(config, rate=rate)
    t = get(sound, "transcription", "object", "session.audio.input.transcription")
    config = _transcription(config, t, "session.audio.input.transcription")
    return _turn_detection(config, sound, "session.audio.input.turn_detection"), "ga"


def language_param(dialect: Dialect) -> str:
    """Where a session's language is set, for an error about it."""
    if dialect == "beta":
        return "session.input_audio_transcription.language"
    return "session.audio.input.transcription.language"


def commit_options(base: TranscribeOptions, config: SessionConfig) -> TranscribeOptions:
    """How a manual commit is decoded: *base* with the session's language and prompt."""
    return dataclasses.replace(
        base,
        language=config.language or base.language,
        initial_prompt=config.prompt or base.initial_prompt,
        vad_filter=True,  # the client's buffer is not cut out of silence as utterances are
    )


# ------------------------------------------------------------------ the server's events


def session_event(
    what: Literal["created", "updated"],
    config: SessionConfig,
    dialect: Dialect,
    session_id: str,
    model: str,
) -> dict[str, Any]:
    """``session.created`` / ``.updated`` (or their beta names) with the whole session."""
    transcription = {"model": model, "language": config.language, "prompt": config.prompt or ""}
    turn = {"type": "server_vad"} if config.vad else None
    if dialect == "beta":
        beta = {
            "id": session_id,
            "object": "realtime.transcription_session",
            "input_audio_format": "pcm16",
            "input_audio_transcription": transcription,
            "turn_detection": turn,
            "input_audio_noise_reduction": None,
            "include": [],
            "modalities": ["text"],
        }
        return {"type": f"transcription_session.{what}", "session": beta}
    audio_input = {
        "format": {"type": "audio/pcm", "rate": config.rate},
        "transcription": transcription,
        "noise_reduction": None,
        "turn_detection": turn,
    }
    session = {
        "id": session_id,
        "object": "realtime.transcription_session",
        "type": "transcription",
        "audio": {"input": audio_input},
        "include": [],
    }
    return {"type": f"session.{what}", "session": session}


def error_event(error: oe.OpenAIError, event_id: object = None) -> dict[str, Any]:
    """The ``error`` event for *error*, naming the client event (its ``event_id``)."""
    client_event = event_id if isinstance(event_id, str) else None
    return {"type": "error", "error": {**error.error(), "event_id": client_event}}


def completed(item: str, transcript: str, seconds: float) -> dict[str, Any]:
    return {
        "type": f"{TRANSCRIPTION}.completed",
        "item_id": item,
        "content_index": 0,
        "transcript": transcript,
        "usage": {"type": "duration", "seconds": round(seconds, 3)},
    }


def delta(item: str, text: str) -> dict[str, Any]:
    return {"type": f"{TRANSCRIPTION}.delta", "item_id": item, "content_index": 0, "delta": text}


def failed(item: str, message: str) -> dict[str, Any]:
    """An item whose decode failed (the session goes on)."""
    error = oe.OpenAIError(message, type=oe.SERVER_ERROR).error()
    return {"type": f"{TRANSCRIPTION}.failed", "item_id": item, "content_index": 0, "error": error}


def commit_empty(ms: float) -> RealtimeError:
    return RealtimeError(
        "Error committing input audio buffer: buffer too small. Expected at least "
        f"{MIN_COMMIT_MS}ms of audio, but buffer only has {ms:.2f}ms of audio.",
        code="input_audio_buffer_commit_empty",
    )


def buffer_full(seconds: float) -> RealtimeError:
    return RealtimeError(
        f"The input audio buffer is full ({seconds:.0f} s): "
        "commit or clear it before appending more.",
        code="input_audio_buffer_full",
        param="audio",
    )


def bad_audio() -> RealtimeError:
    return RealtimeError(
        "Invalid 'audio': expected base64-encoded PCM16 bytes.",
        code=oe.INVALID_VALUE,
        param="audio",
    )


def binary_frame() -> RealtimeError:
    return RealtimeError(
        "Binary frames are not part of this protocol: send audio as "
        "input_audio_buffer.append events with base64 PCM16.",
        code=oe.INVALID_VALUE,
    )


def stream_failed(error: BaseException) -> RealtimeError:
    """The live stream of a server VAD session failed (the engine): the session ends."""
    message = clip(f"Transcription failed: {error}")
    return RealtimeError(message, code=oe.SERVER_ERROR, type=oe.SERVER_ERROR)
