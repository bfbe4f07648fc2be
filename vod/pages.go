package vod

import (
	"fmt"
	"html/template"
	"net/http"
	"time"
)

// HLSScript is where the node serves hls.js (the live player's copy); the
// VoD player uses it where the browser has no native HLS.
const HLSScript = "/_player/vendor/hls.min.js"

var pages = template.Must(template.New("catalog").Funcs(template.FuncMap{
	"dur": func(d time.Duration) string {
		d = d.Round(time.Second)
		return fmt.Sprintf("%d:%02d", int(d.Minutes()), int(d.Seconds())%60)
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Gradient — on demand</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#111;color:#eee}
header{padding:16px 24px;display:flex;gap:16px;align-items:center}
h1{font-size:20px;margin:0;flex:1}
input{font-size:15px;padding:6px 10px;border-radius:6px;border:1px solid #444;background:#222;color:#eee}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:20px;padding:0 24px 24px}
a.title{color:inherit;text-decoration:none;background:#1c1c1c;border-radius:8px;overflow:hidden}
a.title img,a.title .noposter{width:100%;aspect-ratio:16/9;object-fit:cover;background:#333;display:block}
.meta{padding:8px 12px;font-size:13px;color:#aaa}.name{font-size:15px;color:#eee;margin-bottom:4px}
.empty{padding:24px;color:#888}
</style></head><body>
<header><h1>On demand</h1>
<form method="get" action="/vod/"><input type="search" name="q" value="{{.Query}}" placeholder="Search titles" aria-label="Search titles"></form></header>
<main>
{{range .Titles}}<a class="title" href="/vod/{{.ID}}/" data-id="{{.ID}}">
{{if .HasPoster}}<img src="/vod/{{.ID}}/poster.jpg" alt="" loading="lazy">{{else}}<div class="noposter"></div>{{end}}
<div class="meta"><div class="name">{{.Title}}</div>{{dur .Duration}} · {{.Renditions}}</div></a>
{{else}}<div class="empty">{{if .Query}}No title matches “{{.Query}}”.{{else}}No titles yet: add one with <code>gradient vod add FILE</code>.{{end}}</div>
{{end}}</main></body></html>
{{define "player"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} — Gradient</title>
<style>body{font-family:system-ui,sans-serif;margin:0;background:#000;color:#eee}
video{width:100%;max-height:85vh;background:#000;display:block}
.info{padding:12px 20px}h1{font-size:18px;margin:0 0 6px}p{color:#aaa;margin:0;white-space:pre-wrap}a{color:#8cf}</style>
{{range .Preload}}<link rel="preload" href="{{.}}" as="fetch" crossorigin>
{{end}}<link rel="preload" href="{{.HLSScript}}" as="script">
</head><body>
<video id="v" controls playsinline {{if .HasPoster}}poster="/vod/{{.ID}}/poster.jpg"{{end}}></video>
{{with .Boot}}<script>
// The first segment shown before hls.js has arrived: a MediaSource with
// the start rendition's init section and first segment (both preloaded),
// which the player's hls.js then takes over (its media transfer) and goes
// on with.
(function () {
  var b = {{.}}, v = document.getElementById('v');
  if (!window.MediaSource || !MediaSource.isTypeSupported(b.type)) { return; }
  var ms = new MediaSource(), boot = {ms: ms, type: b.type};
  var get = function (u) { return fetch(u).then(function (r) { if (!r.ok) { throw new Error(u + ': HTTP ' + r.status); } return r.arrayBuffer(); }); };
  var init = get(b.init), seg = get(b.segment);
  boot.t = {};
  boot.ready = new Promise(function (ok) {
    ms.addEventListener('sourceopen', function () {
      boot.t.sourceopen = performance.now();
      var sb = boot.sb = ms.addSourceBuffer(b.type);
      var append = function (buf) {
        return new Promise(function (done, fail) {
          sb.addEventListener('updateend', done, {once: true});
          sb.addEventListener('error', fail, {once: true});
          sb.appendBuffer(buf);
        });
      };
      boot.appended = init.then(append).then(function () { return seg; }).then(append).then(function () { boot.t.appended = performance.now(); });
      boot.appended.catch(function () {});
      ok(boot);
    }, {once: true});
  });
  v.src = URL.createObjectURL(ms);
  window.gradientBoot = boot;
})();
</script>
{{end}}<div class="info"><h1>{{.Title}}</h1><p>{{.Description}}</p><p><a href="/vod/">All titles</a></p></div>
<script>
// hls.js (preloaded) is run once the segment above is appended: compiling
// it takes the page's thread, which that segment's fetches and appends
// need first. The player starts once it has run.
(function () {
  var run = function () {
    var s = document.createElement('script');
    s.src = {{.HLSScript}};
    s.onload = s.onerror = player;
    document.body.appendChild(s);
  };
  var boot = window.gradientBoot;
  if (boot) { boot.ready.then(function () { return boot.appended; }).then(run, run); } else { run(); }
})();
function player() {
  var v = document.getElementById('v');
  var src = {{.Master}};
  // t: when each step of the start happened, in ms since the page's
  // navigation began (a benchmark reads it): the page's MediaSource open
  // and first segment appended; hls.js run and handed the MediaSource, its
  // master and media playlist and first segment loaded and appended; the
  // first frame decoded and shown.
  var t = {script: performance.now()};
  var mark = function (k) { if (!(k in t)) { t[k] = performance.now(); } };
  window.gradientPlayer = {mode: '', t: t};
  if (window.Hls && Hls.isSupported()) {
    // A fast start: the lowest rendition first (hls.js sorts them by
    // bitrate; its ABR moves up once it has measured a segment), no Web
    // Worker (it would parse hls.js a second time, and fMP4 needs no
    // transmuxing), and only the first segment until the first frame:
    // another, or a switch up, would compete with it for the CPU. Then
    // 30 s ahead.
    var hls = new Hls({startLevel: 0, enableWorker: false, maxBufferLength: 1, maxMaxBufferLength: 1, startFragPrefetch: true});
    hls.on(Hls.Events.MANIFEST_LOADED, function () { mark('master'); });
    hls.on(Hls.Events.LEVEL_LOADED, function () { mark('media'); });
    hls.on(Hls.Events.MEDIA_ATTACHED, function () { mark('attached'); });
    hls.on(Hls.Events.BUFFER_CREATED, function () { mark('sourcebuffer'); });
    hls.on(Hls.Events.FRAG_LOADED, function (_, d) { if (!('segment' in t)) { t.level = d.frag.level; } mark('segment'); });
    hls.on(Hls.Events.FRAG_BUFFERED, function (_, d) { if (d.frag.sn !== 'initSegment' && !('buffered' in t)) { mark('buffered'); t.bufferedAt = v.buffered.length ? v.buffered.start(0) : -1; } });
    hls.loadSource(src);
    var boot = window.gradientBoot;
    if (boot) {
      // hls.js takes the MediaSource and its SourceBuffer over once the
      // page's appends are done (a muxed fMP4 rendition is one
      // "audiovideo" buffer to it); if they failed, it starts afresh.
      boot.ready.then(function () { return boot.appended; }).then(function () {
        t.handover = performance.now();
        t.sourceopen = boot.t.sourceopen;
        t.appended = boot.t.appended;
        hls.attachMedia({media: v, mediaSource: boot.ms, tracks: {audiovideo: {id: 'main', container: 'video/mp4', codec: boot.type.replace(/^.*codecs="(.*)"$/, '$1'), buffer: boot.sb}}});
      }, function (e) {
        console.log('boot segment not shown', e);
        hls.attachMedia(v);
      });
    } else {
      hls.attachMedia(v);
    }
    window.gradientPlayer = {mode: 'hls.js', hls: hls, t: t, errors: []};
    hls.on(Hls.Events.ERROR, function (_, d) {
      window.gradientPlayer.errors.push(d.details + (d.fatal ? ' (fatal)' : '') + (d.error ? ': ' + d.error.message : ''));
      if (d.fatal) { console.log('hls fatal', d.type, d.details); hls.recoverMediaError(); } });
  } else if (v.canPlayType('application/vnd.apple.mpegurl')) {
    v.src = src;
    window.gradientPlayer = {mode: 'native', t: t};
  }
  // The time of the first frame shown, in ms since the page's navigation
  // began (a benchmark reads it).
  ['loadeddata', 'canplay', 'playing'].forEach(function (e) { v.addEventListener(e, function () { mark(e); }, {once: true}); });
  var first = function () {
    mark('frame');
    window.gradientPlayer.firstFrameMs = t.frame;
    if (window.gradientPlayer.hls) { var c = window.gradientPlayer.hls.config; c.maxBufferLength = 30; c.maxMaxBufferLength = 600; }
  };
  if (v.requestVideoFrameCallback) { v.requestVideoFrameCallback(first); } else { v.addEventListener('playing', first, {once: true}); }
  v.play().catch(function () {});
}
</script></body></html>{{end}}`))

type catalogCard struct {
	ID, Title  string
	HasPoster  bool
	Duration   time.Duration
	Renditions string
}

func (s *Service) serveCatalogPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query().Get("q")
	ts, err := s.List(q)
	if err != nil {
		s.httpError(w, r, err)
		return
	}
	var cards []catalogCard
	for _, t := range ts {
		if t.State != StateReady && t.State != StateRecording { // a recording is watchable as it grows
			continue
		}
		c := catalogCard{ID: t.ID, Title: t.Title, HasPoster: t.Poster != (Digest{}), Duration: t.Duration}
		if full, err := s.Get(t.ID); err == nil && full.Manifest != nil {
			for i, rd := range full.Manifest.Renditions {
				if i > 0 {
					c.Renditions += ", "
				}
				if rd.Height > 0 {
					c.Renditions += fmt.Sprintf("%dp", rd.Height)
				} else {
					c.Renditions += rd.Name
				}
			}
		}
		cards = append(cards, c)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := pages.Execute(w, struct {
		Query  string
		Titles []catalogCard
	}{q, cards}); err != nil {
		s.log.Debug("catalog page", "err", err)
	}
}

func (s *Service) servePlayerPage(w http.ResponseWriter, r *http.Request) {
	t, err := s.readyTitle(r)
	if err != nil {
		s.httpError(w, r, err)
		return
	}
	// The viewer token (views are counted once per token) is the page's,
	// so that the master playlist's URL is known here and can be
	// preloaded with what the player fetches first.
	master := "index.m3u8?viewer=" + newID()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := pages.ExecuteTemplate(w, "player", struct {
		ID, Title, Description, HLSScript, Master string
		HasPoster                                 bool
		Preload                                   []string
		Boot                                      *bootPlan
	}{t.ID, t.Title, t.Description, HLSScript, master, t.Poster != (Digest{}), startPreloads(t, master), startBoot(t)}); err != nil {
		s.log.Debug("player page", "err", err)
	}
}

// startPreloads are the URLs the player fetches before its first frame,
// in order: the master playlist, and for a ready title the media
// playlist, init section and first segment of the rendition it starts
// with (the lowest BANDWIDTH, as hls.js sorts them; the page starts at
// its level 0). The browser fetches them while it loads and runs
// hls.js, whose requests then take them from the preload cache (as=fetch
// with crossorigin matches an XHR's mode and credentials).
func startPreloads(t Title, master string) []string {
	out := []string{master}
	low := startRendition(t)
	if low == nil {
		return out
	}
	out = append(out, low.Name+".m3u8", ChunkURL(low.Init.Digest, true))
	if len(low.Segments) > 0 {
		out = append(out, ChunkURL(low.Segments[0].Digest, false))
	}
	return out
}

// startRendition is the rendition a ready title's player starts with: the
// lowest BANDWIDTH. Nil for a recording (its playlist changes: the player
// loads it itself).
func startRendition(t Title) *Rendition {
	m := t.Manifest
	if t.State != StateReady || m == nil || len(m.Renditions) == 0 {
		return nil
	}
	low := &m.Renditions[0]
	for i := range m.Renditions {
		if r := &m.Renditions[i]; bandwidthKbps(r) < bandwidthKbps(low) {
			low = r
		}
	}
	return low
}

// bootPlan is what the page appends before hls.js runs: the start
// rendition's init section and first segment, and their MIME type.
type bootPlan struct {
	Init    string `json:"init"`
	Segment string `json:"segment"`
	Type    string `json:"type"`
}

func startBoot(t Title) *bootPlan {
	low := startRendition(t)
	if low == nil || len(low.Segments) == 0 || low.Codecs == "" {
		return nil
	}
	return &bootPlan{Init: ChunkURL(low.Init.Digest, true), Segment: ChunkURL(low.Segments[0].Digest, false),
		Type: `video/mp4; codecs="` + low.Codecs + `"`}
}
