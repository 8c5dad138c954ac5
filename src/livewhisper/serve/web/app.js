// livewhisper page: capture the microphone, stream it to /ws, show the transcript.
//
// Protocol (see docs/server.md): after the socket opens the page sends
// {"type": "start", "sample_rate": 16000, "language": ..., "partials": true,
// "session": <id to resume>}, then binary frames of 16-bit mono PCM, 100 ms each.
// The server answers "ready" (with the session id, and the earlier finals when a
// session is resumed), text events ("partial", "final") and "status" messages.

const $ = (id) => document.getElementById(id);
const ui = {
  toggle: $("toggle"), device: $("device"), language: $("language"), level: $("level"),
  state: $("state"), notice: $("notice"), transcript: $("transcript"),
  echo: $("echo"), noise: $("noise"), gain: $("gain"),
  copy: $("copy"), saveTxt: $("save-txt"), saveSrt: $("save-srt"), clear: $("clear"),
  captions: $("captions-link"),
};

const params = new URLSearchParams(location.search);
const token = params.get("token");
const MAX_BUFFERED_FRAMES = 300; // 30 s of audio kept while the connection is down

const finals = new Map(); // id -> {id, start, end, text}
const partials = new Map(); // id -> {id, text, stable}
let sessionId = null;
let socket = null;
let ready = false;
let recording = false;
let capture = null; // {stream, context, node}
const pending = []; // frames waiting for the connection
let retryDelay = 500;
let retryTimer = null;
let stopWaiter = null;

// --- state shown to the user -----------------------------------------------------

function setState(state, text) {
  ui.state.dataset.state = state;
  ui.state.textContent = text || state;
}

function notice(text, kind) {
  ui.notice.hidden = !text;
  ui.notice.textContent = text || "";
  ui.notice.className = "notice" + (kind === "error" ? " error" : "");
}

// --- transcript ------------------------------------------------------------------

function clock(seconds, comma) {
  const ms = Math.max(0, Math.round(seconds * 1000));
  const h = Math.floor(ms / 3600000);
  const m = Math.floor(ms / 60000) % 60;
  const s = Math.floor(ms / 1000) % 60;
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  const base = `${pad(h)}:${pad(m)}:${pad(s)}`;
  return comma ? `${base},${pad(ms % 1000, 3)}` : base;
}

function render() {
  const box = ui.transcript;
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  box.replaceChildren();
  const ids = [...new Set([...finals.keys(), ...partials.keys()])].sort((a, b) => a - b);
  if (ids.length === 0) {
    const p = document.createElement("p");
    p.className = "placeholder";
    p.textContent = recording ? "Listening…" : "Press Start and speak.";
    box.append(p);
    return;
  }
  for (const id of ids) {
    const p = document.createElement("p");
    p.dataset.id = id;
    const final = finals.get(id);
    const time = document.createElement("span");
    time.className = "time";
    if (final) {
      p.className = "final";
      time.textContent = clock(final.start);
      p.append(time, document.createTextNode(final.text));
    } else {
      const partial = partials.get(id);
      p.className = "partial";
      time.textContent = clock(partial.start);
      const stable = document.createElement("span");
      stable.className = "stable";
      const prefix = partial.stable && partial.text.startsWith(partial.stable) ? partial.stable : "";
      stable.textContent = prefix;
      p.append(time, stable, document.createTextNode(partial.text.slice(prefix.length)));
    }
    box.append(p);
  }
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function onTextEvent(event) {
  if (event.type === "final") {
    partials.delete(event.id);
    if (event.text) finals.set(event.id, { id: event.id, start: event.start, end: event.end, text: event.text });
  } else {
    partials.set(event.id, { id: event.id, start: event.start, text: event.text, stable: event.stable || "" });
  }
  render();
}

function transcriptText() {
  return [...finals.values()].sort((a, b) => a.id - b.id).map((f) => f.text).join("\n");
}

function transcriptSrt() {
  return [...finals.values()]
    .sort((a, b) => a.id - b.id)
    .map((f, i) => `${i + 1}\n${clock(f.start, true)} --> ${clock(f.end, true)}\n${f.text}\n`)
    .join("\n");
}

function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function copyTranscript() {
  const text = transcriptText();
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  ui.copy.textContent = "Copied";
  setTimeout(() => (ui.copy.textContent = "Copy"), 1200);
}

// --- connection ------------------------------------------------------------------

function socketUrl() {
  const url = new URL("ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.search = "";
  if (token) url.searchParams.set("token", token);
  return url.toString();
}

function connect() {
  clearTimeout(retryTimer);
  ready = false;
  setState(sessionId ? "reconnecting" : "connecting");
  const ws = new WebSocket(socketUrl());
  ws.binaryType = "arraybuffer";
  socket = ws;
  ws.onopen = () => {
    ws.send(JSON.stringify({
      type: "start",
      sample_rate: 16000,
      language: ui.language.value || null,
      partials: true,
      session: sessionId,
    }));
  };
  ws.onmessage = (message) => {
    if (typeof message.data !== "string") return;
    const event = JSON.parse(message.data);
    switch (event.type) {
      case "ready":
        if (event.resumed) {
          finals.clear();
          partials.clear();
          for (const f of event.history || []) onTextEvent(f);
        } else if (sessionId && sessionId !== event.session) {
          notice("The earlier session had expired on the server; a new one started.");
        }
        sessionId = event.session;
        ui.captions.href = `captions?session=${encodeURIComponent(sessionId)}` + (token ? `&token=${encodeURIComponent(token)}` : "");
        ready = true;
        retryDelay = 500;
        setState("live");
        if (!event.resumed || ui.notice.textContent.startsWith("Connection lost")) notice("");
        while (pending.length && ws.readyState === WebSocket.OPEN) ws.send(pending.shift());
        render();
        break;
      case "partial":
      case "final":
        onTextEvent(event);
        break;
      case "status":
        if (event.state === "busy") {
          setState("busy", "server busy");
          notice("The server is busy: text will lag behind the speech.");
        } else if (ready) {
          setState("live");
          notice("");
        }
        break;
      case "stopped":
        if (stopWaiter) stopWaiter();
        break;
    }
  };
  ws.onclose = (event) => {
    if (socket !== ws) return;
    socket = null;
    ready = false;
    if (stopWaiter) stopWaiter();
    if (!recording) {
      setState("idle");
      return;
    }
    const why = event.reason ? ` (${event.reason})` : "";
    setState("reconnecting");
    notice(`Connection lost${why}; reconnecting in ${(retryDelay / 1000).toFixed(1)} s.`);
    retryTimer = setTimeout(connect, retryDelay * (0.8 + 0.4 * Math.random()));
    retryDelay = Math.min(retryDelay * 2, 10000);
  };
}

function sendFrame(buffer) {
  if (socket && ready && socket.readyState === WebSocket.OPEN) {
    socket.send(buffer);
  } else {
    pending.push(buffer);
    if (pending.length > MAX_BUFFERED_FRAMES) pending.shift();
  }
}

// --- capture ---------------------------------------------------------------------

async function listDevices() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  const chosen = ui.device.value;
  const devices = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audioinput");
  ui.device.replaceChildren(new Option("Default microphone", ""));
  devices.forEach((d, i) => {
    if (d.deviceId && d.deviceId !== "default") ui.device.append(new Option(d.label || `Microphone ${i + 1}`, d.deviceId));
  });
  ui.device.value = [...ui.device.options].some((o) => o.value === chosen) ? chosen : "";
}

async function startCapture() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("This page is not a secure context, so the browser gives it no microphone: open it over https (livewhisper listen --serve --self-signed) or on localhost.");
  }
  const audio = {
    channelCount: 1,
    echoCancellation: ui.echo.checked,
    noiseSuppression: ui.noise.checked,
    autoGainControl: ui.gain.checked,
  };
  if (ui.device.value) audio.deviceId = { exact: ui.device.value };
  const stream = await navigator.mediaDevices.getUserMedia({ audio });
  const context = new AudioContext();
  await context.audioWorklet.addModule("worklet.js");
  const source = context.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(context, "capture-processor", {
    numberOfInputs: 1,
    numberOfOutputs: 1,
    outputChannelCount: [1],
    processorOptions: { frameSamples: 1600 },
  });
  node.port.onmessage = (event) => {
    const { pcm, peak } = event.data;
    ui.level.style.width = `${Math.min(100, Math.round(Math.sqrt(peak) * 100))}%`;
    sendFrame(pcm);
  };
  source.connect(node);
  node.connect(context.destination); // the node outputs silence; this keeps it running
  await context.resume();
  listDevices();
  return { stream, context, node };
}

