// Gradient player: WebRTC through the stream's WHEP endpoint first, HLS
// (hls.js, or the browser's own HLS) when WHEP fails or shows no frame in
// time. "?mode=webrtc" or "?mode=hls" forces one. The page lives at
// /<stream>/, so "whep" and "index.m3u8" resolve next to it.
//
// Its state is on window.gradientPlayer for tests and debugging:
// {mode, frames, width, height, kbps, latencyMs, error}.
(() => {
  'use strict';
  const { carryAuth } = window.gradientRTC; // rtc.js

  const FIRST_FRAME_TIMEOUT_MS = 4000; // WebRTC must show a frame by then
  const RETRY_MS = 2000;
  const STATS_MS = 1000;

  const video = document.getElementById('video');
  const unmute = document.getElementById('unmute');
  const forced = new URLSearchParams(location.search).get('mode'); // 'webrtc' | 'hls' | null
  const state = (window.gradientPlayer = {
    mode: '', frames: 0, width: 0, height: 0, kbps: 0, latencyMs: 0, error: '',
  });

  let session = null; // {mode, stop(), stats()}
  let generation = 0; // bumped by every (re)start; stale attempts stop themselves
  let frameWaiters = [];

  // Frame counting: one callback per frame the compositor presents.
  function onFrame(_now, meta) {
    state.frames++;
    state.width = meta.width || video.videoWidth;
    state.height = meta.height || video.videoHeight;
    const ws = frameWaiters;
    frameWaiters = [];
    ws.forEach((w) => w());
    video.requestVideoFrameCallback(onFrame);
  }
  const hasFrameCallback = 'requestVideoFrameCallback' in HTMLVideoElement.prototype;
  if (hasFrameCallback) {
    video.requestVideoFrameCallback(onFrame);
  }

  function waitFrame(timeoutMs) {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no video frame within ${timeoutMs / 1000} s`)), timeoutMs);
      frameWaiters.push(() => { clearTimeout(t); resolve(); });
    });
  }

  function play() {
    video.play().catch(() => {}); // muted autoplay is allowed; otherwise the user clicks
  }

  // WebRTC (WHEP, RFC 9725): recvonly offer with every candidate, answer
  // from the server, DELETE of the session resource when done.


  async function startWebRTC(onFailure) {
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    let resource = null;
    const stop = () => {
      pc.onconnectionstatechange = null;
      pc.close();
      if (resource) {
        fetch(resource, { method: 'DELETE', keepalive: true }).catch(() => {});
        resource = null;
      }
    };
    try {
      pc.addTransceiver('video', { direction: 'recvonly' });
      pc.addTransceiver('audio', { direction: 'recvonly' });
      const stream = new MediaStream();
      pc.ontrack = (ev) => {
        stream.addTrack(ev.track);
        if (video.srcObject !== stream) video.srcObject = stream;
        play();
      };
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === 'failed') onFailure(new Error('WebRTC connection failed'));
      };
      const whep = carryAuth(new URL('whep', location.href));
      // The device class (/watch?device=phone) counts this viewer as demand.
      const device = new URLSearchParams(location.search).get('device');
      if (device) whep.searchParams.set('device', device);
      const ex = await gradientRTC.offer(pc, whep, 'WHEP');
      if (ex.resource) resource = ex.resource;
      await pc.setRemoteDescription({ type: 'answer', sdp: ex.answer });
    } catch (e) {
      stop();
      throw e;
    }

    let prev = null;
    const stats = async () => {
      const report = await pc.getStats();
      let bytes = 0, jbDelay = 0, jbCount = 0, rttMs = 0;
      report.forEach((s) => {
        if (s.type === 'inbound-rtp') {
          bytes += s.bytesReceived || 0;
          if (s.kind === 'video') {
            jbDelay = s.jitterBufferDelay || 0;
            jbCount = s.jitterBufferEmittedCount || 0;
          }
        } else if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
          rttMs = 1000 * (s.currentRoundTripTime || 0);
        }
      });
      const now = performance.now();
      if (prev) {
        state.kbps = Math.round((8 * (bytes - prev.bytes)) / (now - prev.now)); // bits per ms = kbit/s
        const n = jbCount - prev.jbCount;
        if (n > 0) state.latencyMs = Math.round((1000 * (jbDelay - prev.jbDelay)) / n + rttMs / 2);
      }
      prev = { now, bytes, jbDelay, jbCount };
    };
    return { mode: 'webrtc', stop, stats };
  }

  // HLS: hls.js in low-latency mode where Media Source Extensions exist,
  // the browser's own HLS elsewhere (iOS Safari).
  //
  // The HLS URL carries the device class (/watch?device=phone) and a token
  // drawn once per page, so that the node counts this player as one
  // viewer of that class; the server repeats the query on every playlist,
  // segment and part URL it lists.
  const hlsViewer = Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, '0')).join('');
  // The WHEP and HLS URLs carry the page's token or signed-link
  // parameters (carryAuth): a node with auth needs them there too (HLS
  // playlists then carry them on to every segment).
  function startHLS(onFailure) {
    const url = carryAuth(new URL('index.m3u8', location.href));
    const device = new URLSearchParams(location.search).get('device');
    if (device) url.searchParams.set('device', device);
    url.searchParams.set('viewer', hlsViewer);
    const src = url.href;
    if (window.Hls && window.Hls.isSupported()) {
      const Hls = window.Hls;
      const hls = new Hls({ lowLatencyMode: true, backBufferLength: 30 });
      let bytes = 0;
      hls.on(Hls.Events.FRAG_LOADED, (_ev, d) => {
        if (d.payload && d.payload.byteLength) bytes += d.payload.byteLength;
        else bytes += ((d.part || d.frag).stats || {}).loaded || 0;
      });
      let mediaRecoveries = 0;
      hls.on(Hls.Events.ERROR, (_ev, d) => {
        if (!d.fatal) return;
        if (d.type === Hls.ErrorTypes.MEDIA_ERROR && mediaRecoveries++ < 3) {
          hls.recoverMediaError();
          return;
        }
        onFailure(new Error(`HLS ${d.type}: ${d.details}${d.response ? ` (${d.response.code})` : ''}`));
      });
      hls.on(Hls.Events.MANIFEST_PARSED, play);
      hls.loadSource(src);
      hls.attachMedia(video);

      // Stall watchdog: a live player whose playhead and downloads have
      // both stood still for 4 s (a lost blocking playlist request, a part
      // that never came) restarts loading at the live edge, as a viewer
      // pressing reload would.
      let lastPos = -1, lastBytes = -1, stillSince = performance.now();
      const watchdog = setInterval(() => {
        const now = performance.now();
        if (video.paused || video.currentTime !== lastPos || bytes !== lastBytes) {
          lastPos = video.currentTime;
          lastBytes = bytes;
          stillSince = now;
          return;
        }
        if (now - stillSince < 4000) return;
        console.warn('gradient player: HLS stalled, reloading at the live edge');
        stillSince = now;
        hls.stopLoad();
        hls.startLoad(-1);
        if (Number.isFinite(hls.liveSyncPosition)) video.currentTime = hls.liveSyncPosition;
      }, 1000);

      let prev = null;
      const stats = () => {
        const now = performance.now();
        if (prev && now > prev.now) state.kbps = Math.round((8 * (bytes - prev.bytes)) / (now - prev.now));
        else if (hls.bandwidthEstimate) state.kbps = Math.round(hls.bandwidthEstimate / 1000);
        prev = { now, bytes };
        if (Number.isFinite(hls.latency) && hls.latency > 0) state.latencyMs = Math.round(1000 * hls.latency);
      };
      return {
        mode: 'hls',
        stop: () => {
          clearInterval(watchdog);
          hls.destroy();
        },
        stats,
      };
    }
    if (video.canPlayType('application/vnd.apple.mpegurl')) {
      video.src = src;
      play();
      const stats = () => {
        // EXT-X-PROGRAM-DATE-TIME maps the playhead to wall-clock time.
        const start = video.getStartDate ? video.getStartDate().getTime() : NaN;
        if (Number.isFinite(start)) state.latencyMs = Math.round(Date.now() - (start + 1000 * video.currentTime));
      };
      const onError = () => onFailure(new Error('HLS playback error'));
      video.addEventListener('error', onError);
      return {
        mode: 'hls',
        stop: () => {
          video.removeEventListener('error', onError);
          video.removeAttribute('src');
          video.load();
        },
        stats,
      };
    }
    throw new Error('no HLS support in this browser (hls.js missing: run scripts/setup.sh)');
  }

  // start plays in mode; keepError leaves the reason of a fallback shown.
  async function start(mode, keepError) {
    const gen = ++generation;
    if (session) {
      session.stop();
      session = null;
    }
    video.srcObject = null;
    Object.assign(state, { mode, frames: 0, kbps: 0, latencyMs: 0 });
    const failed = (err) => {
      if (gen !== generation) return; // a newer attempt runs
      fail(mode, err);
    };
    try {
      const s = mode === 'webrtc' ? await startWebRTC(failed) : startHLS(failed);
      if (gen !== generation) {
        s.stop();
        return;
      }
      session = s;
      if (mode === 'webrtc') await waitFrame(FIRST_FRAME_TIMEOUT_MS);
      if (gen === generation && !keepError) state.error = '';
    } catch (e) {
      failed(e);
    }
  }

  function fail(mode, err) {
    state.error = `${mode}: ${err.message}`;
    console.warn('gradient player:', state.error);
    if (mode === 'webrtc' && forced !== 'webrtc') {
      start('hls', true);
      return;
    }
    const gen = ++generation; // cancels the failed attempt
    if (session) {
      session.stop();
      session = null;
    }
    setTimeout(() => { if (gen === generation) start(forced || 'webrtc'); }, RETRY_MS);
  }

  // Stats and the panel.
  const el = (id) => document.getElementById(id);
  function render() {
    if (!hasFrameCallback) {
      const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
      if (q) state.frames = q.totalVideoFrames - q.droppedVideoFrames;
    }
    if (video.videoWidth) {
      state.width = video.videoWidth;
      state.height = video.videoHeight;
    }
    el('s-mode').textContent = state.mode || '–';
    el('s-res').textContent = state.width ? `${state.width}×${state.height}` : '–';
    el('s-kbps').textContent = state.kbps ? `${state.kbps} kbit/s` : '–';
    el('s-latency').textContent = state.latencyMs ? `${state.latencyMs} ms` : '–';
    el('s-frames').textContent = String(state.frames);
    el('s-error').textContent = state.error;
    unmute.hidden = !video.muted || state.frames === 0;
  }
  setInterval(() => {
    if (session) Promise.resolve(session.stats()).then(render, () => {});
  }, STATS_MS);
  setInterval(render, 250);

  unmute.addEventListener('click', () => {
    video.muted = false;
    play();
  });
  window.addEventListener('pagehide', () => {
    generation++;
    if (session) session.stop();
    session = null;
  });

  start(forced === 'hls' ? 'hls' : 'webrtc');
})();
