/* Interactive explorers for "CNNs, derived": plain JavaScript and SVG, no libraries, no network.
 *
 * Fills every <div class="cnn-explorer" data-explorer="..."> on a page:
 *   data-explorer="conv"  chapter 01: the output size of a convolution along one axis and the
 *                         input pixels one output pixel reads (cnnlib.conv_output_size).
 *   data-explorer="rf"    chapter 05: receptive field size r, jump j and start of every layer of
 *                         a stack of convolutions, and the field of one unit
 *                         (cnnlib.receptive_field).
 *
 * The arithmetic copies cnnlib's definitions line by line (cnnlib/conv.py, cnnlib/_validate.py,
 * cnnlib/receptive_field.py). tests/test_site.py drives both explorers in a browser through many
 * settings and compares every number they display with what cnnlib computes.
 */
(function () {
  "use strict";

  const SVG_NS = "http://www.w3.org/2000/svg";
  const MINUS = "\u2212";
  let uid = 0; // unique ids when a page holds several explorers

  // --- Arithmetic, one axis (both axes are alike here) ----------------------------------------

  /** Extent of a dilated kernel, d (k - 1) + 1. */
  function extentOf(k, d) {
    return d * (k - 1) + 1;
  }

  /** (before, after) padding of one axis, as cnnlib._validate.axis_padding. */
  function axisPadding(mode, p, n, extent, s) {
    if (mode === "VALID") return [0, 0];
    if (mode === "FULL") return [extent - 1, extent - 1];
    if (mode === "SAME") {
      const out = Math.ceil(n / s); // XLA's rule: output ceil(n / s), odd pixel after
      const total = Math.max((out - 1) * s + extent - n, 0);
      return [Math.floor(total / 2), total - Math.floor(total / 2)];
    }
    return [p, p]; // an int pads both sides
  }

  /** Output length, as cnnlib.conv_output_size; null where the kernel does not fit. */
  function outputSize(n, extent, before, after, s) {
    if (extent > n + before + after) return null; // cnnlib raises ValueError
    return Math.floor((n + before + after - extent) / s) + 1;
  }

  /** Records of a chain of convolutions with integer padding, as cnnlib.receptive_field. */
  function receptiveField(n, layers) {
    let r = 1, j = 1, start = 0, size = n; // the input itself
    return layers.map(({ k, s, d, p }) => {
      const e = extentOf(k, d);
      r = r + (e - 1) * j;
      start = start - p * j;
      j = j * s;
      size = size === null ? null : outputSize(size, e, p, p, s);
      return { r, j, start, out: size, extent: e };
    });
  }

  // --- DOM helpers ----------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    for (const child of children) node.append(child);
    return node;
  }

  function svgEl(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    return node;
  }

  /** A number as printed: U+2212 for the minus sign. */
  function num(v) {
    return v < 0 ? MINUS + String(-v) : String(v);
  }

  function markInvalid(input, invalid) {
    if (invalid) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }

  /** An integer <input>; `read()` returns its value, or null (marked invalid) outside min..max. */
  function intInput(value, min, max, attrs) {
    const input = el("input", Object.assign({
      type: "number", min, max, step: 1, value, inputmode: "numeric",
    }, attrs));
    input.read = function () {
      const v = Number(input.value);
      const ok = input.value.trim() !== "" && Number.isInteger(v) && v >= min && v <= max;
      markInvalid(input, !ok);
      return ok ? v : null;
    };
    input.rangeText = `${min} to ${max}`;
    return input;
  }

  /** An integer input with a visible label above it. */
  function intField(label, value, min, max) {
    const id = `cnnx-${++uid}`;
    const input = intInput(value, min, max, { id });
    const wrap = el("div", { class: "cnnx-field" }, el("label", { for: id }, label), input);
    return { wrap, input };
  }

  /**
   * Cell borders of a rows x cols grid at (x0, y0) as one path (cheaper than one rect each);
   * none above 48 cells a side, where the lines would be closer than the cells are wide.
   */
  function gridPath(x0, y0, rows, cols, cell, cls) {
    let d = "";
    if (Math.max(rows, cols) > 48) return svgEl("g");
    for (let i = 0; i <= rows; i++) d += `M${x0} ${y0 + i * cell}h${cols * cell}`;
    for (let i = 0; i <= cols; i++) d += `M${x0 + i * cell} ${y0}v${rows * cell}`;
    return svgEl("path", { d, class: cls });
  }

  /** Diagonal hatching for padding, one pattern per SVG. */
  function hatch(svg, id) {
    const defs = svgEl("defs");
    const pattern = svgEl("pattern", {
      id, width: 4, height: 4, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)",
    });
    pattern.append(svgEl("rect", { width: 4, height: 4, class: "cnnx-pad-bg" }));
    pattern.append(svgEl("line", { x1: 0, y1: 0, x2: 0, y2: 4, class: "cnnx-hatch" }));
    defs.append(pattern);
    svg.append(defs);
  }

  /** Width in CSS pixels for a grid of `cells` cells: large cells, but at most `max`. */
  function displayWidth(cells, max) {
    return Math.min(max, Math.max(cells * 26, 52));
  }

  /**
   * A square grid of units to choose one from: click a cell, or focus it (Tab) and move with
   * the arrow keys (Home and End jump to the corners). `onChange(row, col)` after each move.
   */
  function makePicker(name, onChange) {
    const CELL = 10;
    const svg = svgEl("svg", { class: "cnnx-svg", "aria-hidden": "true", focusable: "false" });
    const box = el("div", {
      class: "cnnx-picker", tabindex: "0", role: "group", "aria-roledescription": "pixel grid",
    });
    box.append(svg);
    const state = { size: 0, row: 0, col: 0 };

    function draw() {
      svg.replaceChildren();
      const n = state.size;
      if (!n) return;
      const w = n * CELL;
      svg.setAttribute("viewBox", `-1 -1 ${w + 2} ${w + 2}`);
      svg.style.width = displayWidth(n, 300) + "px";
      svg.append(svgEl("rect", { x: 0, y: 0, width: w, height: w, class: "cnnx-out-bg" }));
      svg.append(svgEl("rect", {
        x: state.col * CELL, y: state.row * CELL, width: CELL, height: CELL,
        class: "cnnx-chosen", "data-row": state.row, "data-col": state.col,
      }));
      svg.append(gridPath(0, 0, n, n, CELL, "cnnx-grid"));
      box.setAttribute("aria-label",
        `${name}: ${n} by ${n} units; unit (${state.row}, ${state.col}) is chosen. ` +
        "Arrow keys move the choice.");
    }

    function move(row, col) {
      const last = state.size - 1;
      state.row = Math.min(Math.max(row, 0), last);
      state.col = Math.min(Math.max(col, 0), last);
      draw();
      onChange(state.row, state.col);
    }

    box.addEventListener("keydown", (event) => {
      if (!state.size) return;
      const steps = {
        ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1],
      };
      if (event.key in steps) {
        const [dr, dc] = steps[event.key];
        move(state.row + dr, state.col + dc);
      } else if (event.key === "Home") {
        move(0, 0);
      } else if (event.key === "End") {
        move(state.size - 1, state.size - 1);
      } else {
        return;
      }
      event.preventDefault(); // no page scrolling while choosing
    });
    svg.addEventListener("click", (event) => {
      if (!state.size) return;
      const point = svg.createSVGPoint();
      point.x = event.clientX;
      point.y = event.clientY;
      const p = point.matrixTransform(svg.getScreenCTM().inverse());
      move(Math.floor(p.y / CELL), Math.floor(p.x / CELL));
      box.focus();
    });

    return {
      el: box,
      state,
      /** A new grid size; keeps the chosen unit where it still exists. */
      resize(size, row, col) {
        state.size = size || 0;
        state.row = Math.min(row, Math.max(size - 1, 0));
        state.col = Math.min(col, Math.max(size - 1, 0));
        (box.closest("figure") || box).hidden = !size; // no units: no grid, no caption
        draw();
      },
    };
  }

  /** A legend entry: a swatch drawn with the same class as in the figure, and its meaning. */
  function legendItem(cls, text) {
    const swatch = svgEl("svg", {
      viewBox: "0 0 10 10", class: "cnnx-swatch", "aria-hidden": "true",
    });
    swatch.append(svgEl("rect", { x: 0.5, y: 0.5, width: 9, height: 9, class: cls }));
    return el("li", {}, swatch, text);
  }

  // --- Convolution arithmetic (chapter 01) ------------------------------------------------------

  function convExplorer(root) {
    const patternId = `cnnx-hatch-${++uid}`;
    const n = intField("Input size n", 7, 1, 24);
    const k = intField("Kernel size k", 3, 1, 9);
    const s = intField("Stride s", 2, 1, 6);
    const d = intField("Dilation d", 1, 1, 4);
    const p = intField("Padding p (integer)", 1, 0, 12);
    const modeId = `cnnx-${++uid}`;
    const mode = el("select", { id: modeId });
    for (const [value, text] of [
      ["INT", "integer p"], ["VALID", "VALID (none)"], ["SAME", "SAME"], ["FULL", "FULL"],
    ]) mode.append(el("option", { value }, text));
    const modeField = el("div", { class: "cnnx-field" },
      el("label", { for: modeId }, "Padding"), mode);
    const inputs = [n.input, k.input, s.input, mode, p.input, d.input];

    const quantity = (name) => el("span", { "data-quantity": name });
    const q = {
      before: quantity("pad-before"), after: quantity("pad-after"), extent: quantity("extent"),
      o: quantity("o"),
    };
    const formula = el("p", { class: "cnnx-formula", "data-quantity": "formula" });
    const numbers = el("p", { class: "cnnx-numbers" },
      "Padding before ", q.before, ", after ", q.after, "; the dilated kernel spans ", q.extent,
      " pixels; output size ", el("strong", {}, "o = ", q.o), ".");
    const message = el("p", { class: "cnnx-message", role: "status", hidden: "" });

    const inputSvg = svgEl("svg", { class: "cnnx-svg", role: "img" });
    hatch(inputSvg, patternId);
    const inputLayer = svgEl("g");
    inputSvg.append(inputLayer);
    const picker = makePicker("Output grid", () => render());
    const summary = el("p", { class: "cnnx-summary", "aria-live": "polite" });

    root.replaceChildren(
      el("div", { class: "cnnx-controls", role: "group", "aria-label": "Convolution settings" },
        n.wrap, k.wrap, s.wrap, modeField, p.wrap, d.wrap),
      formula, numbers, message,
      el("div", { class: "cnnx-figures" },
        el("figure", {}, inputSvg, el("figcaption", {}, "Input, padded")),
        el("figure", {}, picker.el,
          el("figcaption", {}, "Output: click a pixel, or focus the grid and use the arrow keys"))),
      el("ul", { class: "cnnx-legend" },
        legendItem("cnnx-in-bg", "input pixel"),
        legendItem("cnnx-pad-swatch", "padding (zeros)"),
        legendItem("cnnx-read", "read by the chosen output pixel"),
        legendItem("cnnx-window", "span of the dilated kernel")),
      summary,
    );
    root.querySelector(".cnnx-pad-swatch").setAttribute("fill", `url(#${patternId})`);

    function render() {
      p.input.disabled = mode.value !== "INT";
      const values = { n: n.input.read(), k: k.input.read(), s: s.input.read(), d: d.input.read(),
                       p: mode.value === "INT" ? p.input.read() : 0 };
      const bad = Object.entries(values).filter(([, v]) => v === null).map(([key]) => key);
      if (bad.length) {
        const fields = { n, k, s, d, p };
        message.textContent = bad.map((key) =>
          `${key} must be a whole number from ${fields[key].input.rangeText}.`).join(" ");
        message.hidden = false;
        return; // keep the last valid drawing
      }
      const extent = extentOf(values.k, values.d);
      const [before, after] = axisPadding(mode.value, values.p, values.n, extent, values.s);
      const o = outputSize(values.n, extent, before, after, values.s);
      q.before.textContent = before;
      q.after.textContent = after;
      q.extent.textContent = extent;
      q.o.textContent = o === null ? "none" : o;
      const top = values.n + before + after - values.d * (values.k - 1) - 1;
      formula.textContent =
        "o = \u230A(n + p_before + p_after \u2212 d(k \u2212 1) \u2212 1) / s\u230B + 1 = " +
        `\u230A(${values.n} + ${before} + ${after} \u2212 ${values.d}\u00D7(${values.k} \u2212 1)` +
        ` \u2212 1) / ${values.s}\u230B + 1 = ` +
        (o === null ? `\u230A${num(top)} / ${values.s}\u230B + 1: no output` :
          `\u230A${num(top)} / ${values.s}\u230B + 1 = ${o}`);
      if (o === null) {
        message.textContent =
          `The kernel does not fit: dilated, it spans ${extent} pixels, but the padded input ` +
          `has only ${values.n} + ${before} + ${after} = ${values.n + before + after}. ` +
          "cnnlib.conv_output_size raises a ValueError here. Use more padding, or a smaller " +
          "kernel or dilation.";
        message.hidden = false;
      } else {
        message.hidden = true;
      }
      if (picker.state.size !== (o || 0)) picker.resize(o || 0, picker.state.row, picker.state.col);
      drawInput(values, extent, before, after, o);
    }

    function drawInput(v, extent, before, after, o) {
      const CELL = 10;
      const total = before + v.n + after;
      inputLayer.replaceChildren();
      inputSvg.setAttribute("viewBox", `-1 -1 ${total * CELL + 2} ${total * CELL + 2}`);
      inputSvg.style.width = displayWidth(total, 360) + "px";
      const at = (i) => (i + before) * CELL; // input coordinate -> SVG coordinate
      inputLayer.append(svgEl("rect", {
        x: 0, y: 0, width: total * CELL, height: total * CELL, fill: `url(#${patternId})`,
      }));
      inputLayer.append(svgEl("rect", {
        x: at(0), y: at(0), width: v.n * CELL, height: v.n * CELL, class: "cnnx-in-bg",
      }));
      const taps = [];
      if (o !== null) {
        const { row, col } = picker.state;
        const rows = [], cols = [];
        for (let u = 0; u < v.k; u++) {
          rows.push(row * v.s - before + u * v.d); // y[i] reads xp[i s + u d], xp = padded x
          cols.push(col * v.s - before + u * v.d);
        }
        for (const r of rows) {
          for (const c of cols) {
            const inPad = r < 0 || r >= v.n || c < 0 || c >= v.n;
            taps.push(inPad);
            inputLayer.append(svgEl("rect", {
              x: at(c), y: at(r), width: CELL, height: CELL,
              class: inPad ? "cnnx-read cnnx-read-pad" : "cnnx-read", "data-row": r, "data-col": c,
            }));
          }
        }
        inputLayer.append(svgEl("rect", {
          x: at(cols[0]), y: at(rows[0]), width: extent * CELL, height: extent * CELL,
          class: "cnnx-window",
        }));
        const padLabel = mode.value === "INT" ? `padding ${v.p}` : `"${mode.value}"`;
        const unused = total - ((o - 1) * v.s + extent);
        summary.textContent =
          `Input ${v.n} by ${v.n}, padded by ${before} before and ${after} after (${padLabel}) ` +
          `to ${total} by ${total}; kernel ${v.k} by ${v.k} with dilation ${v.d} spans ` +
          `${extent} pixels; stride ${v.s}. Output ${o} by ${o}. Output pixel (${row}, ${col}) ` +
          `reads input rows ${rows.map(num).join(", ")} and columns ${cols.map(num).join(", ")}: ` +
          `${taps.length} pixels, ${taps.filter(Boolean).length} of them padding.` +
          (unused > 0 ? ` The last ${unused} row${unused > 1 ? "s" : ""} and column` +
            `${unused > 1 ? "s" : ""} of the padded input are never read.` : "");
      } else {
        summary.textContent =
          `Input ${v.n} by ${v.n}, padded by ${before} before and ${after} after; the kernel ` +
          `spans ${extent} pixels and does not fit, so there is no output.`;
      }
      inputLayer.append(gridPath(0, 0, total, total, CELL, "cnnx-grid"));
      inputLayer.append(svgEl("rect", {
        x: at(0), y: at(0), width: v.n * CELL, height: v.n * CELL, class: "cnnx-in-edge",
      }));
      inputSvg.setAttribute("aria-label", summary.textContent);
    }

    for (const input of inputs) {
      input.addEventListener("input", render);
      input.addEventListener("change", render);
    }
    picker.state.row = picker.state.col = 1; // output pixel (1, 1) at first
    render();
  }

  // --- Receptive field of a stack of convolutions (chapter 05) --------------------------------

  const RF_LIMITS = { k: [1, 11], s: [1, 4], d: [1, 4], p: [0, 8] };
  const RF_NAMES = { k: "kernel size", s: "stride", d: "dilation", p: "padding" };
  const MAX_LAYERS = 8;

  function rfExplorer(root) {
    const patternId = `cnnx-hatch-${++uid}`;
    const n = intField("Input size n", 32, 1, 64);
    const body = el("tbody");
    const head = el("thead", {}, el("tr", {},
      el("th", { scope: "col" }, el("abbr", { title: "layer" }, "#")),
      ...["k", "s", "d", "p"].map((key) =>
        el("th", { scope: "col" }, el("abbr", { title: RF_NAMES[key] }, key))),
      el("th", { scope: "col" }, el("abbr", { title: "receptive field size" }, "r")),
      el("th", { scope: "col" }, el("abbr", { title: "jump" }, "j")),
      el("th", { scope: "col" }, "start"),
      el("th", { scope: "col" }, "out"),
      el("th", { scope: "col" }, el("span", { class: "cnnx-visually-hidden" }, "remove"))));
    const noteId = `cnnx-${++uid}`;
    const note = el("p", { class: "cnnx-note", id: noteId },
      "Layers, input first: kernel size k, stride s, dilation d, padding p (each side); " +
      "receptive field size r, jump j, start of unit 0, output size.");
    const table = el("table", { class: "cnnx-table", "aria-describedby": noteId },
      el("caption", { class: "cnnx-visually-hidden" }, "Layers"), head, body);
    const add = el("button", { type: "button", class: "cnnx-button" }, "Add layer");
    const message = el("p", { class: "cnnx-message", role: "status", hidden: "" });
    const inputSvg = svgEl("svg", { class: "cnnx-svg", role: "img" });
    hatch(inputSvg, patternId);
    const layer = svgEl("g");
    inputSvg.append(layer);
    const picker = makePicker("Units of the last layer", () => render());
    const summary = el("p", { class: "cnnx-summary", "aria-live": "polite" });

    root.replaceChildren(
      el("div", { class: "cnnx-controls", role: "group", "aria-label": "Input" }, n.wrap),
      note,
      el("div", { class: "cnnx-table-wrap" }, table),
      el("div", { class: "cnnx-controls" }, add),
      message,
      el("div", { class: "cnnx-figures" },
        el("figure", {}, inputSvg, el("figcaption", {},
          "Input: the receptive field of the chosen unit (hatched: outside the image)")),
        el("figure", {}, picker.el, el("figcaption", {},
          "Last layer: click a unit, or focus the grid and use the arrow keys"))),
      el("ul", { class: "cnnx-legend" },
        legendItem("cnnx-in-bg", "input pixel"),
        legendItem("cnnx-pad-swatch", "outside the image (padding)"),
        legendItem("cnnx-rf-box", "receptive field of the chosen unit")),
      summary,
    );
    root.querySelector(".cnnx-pad-swatch").setAttribute("fill", `url(#${patternId})`);

    function addRow(values) {
      const row = el("tr", { class: "cnnx-layer" });
      const fields = {};
      row.append(el("th", { scope: "row", class: "cnnx-index" }));
      for (const key of ["k", "s", "d", "p"]) {
        const [min, max] = RF_LIMITS[key];
        const input = intInput(values[key], min, max, { "data-param": key });
        input.addEventListener("input", render);
        input.addEventListener("change", render);
        fields[key] = input;
        row.append(el("td", {}, input));
      }
      for (const key of ["r", "j", "start", "out"]) row.append(el("td", { "data-quantity": key }));
      const remove = el("button", { type: "button", class: "cnnx-button cnnx-remove" }, "\u00D7");
      remove.addEventListener("click", () => {
        if (body.rows.length <= 1) return;
        const next = row.nextElementSibling || row.previousElementSibling;
        row.remove();
        render();
        next.querySelector("button").focus(); // keep the keyboard where it was
      });
      row.append(el("td", {}, remove));
      row.fields = fields;
      body.append(row);
    }

    add.addEventListener("click", () => {
      if (body.rows.length >= MAX_LAYERS) return;
      const last = body.rows[body.rows.length - 1];
      addRow(last ? { k: last.fields.k.value, s: 1, d: 1, p: 0 } : { k: 3, s: 1, d: 1, p: 0 });
      render();
    });
    n.input.addEventListener("input", render);
    n.input.addEventListener("change", render);

    function render() {
      const rows = Array.from(body.rows);
      // Labels and buttons follow the row order (rows are removed from the middle too).
      rows.forEach((row, i) => {
        row.cells[0].textContent = i + 1;
        for (const [key, input] of Object.entries(row.fields)) {
          input.setAttribute("aria-label", `Layer ${i + 1} ${RF_NAMES[key]} ${key}`);
        }
        const remove = row.querySelector(".cnnx-remove");
        remove.setAttribute("aria-label", `Remove layer ${i + 1}`);
        remove.disabled = rows.length <= 1;
      });
      add.disabled = rows.length >= MAX_LAYERS;
      const size = n.input.read();
      const layers = rows.map((row) => Object.fromEntries(
        Object.entries(row.fields).map(([key, input]) => [key, input.read()])));
      const bad = [];
      if (size === null) bad.push(`Input size n must be a whole number from ${n.input.rangeText}.`);
      layers.forEach((l, i) => {
        for (const [key, v] of Object.entries(l)) {
          if (v === null) {
            bad.push(`Layer ${i + 1}: ${RF_NAMES[key]} must be a whole number from ` +
              `${rows[i].fields[key].rangeText}.`);
          }
        }
      });
      if (bad.length) {
        message.textContent = bad.join(" ");
        message.hidden = false;
        return; // keep the last valid drawing
      }
      const records = receptiveField(size, layers);
      records.forEach((rec, i) => {
        const cells = rows[i].querySelectorAll("[data-quantity]");
        cells[0].textContent = rec.r;
        cells[1].textContent = rec.j;
        cells[2].textContent = num(rec.start);
        cells[3].textContent = rec.out === null ? "none" : rec.out;
      });
      const failed = records.findIndex((rec) => rec.out === null);
      if (failed >= 0) {
        message.textContent =
          `Layer ${failed + 1} does not fit: its kernel spans ${records[failed].extent} pixels, ` +
          `more than its padded input. cnnlib.receptive_field raises a ValueError for this ` +
          "input size; r, j and start do not depend on it and are still shown. Use a larger " +
          "input, more padding, or smaller kernels and strides.";
        message.hidden = false;
      } else {
        message.hidden = true;
      }
      const last = records[records.length - 1];
      const units = last.out || 0;
      if (picker.state.size !== units) {
        const centre = Math.floor(units / 2);
        picker.resize(units, centre, centre);
      }
      draw(size, last, records.length);
    }

    function draw(size, last, count) {
      const CELL = 10;
      const { row, col } = picker.state;
      // Show the image and everything the last layer's units reach into.
      let lo = 0, hi = size;
      if (last.out !== null) {
        lo = Math.min(0, last.start);
        hi = Math.max(size, last.start + (last.out - 1) * last.j + last.r);
      }
      const total = hi - lo;
      const at = (i) => (i - lo) * CELL;
      layer.replaceChildren();
      inputSvg.setAttribute("viewBox", `-1 -1 ${total * CELL + 2} ${total * CELL + 2}`);
      inputSvg.style.width = displayWidth(total, 360) + "px";
      layer.append(svgEl("rect", {
        x: 0, y: 0, width: total * CELL, height: total * CELL, fill: `url(#${patternId})`,
      }));
      layer.append(svgEl("rect", {
        x: at(0), y: at(0), width: size * CELL, height: size * CELL, class: "cnnx-in-bg",
      }));
      layer.append(gridPath(0, 0, total, total, CELL, "cnnx-grid"));
      layer.append(svgEl("rect", {
        x: at(0), y: at(0), width: size * CELL, height: size * CELL, class: "cnnx-in-edge",
      }));
      const layerText = `Layer ${count} (the last): each unit sees r = ${last.r} by ${last.r} ` +
        `input pixels, neighbouring units are j = ${last.j} pixels apart, and unit (0, 0) ` +
        `starts at input pixel (${num(last.start)}, ${num(last.start)})` +
        (last.start < 0 ? ", in the padding." : ".");
      if (last.out !== null) {
        const top = last.start + row * last.j; // as cnnlib.receptive_field.receptive_box
        const left = last.start + col * last.j;
        layer.append(svgEl("rect", {
          x: at(left), y: at(top), width: last.r * CELL, height: last.r * CELL,
          class: "cnnx-rf-box", "data-top": top, "data-bottom": top + last.r,
          "data-left": left, "data-right": left + last.r,
        }));
        const outside = top < 0 || left < 0 || top + last.r > size || left + last.r > size;
        summary.textContent = `${layerText} The chosen unit (${row}, ${col}) of its ` +
          `${last.out} by ${last.out} output sees input rows ${num(top)} to ` +
          `${num(top + last.r - 1)} and columns ${num(left)} to ${num(left + last.r - 1)}` +
          (outside ? ", partly outside the image." : ".");
      } else {
        summary.textContent = `${layerText} With input size ${size} the stack has no output, ` +
          "so there is no unit to show.";
      }
      inputSvg.setAttribute("aria-label", summary.textContent);
    }

    // The example of chapter 05: conv 3 (SAME), conv 3 (SAME), max pooling 2, conv 3 stride 2.
    for (const values of [
      { k: 3, s: 1, d: 1, p: 1 }, { k: 3, s: 1, d: 1, p: 1 },
      { k: 2, s: 2, d: 1, p: 0 }, { k: 3, s: 2, d: 1, p: 0 },
    ]) addRow(values);
    render();
  }

  const EXPLORERS = { conv: convExplorer, rf: rfExplorer };

  function init() {
    for (const root of document.querySelectorAll(".cnn-explorer[data-explorer]")) {
      const make = EXPLORERS[root.dataset.explorer];
      if (make && !root.dataset.ready) {
        make(root);
        root.dataset.ready = "true";
      }
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