function stopCapture() {
  if (!capture) return;
  capture.node.port.postMessage("stop");
  capture.stream.getTracks().forEach((t) => t.stop());
  const context = capture.context;
  setTimeout(() => context.close(), 200); // let the last frame out
  capture = null;
  ui.level.style.width = "0%";
}

async function start() {
  ui.toggle.disabled = true;
  notice("");
  try {
    capture = await startCapture();
    recording = true;
    ui.toggle.textContent = "Stop";
    ui.toggle.classList.add("recording");
    connect();
    render();
  } catch (error) {
    setState("error", "no microphone");
    notice(error.message || String(error), "error");
  } finally {
    ui.toggle.disabled = false;
  }
}

async function stop() {
  ui.toggle.disabled = true;
  recording = false;
  stopCapture();
  clearTimeout(retryTimer);
  const ws = socket;
  if (ws && ws.readyState === WebSocket.OPEN) {
    await new Promise((resolve) => setTimeout(resolve, 250)); // the worklet's last frame
    while (pending.length && ready) ws.send(pending.shift());
    setState("connecting", "finishing");
    const done = new Promise((resolve) => (stopWaiter = resolve));
    ws.send(JSON.stringify({ type: "stop" }));
    await Promise.race([done, new Promise((resolve) => setTimeout(resolve, 15000))]);
    stopWaiter = null;
    ws.close(1000, "stopped");
  }
  socket = null;
  pending.length = 0;
  setState("idle");
  ui.toggle.textContent = "Start";
  ui.toggle.classList.remove("recording");
  ui.toggle.disabled = false;
}

// --- wiring ----------------------------------------------------------------------

ui.toggle.addEventListener("click", () => (recording ? stop() : start()));
ui.copy.addEventListener("click", copyTranscript);
ui.saveTxt.addEventListener("click", () => download("transcript.txt", transcriptText() + "\n", "text/plain"));
ui.saveSrt.addEventListener("click", () => download("transcript.srt", transcriptSrt(), "application/x-subrip"));
ui.clear.addEventListener("click", () => { finals.clear(); partials.clear(); render(); });
if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
  navigator.mediaDevices.addEventListener("devicechange", listDevices);
}
if (token) ui.captions.href = `captions?token=${encodeURIComponent(token)}`;
listDevices();
render();

// For scripts and tests: the transcript as the page holds it.
window.livewhisper = {
  get session() { return sessionId; },
  get state() { return ui.state.dataset.state; },
  text: transcriptText,
  srt: transcriptSrt,
};
