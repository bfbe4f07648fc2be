// Gradient dashboard: subscribes to /api/v1/events (Server-Sent Events)
// and redraws the cluster, each stream's delivery tree and per-node load
// as events arrive. window.gradientDashboard mirrors what is shown, for
// tests and for the console.
(function () {
  "use strict";
  const body = document.body;
  const S = {
    self: body.dataset.node || "",
    demoURL: body.dataset.demoUrl || "",
    members: [],
    links: [],
    plans: {},      // stream → plan event
    demand: [],
    load: {},       // node → NodeLoad
    selected: "",
    layoutKey: "",
  };
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const stateColor = { alive: "#2ea043", suspect: "#d29922", leaving: "#388bfd", dead: "#b62324", left: "#555e68" };

  window.gradientDashboard = { nodes: [], streams: {}, updatedAt: null, connected: false, self: S.self, demoURL: S.demoURL };

  function publishState() {
    const streams = {};
    for (const [path, p] of Object.entries(S.plans)) {
      streams[path] = {
        version: p.version, root: p.root,
        arcs: (p.arcs || []).map((a) => ({ from: a.from, to: a.to, renditions: (a.renditions || []).slice(), kbps: a.kbps })),
        transcodes: p.transcodes || {}, viewers: p.viewers || {}, cost: p.cost || {},
      };
    }
    const g = window.gradientDashboard;
    g.nodes = S.members.map((m) => ({ name: m.name, state: m.state, region: m.region || "", slots: m.slots, slotsUsed: m.slots_used, price: m.price }));
    g.streams = streams;
    g.links = S.links.slice();
    g.load = S.load;
    g.updatedAt = new Date().toISOString();
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  // ---- graph ----
  let cy = null;
  if (typeof window.cytoscape === "function") {
    cy = window.cytoscape({
      container: $("graph"),
      elements: [],
      maxZoom: 1.4,
      minZoom: 0.2,
      style: [
        { selector: "node", style: {
          "label": "data(label)", "text-wrap": "wrap", "text-valign": "center", "text-halign": "right", "text-margin-x": 8,
          "color": "#d8dee4", "font-size": 10, "background-color": "data(color)", "width": 34, "height": 34,
          "border-width": 2, "border-color": "#0b0e11", "text-background-color": "#101418", "text-background-opacity": 0.7,
          "text-background-padding": 2 } },
        { selector: "node.root", style: { "shape": "star", "width": 44, "height": 44 } },
        { selector: "node.self", style: { "border-color": "#7cc4ff", "border-width": 3 } },
        { selector: "edge.link", style: {
          "width": 1.5, "line-color": "data(color)", "opacity": 0.35, "curve-style": "straight",
          "label": "data(label)", "font-size": 8, "color": "#8894a0", "text-opacity": 0.7 } },
        { selector: "edge.arc", style: {
          "width": "data(width)", "line-color": "data(color)", "target-arrow-color": "data(color)", "target-arrow-shape": "triangle",
          "curve-style": "bezier", "label": "data(label)", "font-size": 10, "color": "#e6edf3",
          "text-background-color": "#101418", "text-background-opacity": 0.85, "text-background-padding": 2, "z-index": 10 } },
      ],
      layout: { name: "preset" },
    });
  } else {
    $("graph").textContent = "cytoscape.min.js is missing from this build (run scripts/setup.sh): the trees are shown as text below.";
    $("graph").style.height = "auto";
    $("graph").style.padding = "1em";
  }

  function lerpColor(t) {
    const a = [63, 185, 80], b = [248, 81, 73];
    const c = a.map((x, i) => Math.round(x + (b[i] - x) * Math.max(0, Math.min(1, t))));
    return "rgb(" + c.join(",") + ")";
  }

  const palette = ["#7cc4ff", "#f0a8ff", "#ffd166", "#8ce99a", "#ff9f7c", "#b4a7ff"];
  // shown lists the plans the graph and the cost line show: the chosen
  // stream's, or every stream's with "(all streams)".
  function shown() {
    if (S.selected === "*") return Object.keys(S.plans).sort().map((k) => S.plans[k]);
    return S.plans[S.selected] ? [S.plans[S.selected]] : [];
  }

  function nodeLabel(m, plans) {
    const l = S.load[m.name];
    const parts = [m.name];
    const info = [];
    if (m.region) info.push(m.region);
    if (l && !l.error) info.push("cpu " + Math.round(l.cpu * 100) + "%");
    info.push("slots " + (m.slots_used || 0) + "/" + (m.slots || 0));
    info.push("$" + (m.price || 0));
    parts.push(info.join(" · "));
    for (const plan of plans) {
      const pre = plans.length > 1 ? plan.stream + ": " : "";
      const tx = (plan.transcodes || {})[m.name];
      if (tx && tx.length) parts.push(pre + "transcodes " + tx.join(", "));
      const v = (plan.viewers || {})[m.name];
      if (v) parts.push(pre + "viewers " + Object.entries(v).map(([c, n]) => c + " " + n).join(", "));
    }
    return parts.join("\n");
  }

  function drawGraph() {
    if (!cy) return;
    const plans = shown();
    const roots = new Set(plans.map((p) => p.root));
    const want = new Set();
    cy.batch(() => {
      for (const m of S.members) {
        const id = "n:" + m.name;
        want.add(id);
        let n = cy.getElementById(id);
        if (n.empty()) n = cy.add({ group: "nodes", data: { id: id, name: m.name } });
        n.data("label", nodeLabel(m, plans));
        n.data("color", stateColor[m.state] || "#555e68");
        n.toggleClass("root", roots.has(m.name));
        n.toggleClass("self", m.name === S.self);
      }
      const costs = S.links.map((l) => l.cost);
      const lo = Math.min(...costs), hi = Math.max(...costs);
      for (const l of S.links) {
        const id = "l:" + l.a + "|" + l.b;
        want.add(id);
        let e = cy.getElementById(id);
        if (e.empty()) e = cy.add({ group: "edges", classes: "link", data: { id: id, source: "n:" + l.a, target: "n:" + l.b } });
        e.data("color", lerpColor(hi > lo ? (l.cost - lo) / (hi - lo) : 0));
        e.data("label", l.cost.toFixed(2));
      }
      plans.forEach((plan, i) => {
        const color = palette[i % palette.length];
        for (const a of plan.arcs || []) {
          if (!want.has("n:" + a.from) || !want.has("n:" + a.to)) continue;
          const id = "a:" + plan.stream + ":" + a.from + ">" + a.to;
          want.add(id);
          let e = cy.getElementById(id);
          if (e.empty()) e = cy.add({ group: "edges", classes: "arc", data: { id: id, source: "n:" + a.from, target: "n:" + a.to } });
          e.data("label", (plans.length > 1 ? plan.stream + " " : "") + (a.renditions || []).join("+") + " · " + Math.round(a.kbps) + " kbps");
          e.data("width", 2 + Math.min(6, (a.kbps || 0) / 1000));
          e.data("color", color);
        }
      });
      cy.elements().forEach((e) => { if (!want.has(e.id())) e.remove(); });
    });
    // Lay out again only when the node set or the tree changed.
    const key = S.members.map((m) => m.name).join(",") + "|" + plans.map((p) => p.root + ":" + (p.arcs || []).map((a) => a.from + ">" + a.to).sort().join(",")).join(";");
    if (key !== S.layoutKey) {
      S.layoutKey = key;
      const rootNodes = cy.nodes().filter((n) => roots.has(n.data("name")));
      if (rootNodes.length > 0) {
        cy.elements("node, edge.arc").layout({ name: "breadthfirst", directed: true, roots: rootNodes,
          spacingFactor: 1.4, padding: 30, animate: false }).run();
      } else {
        cy.nodes().layout({ name: "circle", padding: 40, animate: false }).run();
      }
      cy.fit(undefined, 30);
    }
  }

  // ---- text: costs, tree, nodes ----
  function fmtCost(c) { return c ? c.total.toFixed(2) : "–"; }
  function saves(v, what) {
    if (v === undefined || v === null) return "";
    const cls = v >= 0 ? "saves" : "worse";
    return ` <span class="${cls}">${v >= 0 ? "saves" : "costs"} ${Math.abs(v).toFixed(1)} % vs ${what}</span>`;
  }

  function drawCosts() {
    const plans = shown();
    if (!plans.length) { $("costs").innerHTML = '<span class="muted">no stream has a plan yet</span>'; return; }
    $("costs").innerHTML = plans.map(costLine).join("<br>");
  }

  function costLine(plan) {
    const c = plan.cost || {};
    return `<b>${esc(plan.stream)}</b> v${plan.version} (${esc(plan.algorithm || "")}, root ${esc(plan.root)}): ` +
      `this tree <b>${fmtCost(c.plan)}</b> · MST ${fmtCost(c.mst)} · naive ${fmtCost(c.naive)}` +
      saves(c.saves_vs_mst_pct, "MST") + saves(c.saves_vs_naive_pct, "naive") +
      (c.same_demand === false ? ' <span class="muted">(the demand moved since the plan: all three on today\'s)</span>' : "") +
      (c.error ? ` <span class="muted">${esc(c.error)}</span>` : "");
  }

  function treeText(plan) {
    const kids = {};
    for (const a of plan.arcs || []) (kids[a.from] = kids[a.from] || []).push(a);
    const lines = [];
    const describe = (n) => {
      let s = "";
      const tx = (plan.transcodes || {})[n];
      if (tx && tx.length) s += "  transcodes " + tx.join(", ");
      const v = (plan.viewers || {})[n];
      if (v) s += "  viewers " + Object.entries(v).map(([c, k]) => c + "=" + k).join(" ");
      return s;
    };
    const walk = (n, depth, seen) => {
      for (const a of (kids[n] || []).slice().sort((x, y) => x.to.localeCompare(y.to))) {
        if (seen.has(a.to)) continue;
        seen.add(a.to);
        lines.push("  ".repeat(depth) + "└─ " + a.to + " [" + (a.renditions || []).join(",") + " " + Math.round(a.kbps) + " kbps]" + describe(a.to));
        walk(a.to, depth + 1, seen);
      }
    };
    lines.push(plan.stream + " v" + plan.version + "\n" + plan.root + " (root)" + describe(plan.root));
    walk(plan.root, 1, new Set([plan.root]));
    return lines.join("\n");
  }

  function drawTree() {
    const paths = Object.keys(S.plans).sort();
    $("tree").textContent = paths.length ? paths.map((p) => treeText(S.plans[p])).join("\n\n") : "no plans";
  }

  function memberHTTP(name) {
    const m = S.members.find((x) => x.name === name);
    return m && m.http && name !== S.self ? "http://" + m.http : "";
  }

  function drawNodes() {
    const out = [];
    for (const m of S.members) {
      const l = S.load[m.name];
      let h = `<div class="node" data-node="${esc(m.name)}"><h3>${esc(m.name)}<span class="state ${esc(m.state)}">${esc(m.state)}</span>` +
        `<span class="muted">${esc(m.region || "no region")} · $${m.price} · slots ${m.slots_used}/${m.slots}` +
        (l && !l.error && m.state !== "dead" && m.state !== "left" ? ` · cpu ${Math.round(l.cpu * 100)}% · load ${l.loadavg.toFixed(2)}` : "") + `</span>`;
      if (S.demoURL && (m.state === "alive" || m.state === "suspect"))
        h += `<button class="kill" data-kill="${esc(m.name)}">kill</button>`;
      h += "</h3>";
      if (l && l.error && (m.state === "alive" || m.state === "suspect")) h += `<div class="muted">load: ${esc(l.error)}</div>`;
      if (l && l.streams && l.streams.length) {
        h += "<table><tr><th>stream</th><th>in kbps</th><th>out kbps (est)</th><th>readers</th><th></th></tr>";
        for (const s of l.streams) {
          const r = Object.entries(s.readers || {}).filter(([, n]) => n > 0).map(([p, n]) => p + " " + n).join(", ");
          h += `<tr><td>${esc(s.path)}</td><td>${Math.round(s.kbps_in)}</td><td>${Math.round(s.kbps_out_est)}</td><td>${esc(r)}</td>` +
            `<td><a href="${esc(memberHTTP(m.name) + s.player)}" target="_blank">player</a></td></tr>`;
        }
        h += "</table>";
      }
      if (l && l.serverlets && l.serverlets.length) {
        h += "<table><tr><th>serverlet</th><th>fps</th><th>speed</th><th>cpu</th></tr>";
        for (const s of l.serverlets)
          h += `<tr><td title="${esc(s.spec)}">${esc(s.rendition)}</td><td>${s.fps.toFixed(1)}</td><td>${s.speed.toFixed(2)}</td><td>${Math.round(s.cpu * 100)}%</td></tr>`;
        h += "</table>";
      }
      if (l && l.vod && l.vod.cluster) {
        const v = l.vod;
        h += `<div class="muted">VoD cache: hit ${(100 * (v.hit_ratio || 0)).toFixed(0)}% · byte hit ${(100 * (v.byte_hit_ratio || 0)).toFixed(0)}%</div>`;
      }
      out.push(h + "</div>");
    }
    $("nodes").innerHTML = out.join("");
  }

  $("nodes").addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-kill]");
    if (!b || !S.demoURL) return;
    const name = b.dataset.kill;
    b.disabled = true;
    fetch(S.demoURL.replace(/\/$/, "") + "/kill?node=" + encodeURIComponent(name), { method: "POST" })
      .then((r) => { b.textContent = r.ok ? "killed" : "kill: " + r.status; })
      .catch((e) => { b.textContent = "kill failed"; b.disabled = false; console.error(e); });
  });

  function drawSelect() {
    const sel = $("stream");
    const paths = Object.keys(S.plans).sort();
    if (!S.plans[S.selected] && S.selected !== "*") S.selected = paths[0] || "";
    if (S.selected === "*" && paths.length === 0) S.selected = "";
    const opts = paths.length > 1 ? paths.concat(["*"]) : paths;
    const have = Array.from(sel.options).map((o) => o.value).join(",");
    if (have !== opts.join(",")) {
      sel.innerHTML = opts.map((p) => `<option value="${esc(p)}">${p === "*" ? "(all streams)" : esc(p)}</option>`).join("");
    }
    sel.value = S.selected;
  }
  $("stream").addEventListener("change", (e) => { S.selected = e.target.value; S.layoutKey = ""; schedule(); });

  let pending = false;
  function schedule() {
    publishState();
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      drawSelect();
      drawGraph();
      drawCosts();
      drawTree();
      drawNodes();
    });
  }

  // ---- events ----
  function connect() {
    const es = new EventSource(body.dataset.events || "/api/v1/events");
    const on = (name, f) => es.addEventListener(name, (e) => {
      try { f(JSON.parse(e.data)); } catch (err) { console.error("dashboard event", name, err); return; }
      schedule();
    });
    on("hello", (d) => {
      if (d && d.node) S.self = d.node;
      if (d && d.demo_url !== undefined) S.demoURL = d.demo_url;
      window.gradientDashboard.self = S.self;
      window.gradientDashboard.demoURL = S.demoURL;
      // A reconnect is followed by a full snapshot.
      S.plans = {};
    });
    on("members", (d) => { S.members = d.members || []; S.links = d.links || []; });
    on("plan", (d) => { if (d.removed) delete S.plans[d.stream]; else S.plans[d.stream] = d; });
    on("demand", (d) => { S.demand = d.demand || []; });
    on("load", (d) => { const l = {}; for (const n of d.nodes || []) l[n.node] = n; S.load = l; });
    es.onopen = () => { $("conn").textContent = "live"; $("conn").className = "conn on"; window.gradientDashboard.connected = true; };
    es.onerror = () => { $("conn").textContent = "reconnecting…"; $("conn").className = "conn off"; window.gradientDashboard.connected = false; };
  }
  connect();
  schedule();
})();
