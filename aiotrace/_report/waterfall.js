// The aiotrace HTML report: a per-host table and a canvas waterfall of every round trip, one
// row ("lane") per connection. Only what is in view is drawn, so the page stays light at
// 10,000 requests. Everything here reads the JSON document embedded in the page (see
// aiotrace/_report/html.py for its shape); nothing is fetched.
(function () {
  "use strict";

  var PHASES = ["blocked", "dns", "connect", "tls", "send", "wait", "receive"];
  var COLORS = {
    blocked: "#9e9e9e", dns: "#26a69a", connect: "#fb8c00", tls: "#ab47bc",
    send: "#607d8b", wait: "#43a047", receive: "#1e88e5",
  };
  var ERROR = "#d32f2f";
  var STALL = "rgba(229, 57, 53, 0.16)";
  var LINK = "#37474f";
  var CLASSES = ["2xx", "3xx", "4xx", "5xx", "error"];
  var LANE_H = 18;   // one lane
  var BAR_Y = 6;     // a round trip's bar, from the lane's top
  var BAR_H = 10;
  var WAIT_Y = 1;    // the thin bar of a pool wait, above the bar
  var WAIT_H = 4;
  var AXIS_H = 26;   // the time axis on top
  var GUTTER = 200;  // lane labels on the left
  var PAD = 12;      // space at both ends of the time axis
  var MAX_WIDTH = 8e6;  // px: browsers cap an element's size
  var MAX_TABLE_ROWS = 300;

  var marks = { start: performance.now() };  // ms since navigation, for aiotraceReport.marks
  var doc = JSON.parse(document.getElementById("aiotrace-data").textContent);
  marks.parsed = performance.now();
  var requests = Array.isArray(doc.requests) ? doc.requests : [];
  var connRecords = {};
  (Array.isArray(doc.connections) ? doc.connections : []).forEach(function (c) {
    if (c && c.id != null) connRecords[c.id] = c;
  });
  var aggregates = doc.hosts && typeof doc.hosts === "object" ? doc.hosts : {};
  var stalls = Array.isArray(doc.stalls) ? doc.stalls : [];

  function num(v) { return typeof v === "number" && isFinite(v); }

  function hostLabel(url) {
    // "host:port" as the Recorder labels hosts (IPv6 without brackets, the port always).
    try {
      var u = new URL(url);
      var h = u.hostname;
      if (h.charAt(0) === "[") h = h.slice(1, -1);
      var port = u.port || (u.protocol === "https:" ? "443" : u.protocol === "http:" ? "80" : "");
      return port ? h + ":" + port : h;
    } catch (e) {
      return "?";
    }
  }

  function statusClass(r) {
    if (r.error || !num(r.status)) return "error";
    var c = Math.floor(r.status / 100);
    return c >= 2 && c <= 5 ? c + "xx" : "error";
  }

  function fmtMs(ms) {
    if (!num(ms)) return "–";
    if (ms >= 10000) return (ms / 1000).toFixed(1) + " s";
    if (ms >= 1000) return (ms / 1000).toFixed(2) + " s";
    if (ms >= 100) return ms.toFixed(0) + " ms";
    if (ms >= 10) return ms.toFixed(1) + " ms";
    return ms.toFixed(2) + " ms";
  }

  // ---------------------------------------------------------------------------------------
  // The model: one item per round trip (or per request that never got one), on one time axis
  // ---------------------------------------------------------------------------------------

  var t0 = Infinity;
  requests.forEach(function (r) {
    if (num(r.started_at) && r.started_at < t0) t0 = r.started_at;
    (r.hops || []).forEach(function (h) {
      if (num(h.started_at) && h.started_at < t0) t0 = h.started_at;
    });
  });
  if (!isFinite(t0)) t0 = 0;
  function offsetMs(wall) { return num(wall) ? (wall - t0) * 1000 : 0; }

  var span = 1;        // ms, the whole crawl
  var reqInfo = [];    // per request: host, status class, its items
  var connLanes = [];  // every connection's lane, in order of first use
  var connLaneById = {};
  var noConnItems = [];  // round trips (or requests) that got no connection

  requests.forEach(function (r, ri) {
    var info = { r: r, index: ri, host: hostLabel(r.url), cls: statusClass(r), items: [] };
    reqInfo.push(info);
    var hops = Array.isArray(r.hops) ? r.hops : [];
    hops.forEach(function (h, hi) {
      var start = offsetMs(h.started_at);
      var t = h.timings || {};
      var segs = [];
      var at = start;
      var waitEnd = start;
      for (var p = 0; p < PHASES.length; p++) {
        var v = t[PHASES[p]];
        if (num(v)) {
          segs.push(p, at, at + v);
          at += v;
          if (p === 0) waitEnd = at;
        }
      }
      var end = Math.max(at, start + (num(t.total) ? t.total : 0));
      var conn = h.connection && h.connection.id != null ? h.connection.id : null;
      var item = {
        info: info, hop: h, hi: hi, start: start, end: end, waitEnd: waitEnd, segs: segs,
        conn: conn, error: !!h.error || (!num(h.status) && !!r.error), host: hostLabel(h.url),
        lane: -1,
      };
      info.items.push(item);
      if (end > span) span = end;
      if (conn === null) {
        noConnItems.push(item);
      } else {
        var lane = connLaneById[conn];
        if (!lane) {
          lane = connLaneById[conn] = {
            kind: "conn", id: conn, host: item.host, rec: connRecords[conn] || null, items: [],
          };
          connLanes.push(lane);
        }
        lane.items.push(item);
      }
    });
    if (!hops.length) {  // failed (or was cancelled) before asking for a connection
      var start = offsetMs(r.started_at);
      var m = r.marks || {};
      var total = num(m.total) ? m.total : (r.timings && num(r.timings.total) ? r.timings.total : 0);
      var item = {
        info: info, hop: null, hi: -1, start: start, end: start + total, waitEnd: start, segs: [],
        conn: null, error: true, host: info.host, lane: -1,
      };
      info.items.push(item);
      if (item.end > span) span = item.end;
      noConnItems.push(item);
    }
  });
  stalls.forEach(function (s) {
    var end = offsetMs(s.started_at) + (num(s.duration_ms) ? s.duration_ms : 0);
    if (end > span) span = end;
  });
  function byStart(a, b) { return a.start - b.start || a.end - b.end; }
  connLanes.forEach(function (lane) {
    lane.items.sort(byStart);
    var rec = lane.rec;
    var first = lane.items[0].start;
    var last = lane.items[lane.items.length - 1].end;
    lane.openedAt = rec && num(rec.opened_at) ? Math.min(offsetMs(rec.opened_at), first) : first;
    // (A connection left open long after its last request does not stretch the axis.)
    lane.closedAt = rec && num(rec.closed_at) ? offsetMs(rec.closed_at) : last;
  });
  connLanes.sort(function (a, b) { return a.items[0].start - b.items[0].start || a.id - b.id; });
  noConnItems.sort(byStart);

  marks.model = performance.now();

  // ---------------------------------------------------------------------------------------
  // The filter: which requests are drawn, and the lanes they make
  // ---------------------------------------------------------------------------------------

  var hostInput = document.getElementById("f-host");
  var classBoxes = {};
  var classesEl = document.getElementById("f-classes");
  CLASSES.forEach(function (c) {
    var label = document.createElement("label");
    var box = document.createElement("input");
    box.type = "checkbox";
    box.checked = true;
    box.id = "f-" + c;
    box.addEventListener("change", applyFilter);
    label.appendChild(box);
    label.appendChild(document.createTextNode(" " + c));
    classesEl.appendChild(label);
    classBoxes[c] = box;
  });

  var lanes = [];        // drawn lanes: errors rows first, then connections
  var laneItems = [];    // per drawn lane: its drawn items, by start
  var links = [];        // [item, next item] of one request's hops
  var drawnRequests = 0;
  var errorLaneCount = 0;
  var connLaneCount = 0;

  function packRows(items) {
    // Items that overlap go to different rows: first fit by earliest free row (a min-heap).
    var rows = [];
    var heap = [];  // [free from, row]
    function push(e) {
      heap.push(e);
      var i = heap.length - 1;
      while (i > 0) {
        var p = (i - 1) >> 1;
        if (heap[p][0] <= heap[i][0]) break;
        var t = heap[p]; heap[p] = heap[i]; heap[i] = t; i = p;
      }
    }
    function pop() {
      var top = heap[0];
      var last = heap.pop();
      if (heap.length) {
        heap[0] = last;
        var i = 0;
        for (;;) {
          var l = 2 * i + 1, r = l + 1, m = i;
          if (l < heap.length && heap[l][0] < heap[m][0]) m = l;
          if (r < heap.length && heap[r][0] < heap[m][0]) m = r;
          if (m === i) break;
          var t = heap[m]; heap[m] = heap[i]; heap[i] = t; i = m;
        }
      }
      return top;
    }
    items.forEach(function (it) {
      var row;
      if (heap.length && heap[0][0] <= it.start) {
        row = pop()[1];
      } else {
        row = rows.length;
        rows.push([]);
      }
      rows[row].push(it);
      push([Math.max(it.end, it.start + 0.001), row]);
    });
    return rows;
  }

  function applyFilter() {
    var text = hostInput.value.trim().toLowerCase();
    var classes = {};
    CLASSES.forEach(function (c) { classes[c] = classBoxes[c].checked; });
    // A whole host:port (a click in the table) is that host; anything else, part of one.
    var exact = reqInfo.some(function (info) { return info.host.toLowerCase() === text; });
    var shown = reqInfo.map(function (info) {
      var host = info.host.toLowerCase();
      return classes[info.cls] && (!text || (exact ? host === text : host.indexOf(text) >= 0));
    });
    hover = null;
    drawnRequests = shown.filter(Boolean).length;
    lanes = [];
    laneItems = [];
    var errRows = packRows(noConnItems.filter(function (it) { return shown[it.info.index]; }));
    errRows.forEach(function (row, i) {
      lanes.push({ kind: "errors", id: i, host: "", rec: null });
      laneItems.push(row);
    });
    errorLaneCount = errRows.length;
    connLaneCount = 0;
    connLanes.forEach(function (lane) {
      var items = lane.items.filter(function (it) { return shown[it.info.index]; });
      if (items.length) {
        lanes.push(lane);
        laneItems.push(items);
        connLaneCount++;
      }
    });
    laneItems.forEach(function (items, li) {
      items.forEach(function (it) { it.lane = li; });
    });
    links = [];
    reqInfo.forEach(function (info) {
      if (!shown[info.index]) return;
      for (var i = 1; i < info.items.length; i++) links.push([info.items[i - 1], info.items[i]]);
    });
    if (pinned && !shown[pinned.info.index]) unpin();
    document.getElementById("shown").textContent =
      "showing " + drawnRequests + " of " + requests.length + " requests in " +
      connLaneCount + " connection" + (connLaneCount === 1 ? "" : "s") +
      (errorLaneCount ? " and " + errorLaneCount + " error row" + (errorLaneCount === 1 ? "" : "s") : "");
    layout();
  }
  var filterTimer = 0;
  hostInput.addEventListener("input", function () {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(applyFilter, 120);
  });

  // ---------------------------------------------------------------------------------------
  // Geometry: a scroll area over a spacer, the canvas below it draws what is in view
  // ---------------------------------------------------------------------------------------

  var canvas = document.getElementById("wf-canvas");
  var ctx = canvas.getContext("2d");
  var scroller = document.getElementById("wf-scroll");
  var spacer = document.getElementById("wf-spacer");
  var viewW = 0, viewH = 0;
  var zoom = 1;

  function fitPxPerMs() { return Math.max(1, viewW - GUTTER - 2 * PAD) / span; }
  function pxPerMs() { return fitPxPerMs() * zoom; }
  function maxZoom() { return Math.max(1, (MAX_WIDTH - GUTTER - 2 * PAD) / (fitPxPerMs() * span)); }
  function xOf(ms) { return GUTTER + PAD + ms * pxPerMs() - scroller.scrollLeft; }
  function msAt(x) { return (x - GUTTER - PAD + scroller.scrollLeft) / pxPerMs(); }
  function laneTop(li) { return AXIS_H + li * LANE_H - scroller.scrollTop; }

  var wrap = document.getElementById("wf-wrap");

  function layout(again) {
    // A short waterfall takes only the height it needs (CSS caps it at 62% of the window).
    var want = AXIS_H + lanes.length * LANE_H + 4 + (scroller.offsetHeight - scroller.clientHeight);
    var px = Math.max(120, want) + "px";
    if (wrap.style.height !== px) wrap.style.height = px;
    viewW = scroller.clientWidth;
    viewH = scroller.clientHeight;
    var dpr = window.devicePixelRatio || 1;
    canvas.style.width = viewW + "px";
    canvas.style.height = viewH + "px";
    canvas.width = Math.max(1, Math.round(viewW * dpr));
    canvas.height = Math.max(1, Math.round(viewH * dpr));
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    spacer.style.width = Math.ceil(GUTTER + 2 * PAD + span * pxPerMs()) + "px";
    spacer.style.height = (AXIS_H + lanes.length * LANE_H + 4) + "px";
    // The spacer may have brought or taken scrollbars: measure again.
    if (!again && (scroller.clientWidth !== viewW || scroller.clientHeight !== viewH)) return layout(true);
    schedule();
  }

  function setZoom(z, anchorX) {
    z = Math.min(Math.max(z, 1), maxZoom());
    if (anchorX == null) anchorX = GUTTER + (viewW - GUTTER) / 2;
    var t = msAt(anchorX);
    zoom = z;
    spacer.style.width = Math.ceil(GUTTER + 2 * PAD + span * pxPerMs()) + "px";
    scroller.scrollLeft = Math.max(0, GUTTER + PAD + t * pxPerMs() - anchorX);
    schedule();
  }

  var frame = 0;
  function schedule() {
    if (!frame) frame = requestAnimationFrame(function () { frame = 0; draw(); });
  }

  // ---------------------------------------------------------------------------------------
  // Drawing
  // ---------------------------------------------------------------------------------------

  var hover = null;
  var pinned = null;

  function niceStep(minMs) {
    var p = Math.pow(10, Math.floor(Math.log10(minMs)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= minMs) return steps[i] * p;
    return 10 * p;
  }

  function tickLabel(ms, step) {
    if (step >= 1000) return (ms / 1000).toFixed(step % 1000 ? 1 : 0) + " s";
    if (step >= 1) return ms.toFixed(0) + " ms";
    return ms.toFixed(Math.min(3, Math.ceil(-Math.log10(step)))) + " ms";
  }

  function drawItem(it, y, outline) {
    var x0 = xOf(it.start), x1 = xOf(it.end);
    if (x1 < GUTTER - 2 || x0 > viewW + 2) return;
    var segs = it.segs;
    var scale = pxPerMs();
    for (var s = 0; s < segs.length; s += 3) {
      var p = segs[s];
      var sx = xOf(segs[s + 1]);
      var w = (segs[s + 2] - segs[s + 1]) * scale;
      ctx.fillStyle = COLORS[PHASES[p]];
      if (p === 0) ctx.fillRect(sx, y + WAIT_Y, Math.max(w, 1), WAIT_H);
      else if (w > 0) ctx.fillRect(sx, y + BAR_Y, w, BAR_H);
    }
    var bx = xOf(it.waitEnd);
    if (x1 - bx < 1) {  // too short to see: one pixel, in the colour of its last phase
      ctx.fillStyle = segs.length ? COLORS[PHASES[segs[segs.length - 3]]] : ERROR;
      ctx.fillRect(bx, y + BAR_Y, 1, BAR_H);
    }
    if (!segs.length) {  // a request that never got a round trip: a hatched red bar
      ctx.fillStyle = "rgba(211, 47, 47, 0.25)";
      ctx.fillRect(x0, y + BAR_Y, Math.max(x1 - x0, 2), BAR_H);
    }
    if (it.error) {
      ctx.strokeStyle = ERROR;
      ctx.lineWidth = 1.5;
      var ex = Math.max(x1, x0 + 2);
      ctx.beginPath();
      ctx.moveTo(ex - 3, y + BAR_Y - 1);
      ctx.lineTo(ex + 3, y + BAR_Y + BAR_H + 1);
      ctx.moveTo(ex + 3, y + BAR_Y - 1);
      ctx.lineTo(ex - 3, y + BAR_Y + BAR_H + 1);
      ctx.stroke();
    }
    if (outline) {
      ctx.strokeStyle = outline;
      ctx.lineWidth = 2;
      ctx.strokeRect(Math.min(x0, bx) - 2, y + 0.5, Math.max(x1 - x0, 1) + 4, LANE_H - 1);
    }
  }

  function draw() {
    var t = performance.now();
    ctx.clearRect(0, 0, viewW, viewH);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, viewW, viewH);
    var first = Math.max(0, Math.floor(scroller.scrollTop / LANE_H));
    var last = Math.min(lanes.length - 1, Math.floor((scroller.scrollTop + viewH - AXIS_H) / LANE_H));
    var scale = pxPerMs();

    // Ticks and grid.
    var step = niceStep(90 / scale);
    var tStart = Math.max(0, msAt(GUTTER));
    var tEnd = msAt(viewW);
    var firstTick = Math.ceil(tStart / step) * step;

    ctx.save();
    ctx.beginPath();
    ctx.rect(GUTTER, AXIS_H, viewW - GUTTER, viewH - AXIS_H);
    ctx.clip();
    ctx.fillStyle = "#f3f5f7";
    for (var li = first; li <= last; li++) {
      if (li % 2) ctx.fillRect(GUTTER, laneTop(li), viewW - GUTTER, LANE_H);
    }
    ctx.strokeStyle = "#e4e8ec";
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (var tk = firstTick; tk <= tEnd; tk += step) {
      var gx = Math.round(xOf(tk)) + 0.5;
      ctx.moveTo(gx, AXIS_H);
      ctx.lineTo(gx, viewH);
    }
    ctx.stroke();
    ctx.fillStyle = STALL;
    stalls.forEach(function (st) {
      var sx = xOf(offsetMs(st.started_at));
      var w = Math.max(1, (num(st.duration_ms) ? st.duration_ms : 0) * scale);
      if (sx + w >= GUTTER && sx <= viewW) ctx.fillRect(sx, AXIS_H, w, viewH - AXIS_H);
    });
    // Connection lifetimes: a thin line from open to close, under the round trips.
    ctx.fillStyle = "#b0bec5";
    for (li = first; li <= last; li++) {
      var lane = lanes[li];
      if (lane.kind !== "conn") continue;
      var lx0 = Math.max(GUTTER, xOf(lane.openedAt));
      var lx1 = Math.min(viewW, xOf(lane.closedAt));
      if (lx1 > lx0) ctx.fillRect(lx0, laneTop(li) + BAR_Y + BAR_H / 2 - 0.5, lx1 - lx0, 1);
    }
    for (li = first; li <= last; li++) {
      var y = laneTop(li);
      var items = laneItems[li];
      for (var i = 0; i < items.length; i++) drawItem(items[i], y, null);
    }
    // Hops of one request: a dashed line from one's end to the next one's start.
    ctx.strokeStyle = LINK;
    ctx.lineWidth = 1;
    ctx.setLineDash([3, 2]);
    ctx.beginPath();
    links.forEach(function (pair) {
      var a = pair[0], b = pair[1];
      if (Math.max(a.lane, b.lane) < first || Math.min(a.lane, b.lane) > last) return;
      var ax = xOf(a.end), bx = xOf(b.start);
      if (Math.max(ax, bx) < GUTTER || Math.min(ax, bx) > viewW) return;
      var ay = laneTop(a.lane) + BAR_Y + BAR_H / 2, by = laneTop(b.lane) + BAR_Y + BAR_H / 2;
      ctx.moveTo(ax, ay);
      ctx.lineTo(bx, by);
    });
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = LINK;
    links.forEach(function (pair) {
      [pair[0], pair[1]].forEach(function (it, k) {
        if (it.lane < first || it.lane > last) return;
        var mx = xOf(k ? it.start : it.end);
        if (mx < GUTTER || mx > viewW) return;
        ctx.beginPath();
        ctx.arc(mx, laneTop(it.lane) + BAR_Y + BAR_H / 2, 2.5, 0, 2 * Math.PI);
        ctx.fill();
      });
    });
    if (hover && hover !== pinned && hover.lane >= first && hover.lane <= last) {
      drawItem(hover, laneTop(hover.lane), "#263238");
    }
    if (pinned && pinned.lane >= first && pinned.lane <= last) {
      drawItem(pinned, laneTop(pinned.lane), "#0b57d0");
    }
    ctx.restore();

    // Lane labels.
    ctx.save();
    ctx.beginPath();
    ctx.rect(0, AXIS_H, GUTTER, viewH - AXIS_H);
    ctx.clip();
    ctx.fillStyle = "#fafbfc";
    ctx.fillRect(0, AXIS_H, GUTTER, viewH - AXIS_H);
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    for (li = first; li <= last; li++) {
      var ln = lanes[li];
      var ly = laneTop(li) + LANE_H / 2;
      if (ln.kind === "errors") {
        ctx.fillStyle = ERROR;
        ctx.fillText("errors" + (errorLaneCount > 1 ? " " + (ln.id + 1) : ""), 6, ly);
      } else {
        ctx.fillStyle = "#59636e";
        ctx.fillText("#" + ln.id, 6, ly);
        ctx.fillStyle = "#1f2328";
        ctx.fillText(clipText(ln.host, GUTTER - 64), 52, ly);
        ctx.fillStyle = "#59636e";
        ctx.textAlign = "right";
        ctx.fillText("×" + laneItems[li].length, GUTTER - 6, ly);
        ctx.textAlign = "left";
      }
    }
    ctx.restore();
    ctx.fillStyle = "#d1d9e0";
    ctx.fillRect(GUTTER - 1, 0, 1, viewH);

    // The axis.
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, viewW, AXIS_H);
    ctx.fillStyle = "#d1d9e0";
    ctx.fillRect(0, AXIS_H - 1, viewW, 1);
    ctx.save();
    ctx.beginPath();
    ctx.rect(GUTTER, 0, viewW - GUTTER, AXIS_H);
    ctx.clip();
    ctx.fillStyle = "#e53935";
    stalls.forEach(function (st) {
      var sx = xOf(offsetMs(st.started_at));
      var w = Math.max(2, (num(st.duration_ms) ? st.duration_ms : 0) * scale);
      ctx.fillRect(sx, AXIS_H - 5, w, 4);
    });
    ctx.fillStyle = "#1f2328";
    ctx.strokeStyle = "#8c959f";
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "top";
    ctx.beginPath();
    for (tk = firstTick; tk <= tEnd; tk += step) {
      var ax = Math.round(xOf(tk)) + 0.5;
      ctx.moveTo(ax, AXIS_H - 6);
      ctx.lineTo(ax, AXIS_H);
      ctx.fillText(tickLabel(tk, step), ax + 3, 4);
    }
    ctx.stroke();
    ctx.restore();
    ctx.fillStyle = "#59636e";
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "top";
    ctx.fillText(lanes.length + " rows", 6, 8);
    lastDrawMs = performance.now() - t;
    if (!document.body.dataset.ready) {
      readyMs = marks.ready = performance.now();
      document.body.dataset.ready = "1";
    }
  }
  var lastDrawMs = 0;
  var readyMs = 0;

  var textWidths = {};
  function clipText(s, w) {
    var key = s + "|" + w;
    if (key in textWidths) return textWidths[key];
    var out = s;
    if (ctx.measureText(s).width > w) {
      while (out.length > 1 && ctx.measureText("…" + out).width > w) out = out.slice(1);
      out = "…" + out;
    }
    textWidths[key] = out;
    return out;
  }

  // ---------------------------------------------------------------------------------------
  // Pointing: which round trip is under (x, y), and its tooltip
  // ---------------------------------------------------------------------------------------

  function laneAt(y) {
    if (y < AXIS_H) return -1;
    var li = Math.floor((y - AXIS_H + scroller.scrollTop) / LANE_H);
    return li >= 0 && li < lanes.length ? li : -1;
  }

  function itemAt(li, ms, tolMs, inWaitBand) {
    var items = laneItems[li];
    if (!items) return null;
    var best = null, bestD = Infinity;
    for (var i = 0; i < items.length; i++) {
      var it = items[i];
      // In the bar's band a round trip is its phases after the pool wait; in the band
      // above, its pool wait.
      var s = inWaitBand ? it.start : it.waitEnd;
      var e = inWaitBand ? it.waitEnd : it.end;
      if (inWaitBand && e <= s) continue;
      var d = ms < s ? s - ms : ms > e ? ms - e : 0;
      if (d <= tolMs && d < bestD) { best = it; bestD = d; }
    }
    if (!best && inWaitBand) return itemAt(li, ms, tolMs, false);
    return best;
  }

  function hit(x, y) {
    if (x < GUTTER || x > viewW) return null;
    var li = laneAt(y);
    if (li < 0) return null;
    var yIn = y - laneTop(li);
    return itemAt(li, msAt(x), 3 / pxPerMs(), yIn < BAR_Y - 0.5);
  }

  function describe(it) {
    return {
      request: it.info.r.id, index: it.info.index, hop: it.hi, lane: it.lane,
      url: it.hop ? it.hop.url : it.info.r.url, status: it.hop ? it.hop.status : it.info.r.status,
      connection: it.conn, start: it.start, end: it.end,
    };
  }

  var tooltip = document.getElementById("tooltip");

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  function fillTooltip(it) {
    var r = it.info.r, h = it.hop;
    tooltip.textContent = "";
    var status = h ? h.status : r.status;
    var head = el("div", null, null);
    var b = el("b", null, "#" + r.id + " " + (h ? h.method : r.method) + " " + (num(status) ? status : "no response"));
    head.appendChild(b);
    var parts = [];
    if (r.hops && r.hops.length > 1) parts.push("hop " + (it.hi + 1) + " of " + r.hops.length);
    if (h && h.attempt) parts.push("attempt " + (h.attempt + 1));
    if (num(r.status) && h && r.status !== h.status) parts.push("request: " + r.status);
    if (parts.length) head.appendChild(el("span", "muted", " · " + parts.join(" · ")));
    tooltip.appendChild(head);
    tooltip.appendChild(el("div", "url", h ? h.url : r.url));
    if (h && r.url !== h.url) tooltip.appendChild(el("div", "url muted", "request: " + r.url));
    var conn;
    if (it.conn === null) {
      conn = "no connection";
    } else if (h.reused) {
      conn = "connection #" + it.conn + ", reused" +
        (num(h.idle_time_ms) && h.idle_time_ms > 0 ? " after " + fmtMs(h.idle_time_ms) + " idle" : "");
    } else {
      conn = "connection #" + it.conn + ", new" + (h.reuse_miss ? " (not reused: " + h.reuse_miss + ")" : "");
    }
    tooltip.appendChild(el("div", null, it.host + " · " + conn));
    // A round trip's connection details are in doc.connections (the page's form of the
    // document keeps only the id on the round trip), or on the round trip itself.
    var ci = it.conn === null ? null : Object.assign({}, connRecords[it.conn] || {}, h.connection);
    if (ci && ci.remote_addr) {
      var tls = ci.tls;
      tooltip.appendChild(el("div", "muted", "to " + ci.remote_addr +
        (tls && tls.version ? " · " + tls.version : "")));
    }
    var table = el("table", null, null);
    var stall = h && h.stall && typeof h.stall === "object" ? h.stall : null;
    var t = h ? h.timings || {} : {};
    PHASES.forEach(function (p) {
      if (!num(t[p])) return;
      var tr = el("tr", null, null);
      var name = el("td", null, null);
      var sw = el("i", null, null);
      sw.style.background = COLORS[p];
      name.appendChild(sw);
      name.appendChild(document.createTextNode(p === "blocked" ? "blocked (pool)" : p));
      tr.appendChild(name);
      tr.appendChild(el("td", "num", fmtMs(t[p])));
      if (stall && num(stall[p]) && stall[p] > 0) tr.appendChild(el("td", "err", "loop stalled " + fmtMs(stall[p])));
      table.appendChild(tr);
    });
    var tot = el("tr", null, null);
    tot.appendChild(el("td", null, "total"));
    tot.appendChild(el("td", "num", fmtMs(it.end - it.start)));
    tot.appendChild(el("td", "muted", "from +" + fmtMs(it.start)));
    table.appendChild(tot);
    tooltip.appendChild(table);
    // The round trip's error, or the request's on its last round trip (or when it had none).
    var err = h && h.error ? h.error : (!h || it.hi === r.hops.length - 1) ? r.error : null;
    if (err) tooltip.appendChild(el("div", "err", err));
  }

  function fillLaneTooltip(lane, li) {
    tooltip.textContent = "";
    if (lane.kind === "errors") {
      tooltip.appendChild(el("b", null, "round trips that got no connection"));
      tooltip.appendChild(el("div", "muted", laneItems[li].length + " in this row"));
      return;
    }
    var rec = lane.rec;
    tooltip.appendChild(el("b", null, "connection #" + lane.id + " · " + lane.host));
    if (rec) {
      if (rec.remote_addr) tooltip.appendChild(el("div", null, (rec.local_addr || "?") + " → " + rec.remote_addr));
      if (rec.tls && rec.tls.version) tooltip.appendChild(el("div", null, rec.tls.version + (rec.tls.cipher ? " · " + rec.tls.cipher : "")));
    }
    var reused = laneItems[li].filter(function (it) { return it.hop && it.hop.reused; }).length;
    tooltip.appendChild(el("div", null, laneItems[li].length + " round trips drawn, " + reused + " on it reused"));
    tooltip.appendChild(el("div", null, "open +" + fmtMs(lane.openedAt) + " → " +
      (rec && num(rec.closed_at) ? "closed +" + fmtMs(lane.closedAt) + (rec.close_reason ? " (" + rec.close_reason + ")" : "") : "still open at the end")));
  }

  function placeTooltip(clientX, clientY) {
    tooltip.hidden = false;
    var w = tooltip.offsetWidth, h = tooltip.offsetHeight;
    var x = clientX + 14, y = clientY + 16;
    if (x + w > window.innerWidth - 4) x = Math.max(4, clientX - w - 14);
    if (y + h > window.innerHeight - 4) y = Math.max(4, clientY - h - 12);
    tooltip.style.left = x + "px";
    tooltip.style.top = y + "px";
  }

  function unpin() {
    pinned = null;
    tooltip.classList.remove("pinned");
    tooltip.hidden = true;
    schedule();
  }

  function local(e) {
    var rect = scroller.getBoundingClientRect();
    return { x: e.clientX - rect.left, y: e.clientY - rect.top };
  }

  var lastMouse = null;
  function pointAt(e) {
    lastMouse = { clientX: e.clientX, clientY: e.clientY };
    var p = local(e);
    var it = hit(p.x, p.y);
    if (it !== hover) { hover = it; schedule(); }
    if (pinned) return;
    if (it) {
      fillTooltip(it);
      placeTooltip(e.clientX, e.clientY);
      scroller.style.cursor = "pointer";
    } else if (p.x < GUTTER && laneAt(p.y) >= 0) {
      var li = laneAt(p.y);
      fillLaneTooltip(lanes[li], li);
      placeTooltip(e.clientX, e.clientY);
      scroller.style.cursor = "default";
    } else {
      tooltip.hidden = true;
      scroller.style.cursor = "default";
    }
  }
  scroller.addEventListener("mousemove", pointAt);
  scroller.addEventListener("mouseleave", function () {
    lastMouse = null;
    if (hover) { hover = null; schedule(); }
    if (!pinned) tooltip.hidden = true;
  });
  scroller.addEventListener("click", function (e) {
    var p = local(e);
    var it = hit(p.x, p.y);
    if (!it) { if (pinned) unpin(); return; }
    pinned = it;
    fillTooltip(it);
    tooltip.classList.add("pinned");
    placeTooltip(e.clientX, e.clientY);
    schedule();
  });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape" && pinned) unpin(); });
  scroller.addEventListener("scroll", function () {
    if (lastMouse) pointAt(lastMouse);  // what is under the pointer now
    schedule();
  });
  scroller.addEventListener("wheel", function (e) {
    if (!(e.ctrlKey || e.metaKey)) return;  // plain wheel scrolls
    e.preventDefault();
    var px = e.deltaY * (e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? viewH : 1);  // lines, pages
    setZoom(zoom * Math.exp(-px * 0.002), local(e).x);
  }, { passive: false });
  document.getElementById("zoom-in").addEventListener("click", function () { setZoom(zoom * 2); });
  document.getElementById("zoom-out").addEventListener("click", function () { setZoom(zoom / 2); });
  document.getElementById("zoom-fit").addEventListener("click", function () { setZoom(1); });
  if (window.ResizeObserver) new ResizeObserver(function () { layout(); }).observe(scroller);
  else window.addEventListener("resize", layout);

  // ---------------------------------------------------------------------------------------
  // Summary, legend, host table
  // ---------------------------------------------------------------------------------------

  (function summary() {
    var errors = reqInfo.filter(function (i) { return i.cls === "error"; }).length;
    var parts = [requests.length + " requests", connLanes.length + " connections", errors + " failed",
      "over " + fmtMs(span)];
    if (num(doc.sample_rate) && doc.sample_rate < 1) {
      // Under sampling the timelines are the sample (and the failures kept anyway); the
      // aggregates count every request, so the page says how many it draws of how many.
      var seen = 0, failed = 0;
      Object.keys(aggregates).forEach(function (h) {
        var a = aggregates[h] || {};
        if (num(a.requests)) seen += a.requests;
        var e = a.errors && typeof a.errors === "object" ? a.errors : {};
        Object.keys(e).forEach(function (k) { if (num(e[k])) failed += e[k]; });
      });
      if (seen > 0) {
        parts[0] = requests.length + " traced of " + seen + " requests";
        parts[2] = failed + " failed";
      }
      parts.push("a sample of " + String(+(doc.sample_rate * 100).toPrecision(3)) + "% of requests traced");
    }
    if (num(doc.dropped) && doc.dropped > 0) parts.push(doc.dropped + " more not kept (in the host table only)");
    if (stalls.length) {
      var stalled = stalls.reduce(function (a, s) { return a + (num(s.duration_ms) ? s.duration_ms : 0); }, 0);
      parts.push("event loop stalled " + stalls.length + (stalls.length === 1 ? " time" : " times") + " for " + fmtMs(stalled));
    }
    if (num(doc.generated_at)) parts.push("made " + new Date(doc.generated_at * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC");
    document.getElementById("summary").textContent = parts.join(" · ");
  })();

  (function legend() {
    var box = document.getElementById("legend");
    function add(color, text, style) {
      var s = el("span", null, null);
      var i = el("i", null, null);
      i.style.background = color;
      if (style) Object.keys(style).forEach(function (k) { i.style[k] = style[k]; });
      s.appendChild(i);
      s.appendChild(document.createTextNode(text));
      box.appendChild(s);
    }
    PHASES.forEach(function (p) {
      add(COLORS[p], p === "blocked" ? "blocked (pool wait)" : p, p === "blocked" ? { height: "4px" } : null);
    });
    var failed = el("span", null, null);
    failed.appendChild(el("b", null, "✕"));
    failed.firstChild.style.color = ERROR;
    failed.appendChild(document.createTextNode("failed"));
    box.appendChild(failed);
    add("transparent", "hops of one request", { borderTop: "2px dashed " + LINK, height: "0" });
    if (stalls.length) add(STALL, "event loop stalled");
  })();

  function quantile(sorted, q) {
    if (!sorted.length) return null;
    return sorted[Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))))];
  }

  var COLUMNS = [
    { key: "host", label: "host", title: "host:port the requests were sent to" },
    { key: "requests", label: "requests" },
    { key: "errors", label: "errors", title: "failed requests (no response)" },
    { key: "notOk", label: "4xx/5xx" },
    { key: "reuse", label: "reuse", title: "share of round trips on a pooled connection" },
    { key: "opened", label: "new conns", title: "connections opened, and why (reuse_miss)" },
    { key: "p50", label: "p50", title: "total time of a request" },
    { key: "p90", label: "p90" },
    { key: "p99", label: "p99" },
    { key: "wait50", label: "wait p50", title: "request written to first byte" },
    { key: "poolShare", label: "pool wait", title: "share of the time spent waiting for a pooled connection" },
    { key: "stall", label: "loop stall", title: "time of its phases the event loop was blocked" },
  ];

  function hostRows() {
    var byHost = {};
    function row(host) {
      var r = byHost[host];
      if (!r) {
        r = byHost[host] = {
          host: host, requests: 0, errors: 0, notOk: 0, roundTrips: 0, reusedTrips: 0,
          opened: 0, why: {}, totals: [], waits: [], blocked: 0, time: 0, stall: 0, exact: true,
        };
      }
      return r;
    }
    reqInfo.forEach(function (info) {
      var r = row(info.host);
      var q = info.r;
      r.requests++;
      if (info.cls === "error") r.errors++;
      else if (q.status >= 400) r.notOk++;
      var t = q.timings || {};
      if (num(t.total)) r.totals.push(t.total);
      if (num(t.wait)) r.waits.push(t.wait);
      info.items.forEach(function (it) {
        var h = it.hop;
        if (!h) return;
        var hr = row(it.host);
        hr.roundTrips++;
        if (h.reused) hr.reusedTrips++;
        else if (it.conn !== null) {
          hr.opened++;
          var why = h.reuse_miss || "?";
          hr.why[why] = (hr.why[why] || 0) + 1;
        }
        var ht = h.timings || {};
        if (num(ht.blocked)) hr.blocked += ht.blocked;
        if (num(ht.total)) hr.time += ht.total;
        if (h.stall && typeof h.stall === "object") {
          PHASES.forEach(function (p) { if (num(h.stall[p])) hr.stall += h.stall[p]; });
        }
      });
    });
    Object.keys(aggregates).forEach(function (host) { row(host); });
    return Object.keys(byHost).map(function (host) {
      var r = byHost[host];
      var agg = aggregates[host];
      r.totals.sort(function (a, b) { return a - b; });
      r.waits.sort(function (a, b) { return a - b; });
      var out = {
        host: host, requests: r.requests, errors: r.errors, notOk: r.notOk,
        reuse: r.roundTrips ? r.reusedTrips / r.roundTrips : null,
        opened: r.opened, why: r.why,
        p50: quantile(r.totals, 0.5), p90: quantile(r.totals, 0.9), p99: quantile(r.totals, 0.99),
        wait50: quantile(r.waits, 0.5),
        poolShare: r.time > 0 ? r.blocked / r.time : null,
        stall: r.stall,
      };
      if (agg && typeof agg === "object") {  // the Recorder's aggregates: every request it saw
        if (num(agg.requests)) out.requests = agg.requests;
        if (agg.errors && typeof agg.errors === "object") {
          out.errors = Object.keys(agg.errors).reduce(function (a, k) { return a + (num(agg.errors[k]) ? agg.errors[k] : 0); }, 0);
        } else if (num(agg.errors)) out.errors = agg.errors;
        if (agg.statuses && typeof agg.statuses === "object") {
          out.notOk = Object.keys(agg.statuses).reduce(function (a, k) { return a + (Number(k) >= 400 && num(agg.statuses[k]) ? agg.statuses[k] : 0); }, 0);
        }
        if (num(agg.reused) && num(agg.round_trips) && agg.round_trips > 0) out.reuse = agg.reused / agg.round_trips;
        var ph = agg.phases || {};
        if (ph.total) {
          if (num(ph.total.p50)) out.p50 = ph.total.p50;
          if (num(ph.total.p90)) out.p90 = ph.total.p90;
          if (num(ph.total.p99)) out.p99 = ph.total.p99;
        }
        if (ph.wait && num(ph.wait.p50)) out.wait50 = ph.wait.p50;
      }
      return out;
    });
  }

  var rows = hostRows();
  var sortKey = "requests", sortDir = -1;
  var table = document.getElementById("hosts");

  function cellText(key, r) {
    var v = r[key];
    switch (key) {
      case "host": return v;
      case "reuse": case "poolShare": return v == null ? "–" : (v * 100).toFixed(v < 0.1 && v > 0 ? 1 : 0) + "%";
      case "p50": case "p90": case "p99": case "wait50": return v == null ? "–" : fmtMs(v);
      case "stall": return v ? fmtMs(v) : "–";
      case "opened":
        var why = Object.keys(r.why).sort(function (a, b) { return r.why[b] - r.why[a]; })
          .map(function (k) { return k + " " + r.why[k]; });
        return v + (why.length ? " (" + why.join(", ") + ")" : "");
      default: return v == null ? "–" : String(v);
    }
  }

  function renderHead() {
    var tr = document.createElement("tr");
    COLUMNS.forEach(function (c) {
      var th = el("th", null, c.label);
      th.dataset.key = c.key;
      if (c.title) th.title = c.title;
      th.setAttribute("aria-sort", c.key === sortKey ? (sortDir > 0 ? "ascending" : "descending") : "none");
      th.addEventListener("click", function () {
        if (sortKey === c.key) sortDir = -sortDir;
        else { sortKey = c.key; sortDir = c.key === "host" ? 1 : -1; }
        renderHead();
        renderBody();
      });
      tr.appendChild(th);
    });
    var thead = table.tHead;
    thead.textContent = "";
    thead.appendChild(tr);
  }

  function renderBody() {
    var key = sortKey, dir = sortDir;
    rows.sort(function (a, b) {
      var x = a[key], y = b[key];
      if (x == null && y == null) return a.host < b.host ? -1 : 1;
      if (x == null) return 1;  // no value: last, either way
      if (y == null) return -1;
      if (x < y) return -dir;
      if (x > y) return dir;
      return a.host < b.host ? -1 : a.host > b.host ? 1 : 0;
    });
    var tbody = table.tBodies[0];
    tbody.textContent = "";
    rows.slice(0, MAX_TABLE_ROWS).forEach(function (r) {
      var tr = document.createElement("tr");
      COLUMNS.forEach(function (c) {
        var td = el("td", null, cellText(c.key, r));
        if (c.key === "host") {
          td.className = "host";
          td.title = "show only this host in the waterfall";
          td.addEventListener("click", function () { hostInput.value = r.host; applyFilter(); });
        } else if ((c.key === "errors" || c.key === "notOk") && r[c.key] > 0) {
          td.className = "bad";
        }
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    document.getElementById("hosts-note").textContent =
      rows.length + " host" + (rows.length === 1 ? "" : "s") +
      (rows.length > MAX_TABLE_ROWS ? ", the first " + MAX_TABLE_ROWS + " shown (click a header to sort)" : "") +
      ". Click a header to sort, a host to filter the waterfall.";
  }

  renderHead();
  renderBody();
  marks.table = performance.now();

  // ---------------------------------------------------------------------------------------
  // For tests and scripts: a read-only view of what is drawn
  // ---------------------------------------------------------------------------------------

  window.aiotraceReport = Object.freeze({
    get requests() { return drawnRequests; },
    get lanes() { return lanes.length; },
    get connectionLanes() { return connLaneCount; },
    get errorLanes() { return errorLaneCount; },
    get totalRequests() { return requests.length; },
    get hostRows() { return rows.length; },
    get zoom() { return zoom; },
    get drawMs() { return lastDrawMs; },
    get readyMs() { return readyMs; },
    /** When the script started, parsed the data, built its model, and first drew (ms). */
    get marks() { return Object.assign({}, marks); },
    /** The round trip under (x, y), CSS px from the waterfall's top left corner. */
    hitTest: function (x, y) { var it = hit(x, y); return it ? describe(it) : null; },
    /** The round trip in drawn lane ``lane`` at ``ms`` from the start (or nearest, 3 px). */
    requestAt: function (lane, ms) {
      var it = itemAt(lane, ms, 3 / pxPerMs(), false);
      return it ? describe(it) : null;
    },
    /** Scroll request ``id``'s hop ``hop`` (-1: a request with none) into view; the middle
     * of its bar, in client (viewport) coordinates, or null when it is not drawn. */
    barPosition: function (id, hop) {
      var info = null;
      for (var i = 0; i < reqInfo.length; i++) if (reqInfo[i].r.id === id) { info = reqInfo[i]; break; }
      if (!info) return null;
      var it = null;
      info.items.forEach(function (x) { if (x.hi === (hop == null ? x.hi : hop) && !it) it = x; });
      if (!it || it.lane < 0 || it.lane >= lanes.length || laneItems[it.lane].indexOf(it) < 0) return null;
      var top = it.lane * LANE_H;
      if (top < scroller.scrollTop || top + LANE_H > scroller.scrollTop + viewH - AXIS_H) {
        scroller.scrollTop = Math.max(0, top - (viewH - AXIS_H) / 2);
      }
      var mid = (Math.max(it.waitEnd, it.start) + it.end) / 2;
      var x = xOf(mid);
      if (x < GUTTER + 4 || x > viewW - 4) {
        scroller.scrollLeft = Math.max(0, GUTTER + PAD + mid * pxPerMs() - (GUTTER + viewW) / 2);
      }
      var rect = scroller.getBoundingClientRect();
      return { x: rect.left + xOf(mid), y: rect.top + laneTop(it.lane) + BAR_Y + BAR_H / 2 };
    },
  });

  applyFilter();
})();
