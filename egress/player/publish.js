// Gradient publish page: camera and microphone to the node over WHIP
// (RFC 9725). Without a camera (or permission) it sends a canvas test
// pattern and a WebAudio tone. H.264 is preferred (the node carries H.264
// video with Opus audio). The page lives at /<stream>/publish, so "whip"
// and the player "./" resolve next to it.
//
// Its state is on window.gradientPublisher for tests and debugging:
// {state, source, videoCodec, audioCodec, width, height, kbps, framesSent, error}.
(() => {
  'use strict';
  const { carryAuth } = window.gradientRTC; // rtc.js

  const RETRY_MS = 3000;
  const STATS_MS = 1000;

  const video = document.getElementById('video');
  const toggle = document.getElementById('toggle');
  const $ = (id) => document.getElementById(id);
  const state = (window.gradientPublisher = {
    state: 'idle', source: '', videoCodec: '', audioCodec: '', width: 0, height: 0, kbps: 0, framesSent: 0, error: '',
  });

  // The WHIP URL and the player link carry the page's token or
  // signed-link parameters (carryAuth).
  $('watch').href = carryAuth(new URL('./', location.href)).href;

  function show() {
    $('s-state').textContent = state.state;
    $('s-source').textContent = state.source || '–';
    $('s-codec').textContent = [state.videoCodec, state.audioCodec].filter(Boolean).join(' + ') || '–';
    $('s-res').textContent = state.width ? `${state.width}×${state.height}` : '–';
    $('s-kbps').textContent = state.kbps ? `${Math.round(state.kbps)} kbit/s` : '–';
    $('s-error').textContent = state.error;
  }

  // The camera and microphone, or a test pattern and a tone.
  async function capture() {
    try {
      const s = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
        audio: true,
      });
      state.source = 'camera';
      return s;
    } catch (e) {
      console.log(`no camera (${e.name}): sending a test pattern`);
    }
    let audio = null;
    try {
      audio = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (e) {
      audio = null;
    }
    const canvas = document.createElement('canvas');
    canvas.width = 640;
    canvas.height = 360;
    const g = canvas.getContext('2d');
    let n = 0;
    const bars = ['#c0c0c0', '#c0c000', '#00c0c0', '#00c000', '#c000c0', '#c00000', '#0000c0'];
    setInterval(() => {
      bars.forEach((c, i) => { g.fillStyle = c; g.fillRect(i * canvas.width / bars.length, 0, canvas.width / bars.length + 1, canvas.height); });
      g.fillStyle = '#000';
      g.fillRect(0, canvas.height - 60, canvas.width, 60);
      g.fillStyle = '#fff';
      g.font = '32px monospace';
      g.fillText(`${new Date().toISOString().slice(11, 23)}  #${n++}`, 16, canvas.height - 18);
    }, 1000 / 30);
    const stream = canvas.captureStream(30);
    if (audio) {
      audio.getAudioTracks().forEach((t) => stream.addTrack(t));
      state.source = 'test pattern + microphone';
    } else {
      const ac = new AudioContext();
      const osc = ac.createOscillator();
      osc.frequency.value = 440;
      const gain = ac.createGain();
      gain.gain.value = 0.1;
      const dest = ac.createMediaStreamDestination();
      osc.connect(gain).connect(dest);
      osc.start();
      dest.stream.getAudioTracks().forEach((t) => stream.addTrack(t));
      state.source = 'test pattern + tone';
    }
    return stream;
  }

  // ?codec=vp8 (or vp9) offers that codec alone, as a browser without an
  // H.264 encoder would (the node transcodes it to H.264); otherwise
  // H.264 first (packetization-mode=1 before 0), then the rest.
  const onlyCodec = (new URLSearchParams(location.search).get('codec') || '').toLowerCase();
  function preferCodecs(transceiver) {
    if (!('setCodecPreferences' in transceiver) || !RTCRtpSender.getCapabilities) return;
    const caps = RTCRtpSender.getCapabilities('video');
    if (!caps) return;
    let codecs;
    if (onlyCodec === 'vp8' || onlyCodec === 'vp9') {
      codecs = caps.codecs.filter((c) => c.mimeType.toLowerCase() === `video/${onlyCodec}` || c.mimeType.toLowerCase() === 'video/rtx');
    } else {
      const rank = (c) => {
        if (c.mimeType.toLowerCase() !== 'video/h264') return 2;
        return /packetization-mode=1/.test(c.sdpFmtpLine || '') ? 0 : 1;
      };
      codecs = caps.codecs.slice().sort((a, b) => rank(a) - rank(b));
    }
    try {
      transceiver.setCodecPreferences(codecs);
    } catch (e) {
      console.log(`setCodecPreferences: ${e}`);
    }
  }

  let media = null;
  let session = null; // {pc, resource}
  let statsTimer = 0;
  let retryTimer = 0;
  let last = null; // previous outbound-rtp video stats

  async function start() {
    clearTimeout(retryTimer);
    state.state = 'connecting';
    state.error = '';
    show();
    try {
      if (!media) {
        media = await capture();
        video.srcObject = media;
        video.play().catch(() => {});
      }
      const pc = new RTCPeerConnection();
      session = { pc, resource: '' };
      for (const track of media.getTracks()) {
        if (track.kind === 'video') track.contentHint = 'detail'; // keep the resolution, drop frames instead
        const tr = pc.addTransceiver(track, { direction: 'sendonly', streams: [media] });
        if (track.kind === 'video') {
          preferCodecs(tr);
          const p = tr.sender.getParameters();
          p.degradationPreference = 'maintain-resolution';
          tr.sender.setParameters(p).catch(() => {});
        }
      }
      pc.addEventListener('connectionstatechange', () => {
        if (session && session.pc === pc) {
          if (pc.connectionState === 'connected') {
            state.state = 'live';
          } else if (pc.connectionState === 'failed' || pc.connectionState === 'disconnected') {
            fail(new Error(`connection ${pc.connectionState}`));
          }
          show();
        }
      });
      const ex = await gradientRTC.offer(pc, carryAuth(new URL('whip', location.href)), 'WHIP');
      if (ex.resource) session.resource = ex.resource;
      await pc.setRemoteDescription({ type: 'answer', sdp: ex.answer });
      statsTimer = setInterval(() => stats(pc), STATS_MS);
      toggle.textContent = 'Stop';
    } catch (e) {
      fail(e);
    }
  }

  async function stats(pc) {
    const report = await pc.getStats();
    const codecs = {};
    report.forEach((s) => { if (s.type === 'codec') codecs[s.id] = s.mimeType.replace(/^(video|audio)\//, ''); });
    report.forEach((s) => {
      if (s.type !== 'outbound-rtp') return;
      if (s.kind === 'video') {
        if (last && s.timestamp > last.timestamp) {
          state.kbps = (8 * (s.bytesSent - last.bytesSent)) / (s.timestamp - last.timestamp);
        }
        last = { bytesSent: s.bytesSent, timestamp: s.timestamp };
        state.width = s.frameWidth || 0;
        state.height = s.frameHeight || 0;
        state.framesSent = s.framesSent || 0;
        state.videoCodec = codecs[s.codecId] || '';
      } else if (s.kind === 'audio') {
        state.audioCodec = codecs[s.codecId] || '';
      }
    });
    show();
  }

  function stop() {
    clearInterval(statsTimer);
    const s = session;
    session = null;
    last = null;
    state.kbps = 0;
    if (s) {
      if (s.resource) fetch(s.resource, { method: 'DELETE', keepalive: true }).catch(() => {});
      s.pc.close();
    }
  }

  function fail(e) {
    stop();
    state.state = 'error';
    state.error = String(e.message || e);
    console.log(`publish: ${state.error}`);
    show();
    retryTimer = setTimeout(start, RETRY_MS);
  }

  toggle.addEventListener('click', () => {
    if (session || state.state === 'error') {
      clearTimeout(retryTimer);
      retryTimer = 0;
      stop();
      state.state = 'stopped';
      toggle.textContent = 'Publish';
      show();
    } else {
      start();
    }
  });
  window.addEventListener('pagehide', stop);
  start();
})();
