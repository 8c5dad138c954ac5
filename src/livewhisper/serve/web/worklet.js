// Capture processor: mono, resampled to 16 kHz, 16-bit, posted in 100 ms frames.
//
// Runs on the audio rendering thread. Resampling uses a triangular (linear) kernel
// as wide as two output periods, which low-passes before decimating, so 44.1 or
// 48 kHz input does not fold high frequencies into the speech band.

const TARGET_RATE = 16000;

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.frameSamples = opts.frameSamples || 1600; // 100 ms at 16 kHz
    this.ratio = sampleRate / TARGET_RATE; // input samples per output sample
    this.history = new Float32Array(0); // input not yet fully used
    this.position = 0; // centre of the next output sample, in history coordinates
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
    this.peak = 0;
    this.running = true;
    this.port.onmessage = (event) => {
      if (event.data === "stop") {
        this.flush();
        this.running = false;
      }
    };
  }

  process(inputs) {
    const input = inputs[0];
    if (!this.running) return false;
    if (!input || input.length === 0 || input[0].length === 0) return true;
    const channel = input[0]; // Chromium reports two channels even for one: take the first
    for (let i = 0; i < channel.length; i++) {
      const v = Math.abs(channel[i]);
      if (v > this.peak) this.peak = v;
    }
    if (this.ratio === 1) {
      for (let i = 0; i < channel.length; i++) this.push(channel[i]);
      return true;
    }
    const joined = new Float32Array(this.history.length + channel.length);
    joined.set(this.history);
    joined.set(channel, this.history.length);
    const width = this.ratio; // kernel half-width in input samples
    while (this.position + width < joined.length) {
      const lo = Math.max(0, Math.ceil(this.position - width));
      const hi = Math.floor(this.position + width);
      let sum = 0;
      let weights = 0;
      for (let j = lo; j <= hi; j++) {
        const w = 1 - Math.abs(j - this.position) / width;
        if (w > 0) {
          sum += w * joined[j];
          weights += w;
        }
      }
      this.push(weights > 0 ? sum / weights : 0);
      this.position += this.ratio;
    }
    const keep = Math.max(0, Math.floor(this.position - width) - 1);
    this.history = joined.slice(keep);
    this.position -= keep;
    return true;
  }

  push(value) {
    const clipped = Math.max(-1, Math.min(1, value));
    this.frame[this.filled++] = clipped < 0 ? clipped * 32768 : clipped * 32767;
    if (this.filled === this.frameSamples) this.flush();
  }

  flush() {
    if (this.filled === 0) return;
    const out = this.frame.slice(0, this.filled);
    this.port.postMessage({ pcm: out.buffer, peak: this.peak }, [out.buffer]);
    this.filled = 0;
    this.peak = 0;
  }
}

registerProcessor("capture-processor", CaptureProcessor);
