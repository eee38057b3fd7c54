/* wsi-heatmaps viewer: the slide and its heatmap, pan and zoom locked (OpenSeadragon).
 *
 * Page API (level-0 px of the slide):
 *   window.wsiViewer.setView({x, y, width})  centre (x, y) and visible width, on every viewer
 *   window.wsiViewer.getViews()              [{x, y, width, height}] visible bounds per viewer
 *   window.wsiViewer.fullyLoaded()           true when every shown tile has been drawn
 *   window.wsiViewer.exportPng()             data URL of the current view (viewers + colour bar)
 * The URL holds slide, mode, zoom and centre (?slide=&mode=&x=&y=&w=), so a view can be shared.
 */
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const api = { ready: false };
  window.wsiViewer = api;
  let entry = null, info = null, viewers = [], leader = null, lastMove = 0;

  async function getJSON(url) {
    const r = await fetch(url);
    const data = await r.json();
    if (!r.ok) throw new Error(data.error || r.statusText);
    return data;
  }
  function status(msg) { $("status").textContent = msg || ""; }

  function styleQuery() {
    if (!info || info.kind !== "scores") return "";
    const q = new URLSearchParams({ cmap: $("cmap").value, scale: $("scale").value, alpha: $("alpha").value,
                                    blur: $("blur").checked ? 1 : 0, binarize: $("binarize").checked ? 1 : 0,
                                    segment: $("segment").checked ? 1 : 0 });
    return "?" + q.toString();
  }

  function tileSource(layer) {
    const fmt = "jpeg";                                 // live heatmap tiles too: q90, as the heatmap TIFFs store them
    const q = layer === "heatmap" ? styleQuery() : "";
    const maxLevel = Math.ceil(Math.log2(Math.max(info.width, info.height)));
    return { width: info.width, height: info.height, tileSize: 254, tileOverlap: 1, minLevel: info.min_level, maxLevel,
             getTileUrl: (l, x, y) => `/tiles/${encodeURIComponent(entry)}/${layer}/${l}/${x}_${y}.${fmt}${q}` };
  }

  function makeViewer(el, sources) {
    const v = OpenSeadragon({ element: el, prefixUrl: "/static/openseadragon/images/", drawer: "canvas",
                              showNavigationControl: false, crossOriginPolicy: "Anonymous",
                              tileSources: sources, animationTime: 0.4, visibilityRatio: 0.2,
                              immediateRender: true });   // the needed level only: coarse tiles of a big score file are the dearest
    for (const ev of ["pointerdown", "wheel", "pointerenter", "keydown"]) {
      el.addEventListener(ev, () => { leader = v; }, { passive: true });
    }
    v.addHandler("viewport-change", () => {            // only the leader pushes: no feedback loop
      if (leader !== v) return;
      for (const o of viewers) {
        if (o === v) continue;
        o.viewport.panTo(v.viewport.getCenter(false), true);
        o.viewport.zoomTo(v.viewport.getZoom(false), null, true);
      }
      saveLink();
    });
    v.addHandler("animation-finish", saveLink);
    el.addEventListener("mousemove", (e) => hover(v, e));
    return v;
  }

  function item(v) { return v.world.getItemAt(0); }

  function afterFirstPaint(fn) {                       // when every shown tile is drawn (or after 3 s)
    const t0 = performance.now();
    (function poll() {
      if (api.fullyLoaded() || performance.now() - t0 > 3000) fn(); else setTimeout(poll, 50);
    })();
  }

  function level0At(v, e) {
    const rect = v.container.getBoundingClientRect();
    const vp = v.viewport.pointFromPixel(new OpenSeadragon.Point(e.clientX - rect.left, e.clientY - rect.top), true);
    return item(v).viewportToImageCoordinates(vp);
  }

  let inflight = false, queued = null;
  async function hover(v, e) {                         // one value request at a time; the latest move wins
    if (!item(v)) return;
    if (inflight) { queued = [v, e]; return; }
    inflight = true;
    try { await showValue(v, e); } finally { inflight = false; }
    if (queued) { const [qv, qe] = queued; queued = null; hover(qv, qe); }
  }

  async function showValue(v, e) {
    const p = level0At(v, e), x = Math.round(p.x), y = Math.round(p.y);
    const stamp = ++lastMove;
    let text = `x ${x}, y ${y} (level-0 px)`;
    if (info.kind === "scores" && x >= 0 && y >= 0 && x < info.width && y < info.height) {
      const data = await getJSON(`/api/value/${encodeURIComponent(entry)}?x=${x}&y=${y}`).catch((err) => ({ error: err.message, patches: [] }));
      if (stamp !== lastMove) return;                 // a newer move answered first
      if (!data.patches.length) text += "\nno patch here";
      for (const q of data.patches) {
        text += `\npatch (${q.x}, ${q.y}) ${q.w}x${q.h}: raw attention ${q.raw === null ? "n/a" : q.raw.toPrecision(6)}` +
                `, percentile ${q.percentile.toFixed(2)}` +
                (q.class_logits ? `, class logits [${q.class_logits.map((s) => s.toPrecision(4)).join(", ")}]` : "");
      }
    }
    $("readout").textContent = text;
  }

  api.setView = function ({ x, y, width }) {
    for (const v of viewers) {
      const it = item(v);
      if (!it) continue;
      v.viewport.panTo(it.imageToViewportCoordinates(x, y), true);
      v.viewport.zoomTo(it.imageToViewportZoom(v.viewport.getContainerSize().x / width), null, true);
    }
    saveLink();
  };

  api.getViews = function () {
    return viewers.filter(item).map((v) => {
      const r = item(v).viewportToImageRectangle(v.viewport.getBounds(true));
      return { x: r.x, y: r.y, width: r.width, height: r.height };
    });
  };

  api.fullyLoaded = function () {
    return viewers.length > 0 && viewers.every((v) => v.world.getItemCount() > 0 &&
      [...Array(v.world.getItemCount()).keys()].every((i) => v.world.getItemAt(i).getFullyLoaded()));
  };

  api.exportPng = function () {
    const canvases = viewers.map((v) => v.drawer.canvas);
    const w = canvases.reduce((s, c) => s + c.width, 0), h = Math.max(...canvases.map((c) => c.height));
    const out = document.createElement("canvas");
    out.width = w; out.height = h + 40;
    const g = out.getContext("2d");
    g.fillStyle = "#fff"; g.fillRect(0, 0, out.width, out.height);
    let dx = 0;
    for (const c of canvases) { g.drawImage(c, dx, 0); dx += c.width; }
    g.drawImage($("colorbar"), 10, h + 6, 256, 14);
    g.fillStyle = "#000"; g.font = "12px sans-serif";
    g.fillText(`${$("cb-lo").textContent} … ${$("cb-hi").textContent}  ${$("cb-units").textContent}`, 276, h + 18);
    return out.toDataURL("image/png");
  };

  function saveLink() {
    const v = viewers[0];
    if (!v || !item(v) || !api.ready) return;
    const r = api.getViews()[0];
    const q = new URLSearchParams({ slide: entry, mode: $("mode").value, x: Math.round(r.x + r.width / 2),
                                    y: Math.round(r.y + r.height / 2), w: Math.round(r.width) });
    history.replaceState(null, "", "?" + q.toString());
  }

  async function colorbar() {
    const cb = await getJSON(`/api/colorbar/${encodeURIComponent(entry)}${styleQuery()}`);
    const g = $("colorbar").getContext("2d");
    if (cb.kind !== "scores") {
      g.clearRect(0, 0, 256, 14);
      $("cb-lo").textContent = ""; $("cb-hi").textContent = ""; $("cb-units").textContent = cb.units;
      return;
    }
    cb.lut.forEach((c, i) => { g.fillStyle = c; g.fillRect(i, 0, 1, 14); });
    $("cb-lo").textContent = (+cb.lo).toPrecision(4);
    $("cb-hi").textContent = (+cb.hi).toPrecision(4);
    $("cb-units").textContent = `${cb.units}; scale: ${cb.scale}`;
  }

  async function gallery() {
    for (const id of ["gallery-top", "gallery-bottom"]) $(id).textContent = "";
    if (info.kind !== "scores") return;
    const ex = await getJSON(`/api/extremes/${encodeURIComponent(entry)}?k=8`);
    for (const [key, box] of [["top", "gallery-top"], ["bottom", "gallery-bottom"]]) {
      ex[key].forEach((p, rank) => {
        const fig = document.createElement("figure");
        fig.dataset.x = p.x; fig.dataset.y = p.y; fig.dataset.rank = rank;
        fig.innerHTML = `<img alt="patch ${p.x},${p.y}" src="/thumb/${encodeURIComponent(entry)}/${p.index}.jpg">` +
                        `<figcaption>${p.percentile.toFixed(1)}</figcaption>`;
        fig.addEventListener("click", () => api.setView({ x: p.x + p.w / 2, y: p.y + p.h / 2, width: p.w * 4 }));
        $(box).appendChild(fig);
      });
    }
  }

  function reloadHeatmap() {
    const v = $("mode").value === "overlay" ? viewers[0] : viewers[1];
    const index = $("mode").value === "overlay" ? 1 : 0;
    const old = v.world.getItemAt(index);
    v.addTiledImage({ tileSource: tileSource("heatmap"), index, replace: !!old,
                      opacity: $("mode").value === "overlay" ? +$("opacity").value : 1 });
    colorbar().catch((e) => status(e.message));
  }

  function build() {
    for (const v of viewers) v.destroy();
    viewers = []; leader = null;
    const overlay = $("mode").value === "overlay";
    document.body.classList.toggle("overlay", overlay);
    const left = makeViewer($("left"), overlay
      ? [tileSource("slide"), { tileSource: tileSource("heatmap"), opacity: +$("opacity").value }]
      : tileSource("slide"));
    viewers.push(left);
    if (!overlay) viewers.push(makeViewer($("right"), tileSource("heatmap")));
    return Promise.all(viewers.map((v) => new Promise((res) => {
      const done = () => v.world.getItemCount() >= (overlay ? 2 : 1);
      if (done()) return res();
      v.world.addHandler("add-item", () => { if (done()) res(); });
    })));
  }

  async function open() {
    try {
      const want = params.get("slide");                // a deep link: ask for its slide's info at once
      const [slides, early] = await Promise.all([getJSON("/api/slides"),
        want ? getJSON(`/api/slide/${encodeURIComponent(want)}`).catch(() => null) : null]);
      entry = want && slides.some((s) => s.id === want) ? want : slides[0].id;
      for (const s of slides) {
        const o = document.createElement("option");
        const preds = Object.keys(s).filter((k) => k.startsWith("p_")).map((k) => `${s["Pred_" + k.slice(2)] ?? k}: ${(+s[k]).toFixed(3)}`);
        o.value = s.id;
        o.textContent = [s.slide_id, s.label && `label ${s.label}`, preds.join(", "), s.heatmap].filter(Boolean).join(" · ");
        $("slide").appendChild(o);
      }
      $("slide").value = entry;
      if (params.get("mode")) $("mode").value = params.get("mode");
      info = early && early.id === entry ? early : await getJSON(`/api/slide/${encodeURIComponent(entry)}`);
      $("style-box").style.display = info.kind === "scores" ? "" : "none";
      if (info.kind === "scores" && !info.has_raw) {
        $("scale").querySelector('option[value="raw"]').disabled = true;
        $("scale").querySelector('option[value="run"]').disabled = true;
      }
      if (!info.run_scale) $("scale").querySelector('option[value="run"]').disabled = true;
      if (info.kind === "scores" && !info.tissue) { $("segment").checked = false; $("segment").disabled = true; }
      if (info.tissue) $("segment").parentElement.title += ` - here: ${info.tissue}`;
      await build();
      const x = +params.get("x"), y = +params.get("y"), w = +params.get("w");
      if (params.has("x") && params.has("y") && w > 0) api.setView({ x, y, width: w });
      api.ready = true;
      colorbar().catch((e) => status(e.message));
      afterFirstPaint(() => gallery().catch((e) => status(e.message)));   // thumbnails do not delay the tiles
    } catch (e) {
      status(e.message);
    }
  }

  $("slide").addEventListener("change", () => { location.search = `?slide=${encodeURIComponent($("slide").value)}&mode=${$("mode").value}`; });
  $("mode").addEventListener("change", async () => {
    const view = api.getViews()[0];
    await build();
    if (view) api.setView({ x: view.x + view.width / 2, y: view.y + view.height / 2, width: view.width });
  });
  $("opacity").addEventListener("input", () => {
    const it = viewers[0] && viewers[0].world.getItemAt(1);
    if (it) it.setOpacity(+$("opacity").value);
  });
  for (const id of ["cmap", "scale", "alpha", "blur", "binarize", "segment"]) $(id).addEventListener("change", reloadHeatmap);
  $("export").addEventListener("click", () => {
    const a = document.createElement("a");
    a.href = api.exportPng(); a.download = `${entry}_view.png`; a.click();
  });
  open();
})();
