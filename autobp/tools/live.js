// autobp view: keeps the list of runs, or a run's or sweep's report page, up to date (served by autobp/tools/view.py).
// Sections whose version changed are rebuilt from /api/section; charts that follow a log get the rows appended since
// the byte offset they hold from /api/tail. Text from files is only ever set as textContent.
"use strict";
(() => {
  const POLL_MS = 1500;
  const LIST_MS = 2500;
  const q = encodeURIComponent;

  async function get(url, json) {
    const answer = await fetch(url, { cache: "no-store" });
    if (!answer.ok) throw new Error(`${url.split("?")[0]}: ${answer.status} ${await answer.text()}`);
    return json ? answer.json() : answer.text();
  }

  function problem(text) {
    let box = document.getElementById("live-problem");
    if (!box) {
      box = document.createElement("p");
      box.id = "live-problem";
      box.className = "note";
      document.body.prepend(box);
    }
    box.textContent = text;
  }

  function every(ms, work) {
    const tick = async () => {
      try {
        await work();
        problem("");
      } catch (error) {
        problem(`autobp view: ${error.message}`);
      }
      setTimeout(tick, ms);
    };
    return tick;
  }

  // --- the list of runs ---------------------------------------------------------------------------------------

  function badge(text) {
    const span = document.createElement("span");
    const word = text.split(" ").pop();
    span.className = "status";
    if (/^[a-z_]+$/.test(word)) span.classList.add(word);
    span.textContent = text;
    return span;
  }

  function runRow(run) {
    const row = document.createElement("tr");
    const cell = (content) => {
      const td = row.insertCell();
      td.append(content);
      return td;
    };
    const link = document.createElement("a");
    link.href = run.href;
    link.textContent = run.name;
    cell(link);
    cell(run.kind);
    const status = cell("");
    run.status.split(", ").forEach((part) => status.append(badge(part), " "));
    cell(run.date);
    cell(run.epochs === null ? "-" : String(run.epochs));
    cell(run.best);
    row.dataset.name = run.name;
    return row;
  }

  function followRuns(table) {
    const notes = document.getElementById("notes");
    every(LIST_MS, async () => {
      const listing = await get("/api/runs", true);
      table.tBodies[0].replaceChildren(...listing.runs.map(runRow));
      notes.replaceChildren(...listing.notes.map((note) => Object.assign(document.createElement("li"), { textContent: note })));
    })();
  }

  // --- a run's or sweep's page ----------------------------------------------------------------------------------

  function charts(scope) {
    return [...scope.querySelectorAll("[data-live]")].map((element) => ({
      spec: JSON.parse(element.dataset.live),
      plot: element.querySelector(".js-plotly-plot, .plotly-graph-div"),
    }));
  }

  function growLine(trace, spec, records) {
    const xs = Array.from(trace.x || []);
    const ys = Array.from(trace.y || []);
    const match = Object.entries(spec.match || {});
    let last = xs.length ? xs[xs.length - 1] : -Infinity;
    for (const record of records) {
      const x = record[spec.x];
      if (match.some(([column, value]) => record[column] !== value) || x === null || x === undefined || x <= last) continue;
      xs.push(x);
      ys.push(record[spec.y] ?? null);
      last = x;
    }
    if (xs.length === (trace.x || []).length) return false;
    trace.x = xs;
    trace.y = ys;
    return true;
  }

  function growHeatmap(heatmap, spec, maxTicks, records) {
    const steps = Array.from(heatmap.x);
    const names = Array.from(heatmap.y);
    const z = heatmap.z.map((row) => Array.from(row));
    const raw = heatmap.customdata.map((row) => Array.from(row));
    const column = new Map(steps.map((step, index) => [step, index]));
    let grew = false;
    for (const record of records) {
      const row = names.indexOf(record[spec.rows]);
      const step = record[spec.x];
      if (row < 0 || step === null || step === undefined) continue;
      let col = column.get(step);
      if (col === undefined) {
        col = steps.push(step) - 1;
        column.set(step, col);
        z.forEach((values) => values.push(null));
        raw.forEach((values) => values.push(null));
      }
      const value = record[spec.z];
      raw[row][col] = value;
      z[row][col] = value > 0 ? Math.log10(value) : null;
      grew = true;
    }
    if (!grew) return false;
    let low = Infinity;
    let high = -Infinity;
    for (const values of z) for (const v of values) if (v !== null) [low, high] = [Math.min(low, v), Math.max(high, v)];
    if (low <= high) {
      [low, high] = [Math.floor(low), Math.ceil(high)];
      const step = Math.max(1, Math.ceil((high - low) / maxTicks));
      const ticks = [];
      for (let t = low; t <= high; t += step) ticks.push(t);
      Object.assign(heatmap, { zmin: low, zmax: high });
      heatmap.colorbar = { ...heatmap.colorbar, tickvals: ticks, ticktext: ticks.map((t) => `1e${t}`) };
    }
    Object.assign(heatmap, { x: steps, z, customdata: raw });
    return true;
  }

  function followPage(main) {
    const dir = main.dataset.dir;
    const tails = new Map(); // a log (relative to the page's directory) -> {id, offset}: where its next rows start

    function register(scope) {
      for (const { spec } of charts(scope)) {
        for (const [source, [id, offset]] of Object.entries(spec.marks)) {
          const known = tails.get(source);
          tails.set(source, known && known.id === id ? { id, offset: Math.min(known.offset, offset) } : { id, offset });
        }
        for (const trace of spec.traces) if (trace && !tails.has(trace.source)) tails.set(trace.source, { id: null, offset: 0 });
      }
    }

    async function rebuild(section) {
      const id = section.id.slice("section-".length);
      const template = document.createElement("template");
      template.innerHTML = await get(`/api/section?page=${q(dir)}&id=${q(id)}`, false);
      const fresh = template.content.firstElementChild;
      section.querySelectorAll(".js-plotly-plot").forEach((plot) => Plotly.purge(plot));
      section.replaceWith(fresh);
      for (const old of fresh.querySelectorAll("script")) {
        const script = document.createElement("script");
        script.textContent = old.textContent;
        old.replaceWith(script); // a script set through innerHTML does not run; this one does
      }
      register(fresh);
    }

    function grow(source, columns, rows) {
      const records = rows.map((row) => Object.fromEntries(columns.map((name, index) => [name, row[index]])));
      for (const { spec, plot } of charts(main)) {
        if (!plot || !plot.data) continue;
        let grew = false;
        if (spec.kind === "heatmap") {
          if (spec.traces[0].source === source) grew = growHeatmap(plot.data[0], spec.traces[0], spec.max_ticks, records);
        } else {
          spec.traces.forEach((trace, index) => {
            if (trace && trace.source === source && plot.data[index]) grew = growLine(plot.data[index], trace, records) || grew;
          });
        }
        if (grew) Plotly.redraw(plot);
      }
      for (const counter of main.querySelectorAll(".live-count")) {
        if (counter.dataset.source !== source) continue;
        for (const record of records) {
          const value = record[counter.dataset.column];
          if (typeof value === "number" && value > Number(counter.textContent)) counter.textContent = String(value);
        }
      }
    }

    async function rebuildChanged() {
      const state = await get(`/api/state?page=${q(dir)}`, true);
      for (const section of main.querySelectorAll("section[data-version]")) {
        const id = section.id.slice("section-".length);
        if (id in state.versions && state.versions[id] !== section.dataset.version) await rebuild(section);
      }
    }

    async function growCharts() {
      const asked = [...tails.keys()];
      if (!asked.length) return;
      const path = (source) => (dir ? `${dir}/${source}` : source);
      const query = asked.map((source) => `file=${q(path(source))}&from=${tails.get(source).offset}`).join("&");
      const answers = await get(`/api/tail?${query}`, true);
      const replaced = new Set();
      asked.forEach((source, index) => {
        const answer = answers[index];
        const tail = tails.get(source);
        if (answer.missing || !tail) return;
        if (tail.id !== null && (answer.file_id !== tail.id || answer.end < tail.offset)) {
          replaced.add(source); // rewritten (a resumed run): the sections drawn from it are rebuilt whole
          tails.delete(source);
          return;
        }
        Object.assign(tail, { id: answer.file_id, offset: answer.end });
        if (answer.notes.length) throw new Error(answer.notes.join("; "));
        if (answer.rows.length) grow(source, answer.columns, answer.rows);
      });
      for (const section of main.querySelectorAll("section[data-version]")) {
        if (charts(section).some(({ spec }) => spec.traces.some((trace) => trace && replaced.has(trace.source)))) await rebuild(section);
      }
    }

    register(main);
    setTimeout(every(POLL_MS, async () => {
      await rebuildChanged();
      await growCharts();
    }), POLL_MS);
  }

  const main = document.getElementById("autobp-page");
  if (main && main.dataset.dir !== undefined) followPage(main);
  const runs = document.getElementById("runs");
  if (runs) followRuns(runs);
})();
