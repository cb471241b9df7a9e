// wavstream AudioWorklet: microphone float samples -> int16 PCM blocks for the websocket.
// The main thread gets one ArrayBuffer (little-endian int16, mono) per `blockSize` samples.
class PcmSender extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.blockSize = opts.blockSize || 1600;
    this.buf = new Int16Array(this.blockSize);
    this.n = 0;
    this.port.onmessage = (e) => {
      if (e.data === 'flush' && this.n > 0) {
        this.port.postMessage(this.buf.slice(0, this.n).buffer);
        this.n = 0;
      }
    };
  }

  process(inputs) {
    const input = inputs[0];
    if (input && input.length > 0) {
      const ch = input[0]; // first channel (the page asks for mono)
      for (let i = 0; i < ch.length; i++) {
        let v = ch[i];
        if (!(v === v)) v = 0; // NaN guard: the server refuses non-finite audio
        v = v < -1 ? -1 : v > 1 ? 1 : v;
        this.buf[this.n++] = v < 0 ? v * 32768 : v * 32767;
        if (this.n === this.blockSize) {
          const out = this.buf;
          this.port.postMessage(out.buffer, [out.buffer]);
          this.buf = new Int16Array(this.blockSize);
          this.n = 0;
        }
      }
    }
    return true; // keep running
  }
}

registerProcessor('pcm-sender', PcmSender);
