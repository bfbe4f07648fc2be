// What the player and the publish page share: the page's credentials
// carried to the URLs they fetch, and the one WebRTC exchange both make
// (WHEP, WHIP: RFC 9725) — an offer with every candidate POSTed to the
// endpoint, the answer back, the session resource in Location.
(() => {
  'use strict';

  const ICE_GATHERING_TIMEOUT_MS = 3000; // no trickle: the offer waits for candidates

  // carryAuth copies the page's token, or a signed link's exp and sig, to
  // u: a node with auth needs them on every URL the page fetches.
  function carryAuth(u) {
    const page = new URLSearchParams(location.search);
    for (const k of ['token', 'exp', 'sig']) {
      const v = page.get(k);
      if (v) u.searchParams.set(k, v);
    }
    return u;
  }

  function iceGatheringComplete(pc) {
    if (pc.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        pc.removeEventListener('icegatheringstatechange', check);
        resolve();
      };
      const check = () => { if (pc.iceGatheringState === 'complete') done(); };
      const t = setTimeout(done, ICE_GATHERING_TIMEOUT_MS);
      pc.addEventListener('icegatheringstatechange', check);
    });
  }

  // offer makes pc's offer and POSTs it to url; it resolves to the
  // answer's SDP and the session resource's URL ('' when the server names
  // none), for the caller to note the resource (to DELETE it whatever
  // happens next) before it applies the answer. what names the protocol
  // in errors ("WHEP", "WHIP").
  async function offer(pc, url, what) {
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringComplete(pc);
    const res = await fetch(url, {
      method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp,
    });
    const body = await res.text();
    if (res.status !== 201) throw new Error(`${what} ${res.status}: ${body.trim() || res.statusText}`);
    const loc = res.headers.get('Location');
    return { answer: body, resource: loc ? new URL(loc, url).href : '' };
  }

  window.gradientRTC = { carryAuth, offer };
})();
