// Kartoteka's web app: the little the server-rendered pages need a script for.
// Numbers and dates written as the page's language writes them (Intl), link pickers with
// search, forms sent as JSON to the API (its 422 shown next to each field, a 412 shown as
// "changed by someone else"), comments, stage moves, the board's drag and drop and the
// lists' saved views.
// Every change goes to /api with the kt_csrf cookie's value in X-CSRF-Token.
"use strict";

const LANG = document.documentElement.lang || "en";

function cookie(name) {
  const found = document.cookie.split("; ").find((part) => part.startsWith(name + "="));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : null;
}

async function api(method, url, body, headers) {
  const sent = { "Accept": "application/json", "Accept-Language": LANG, ...(headers || {}) };
  const csrf = cookie("kt_csrf");
  if (csrf) sent["X-CSRF-Token"] = csrf;
  const init = { method, headers: sent, credentials: "same-origin" };
  if (body !== undefined) {
    sent["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  return { status: response.status, ok: response.ok, data, etag: response.headers.get("ETag") };
}

function errorOf(result) {
  const error = (result.data && result.data.error) || {};
  return { message: error.message || ("HTTP " + result.status), details: error.details || [] };
}

// -- numbers and dates in the page's language ----------------------------------------------
function localize(root) {
  root.querySelectorAll("data.num").forEach((el) => {
    const places = Number(el.dataset.places || 0);
    const value = Number(el.getAttribute("value"));
    if (el.getAttribute("value") === "" || Number.isNaN(value)) return;
    el.textContent = new Intl.NumberFormat(LANG, {
      minimumFractionDigits: places, maximumFractionDigits: places }).format(value);
  });
  root.querySelectorAll("data.pct").forEach((el) => {
    el.textContent = new Intl.NumberFormat(LANG, { style: "percent", maximumFractionDigits: 1 })
      .format(Number(el.getAttribute("value")));
  });
  root.querySelectorAll("data.duration").forEach((el) => { el.textContent = duration(Number(el.getAttribute("value"))); });
  root.querySelectorAll("time.date").forEach((el) => {
    const [y, m, d] = el.getAttribute("datetime").split("-").map(Number);
    if (!y) return;
    el.textContent = new Intl.DateTimeFormat(LANG, { dateStyle: "medium", timeZone: "UTC" })
      .format(new Date(Date.UTC(y, m - 1, d)));
  });
  root.querySelectorAll("time.datetime").forEach((el) => {
    const at = new Date(el.getAttribute("datetime"));
    if (Number.isNaN(at.getTime())) return;
    el.textContent = new Intl.DateTimeFormat(LANG, { dateStyle: "medium", timeStyle: "short" }).format(at);
  });
}

function duration(seconds) {
  const units = [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];
  for (const [unit, size] of units) {
    if (seconds >= size || unit === "second") {
      return new Intl.NumberFormat(LANG, { style: "unit", unit, unitDisplay: "short",
        maximumFractionDigits: 1 }).format(seconds / size);
    }
  }
  return String(seconds);
}

// -- link pickers: search the linked entity by its title -----------------------------------
function setupPicker(picker, onPick) {
  const text = picker.querySelector(".picker-text");
  const value = picker.querySelector(".picker-value");
  const list = picker.querySelector(".picker-list");
  let timer = null;
  let asked = 0;
  async function search() {
    const ask = ++asked;
    const url = "/app/" + picker.dataset.target + "/lookup?q=" + encodeURIComponent(text.value);
    const response = await fetch(url, { credentials: "same-origin" });
    if (ask !== asked || !response.ok) return;
    const { items } = await response.json();
    list.replaceChildren(...items.map((item) => {
      const li = document.createElement("li");
      li.setAttribute("role", "option");
      li.textContent = item.title;
      li.dataset.id = item.id;
      li.addEventListener("mousedown", (event) => { event.preventDefault(); pick(item); });
      li.item = item;
      return li;
    }));
    list.hidden = items.length === 0;
  }
  function pick(item) {
    list.hidden = true;
    if (onPick) { onPick(item); text.value = ""; return; }
    value.value = item.id;
    text.value = item.title;
  }
  // the keyboard: arrows go through the matches, Enter picks one, Escape closes the list
  text.addEventListener("keydown", (event) => {
    const options = [...list.children];
    const at = options.findIndex((li) => li.getAttribute("aria-selected") === "true");
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      if (!options.length) return;
      event.preventDefault();
      list.hidden = false;
      const next = (at + (event.key === "ArrowDown" ? 1 : options.length - 1)) % options.length;
      options.forEach((li, i) => li.setAttribute("aria-selected", String(i === next)));
    } else if (event.key === "Enter" && !list.hidden && at >= 0) {
      event.preventDefault();
      pick(options[at].item);
    } else if (event.key === "Escape") {
      list.hidden = true;
    }
  });
  text.addEventListener("input", () => {
    if (!onPick && text.value === "") value.value = "";
    clearTimeout(timer);
    timer = setTimeout(search, 150);
  });
  text.addEventListener("focus", () => { clearTimeout(timer); timer = setTimeout(search, 0); });
  text.addEventListener("blur", () => { setTimeout(() => { list.hidden = true; }, 100); });
}

function setupMulti(multi) {
  const chips = multi.querySelector(".chips");
  chips.addEventListener("click", (event) => {
    if (event.target.classList.contains("unchip")) event.target.closest("li").remove();
  });
  const picker = multi.querySelector(".picker");
  if (!picker) return;
  setupPicker(picker, (item) => {
    if (chips.querySelector('[data-id="' + item.id + '"]')) return;
    const li = document.createElement("li");
    li.dataset.id = item.id;
    li.textContent = item.title + " ";
    const remove = document.createElement("button");
    remove.type = "button"; remove.className = "unchip"; remove.textContent = "×";
    li.append(remove);
    chips.append(li);
  });
}

// -- record forms -------------------------------------------------------------------------
function readInput(box) {
  const kind = box.dataset.kind;
  const q = (selector) => box.querySelector(selector);
  switch (kind) {
    case "checkbox": return q("input").checked;
    case "checks": return [...box.querySelectorAll("input:checked")].map((el) => el.value);
    case "users": return [...box.querySelectorAll("input:checked")].map((el) => Number(el.value));
    case "user": return q("select").value === "" ? null : Number(q("select").value);
    case "select": return q("select").value === "" ? null : q("select").value;
    case "number": {
      const text = q("input").value.trim();
      return text === "" ? null : (/^-?\d+$/.test(text) ? Number(text) : text);
    }
    case "decimal": return decimalText(q("input").value);
    case "datetime": {
      const text = q("input").value;
      return text === "" ? null : new Date(text).toISOString();
    }
    case "ids": {
      const text = q("input").value.trim();
      return text === "" ? [] : text.split(/[\s,]+/).map((part) => (/^\d+$/.test(part) ? Number(part) : part));
    }
    case "link": {
      const text = q(".picker-value").value;
      return text === "" ? null : Number(text);
    }
    case "links": return [...box.querySelectorAll(".chips li")].map((li) => Number(li.dataset.id));
    case "poly": {
      const id = q(".picker-value").value;
      return id === "" ? null : { entity: q(".poly-entity").value, id: Number(id) };
    }
    case "json": {
      const text = q("textarea").value.trim();
      if (text === "") return null;
      try { return JSON.parse(text); } catch (e) { return text; }
    }
    case "textarea": {
      const text = q("textarea").value;
      return text === "" ? null : text;
    }
    default: {
      const text = q("input").value;
      return text === "" ? null : text;
    }
  }
}

// "1 500,5" as people write it → "1500.5" as the API reads it (a point or a comma before the
// decimals, spaces between thousands); anything else goes as typed, for the API to refuse
function decimalText(typed) {
  let text = typed.trim().replace(/[\s\u00a0\u202f]/g, "");
  if (text === "") return null;
  if (/^-?\d+,\d+$/.test(text)) text = text.replace(",", ".");
  return text;
}

function padPlaces(input, places) {
  const text = decimalText(input.value);
  if (text === null || !/^-?\d+(\.\d+)?$/.test(text)) return;
  const [whole, decimals = ""] = text.split(".");
  if (decimals.length <= places) input.value = places ? whole + "." + decimals.padEnd(places, "0") : whole;
}

function readForm(form) {
  const values = {};
  form.querySelectorAll(".input").forEach((box) => {
    if (box.hasAttribute("data-readonly")) return;
    values[box.dataset.name] = readInput(box);
  });
  return values;
}

function showRefusal(box, result, labels) {
  const { message, details } = errorOf(result);
  box.replaceChildren();
  const strong = document.createElement("strong");
  strong.textContent = message;
  box.append(strong);
  if (details.length) {
    const ul = document.createElement("ul");
    for (const detail of details) {
      const li = document.createElement("li");
      li.textContent = ((labels && labels[detail.field]) || detail.field) + ": " + detail.problem;
      ul.append(li);
    }
    box.append(ul);
  }
  box.hidden = false;
}

function setupForm(form) {
  const entity = form.dataset.entity;
  const id = form.dataset.id;
  form.querySelectorAll('.input[data-kind="datetime"] input').forEach((input) => {
    const iso = input.dataset.iso;
    if (!iso) return;
    const at = new Date(iso);
    const local = new Date(at.getTime() - at.getTimezoneOffset() * 60000);
    input.value = local.toISOString().slice(0, 19);
  });
  form.querySelectorAll('.input[data-kind="decimal"][data-places]').forEach((box) => {
    const input = box.querySelector("input");
    input.addEventListener("blur", () => padPlaces(input, Number(box.dataset.places)));
  });
  form.querySelectorAll(".multi").forEach(setupMulti);
  form.querySelectorAll(".poly").forEach((poly) => {
    const picker = poly.querySelector(".picker");
    poly.querySelector(".poly-entity").addEventListener("change", (event) => {
      picker.dataset.target = event.target.value;
      picker.querySelector(".picker-value").value = "";
      picker.querySelector(".picker-text").value = "";
    });
  });
  const labels = {};
  form.querySelectorAll(".input").forEach((box) => {
    labels[box.dataset.name] = box.querySelector("label").firstChild.textContent.trim();
  });
  const initial = JSON.stringify(readForm(form));
  const before = JSON.parse(initial);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    form.querySelectorAll(".error").forEach((el) => { el.hidden = true; el.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
    const refusal = form.querySelector(".refusal");
    refusal.hidden = true;
    const values = readForm(form);
    let result;
    if (id) {
      const changes = {};
      for (const [name, value] of Object.entries(values)) {
        if (JSON.stringify(value) !== JSON.stringify(before[name])) changes[name] = value;
      }
      result = await api("PATCH", "/api/" + entity + "/" + id, changes,
        { "If-Match": '"' + form.dataset.version + '"' });
    } else {
      for (const name of Object.keys(values)) {
        const value = values[name];
        if (value === null || (Array.isArray(value) && value.length === 0)) delete values[name];
      }
      result = await api("POST", "/api/" + entity, values);
    }
    if (result.ok) {
      window.location.href = "/app/" + entity + "/" + result.data.id;
      return;
    }
    if (result.status === 412 && id) {
      showStale(form, entity, id, labels);
      return;
    }
    const { details } = errorOf(result);
    const unplaced = [];
    for (const detail of details) {
      const name = String(detail.field).split(/[.[]/)[0];
      const slot = form.querySelector('.error[data-error-for="' + CSS.escape(name) + '"]');
      if (slot) {
        slot.textContent = (slot.textContent ? slot.textContent + "; " : "") + detail.problem;
        slot.hidden = false;
        const control = slot.parentElement.querySelector("input, select, textarea");
        if (control) control.setAttribute("aria-invalid", "true");
      } else {
        unplaced.push(detail);
      }
    }
    if (unplaced.length || !details.length) {
      showRefusal(refusal, { ...result, data: { error: { ...errorOf(result), details: unplaced } } }, labels);
    }
  });
}

async function showStale(form, entity, id, labels) {
  const box = form.querySelector(".stale");
  const current = await api("GET", "/api/" + entity + "/" + id);
  const dl = box.querySelector("dl");
  dl.replaceChildren();
  if (current.ok) {
    for (const name of Object.keys(labels)) {
      if (!(name in current.data)) continue;
      const dt = document.createElement("dt");
      dt.textContent = labels[name];
      const dd = document.createElement("dd");
      const value = current.data[name];
      dd.textContent = value === null ? "—" : (typeof value === "object" ? JSON.stringify(value) : String(value));
      dl.append(dt, dd);
    }
  }
  box.querySelector("a").href = window.location.pathname;
  box.hidden = false;
}

// -- card: comment, stage move, delete ---------------------------------------------------
function setupComment(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = form.querySelector("textarea").value;
    const result = await api("POST", form.dataset.post, { text });
    if (result.ok) { window.location.reload(); return; }
    const slot = form.querySelector(".error");
    slot.textContent = errorOf(result).details.map((d) => d.problem).join("; ") || errorOf(result).message;
    slot.hidden = false;
  });
}

function setupActivity(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {};
    form.querySelectorAll("[name]").forEach((el) => { if (el.value !== "") body[el.name] = el.value; });
    const result = await api("POST", form.dataset.post, body);
    if (result.ok) { window.location.reload(); return; }
    const slot = form.querySelector(".error");
    const { message, details } = errorOf(result);
    slot.textContent = details.map((d) => d.field + ": " + d.problem).join("; ") || message;
    slot.hidden = false;
  });
}

async function moveStage(url, version, to, refusal, labels) {
  const result = await api("POST", url, { to }, version ? { "If-Match": '"' + version + '"' } : {});
  if (!result.ok) {
    showRefusal(refusal, result, labels);
    // fields the stage needs: a link to the edit form, those fields marked as required
    if (result.data && result.data.error && result.data.error.code === "stage_requirements") {
      const link = document.createElement("a");
      link.href = url.replace(/^\/api\//, "/app/").replace(/\/stage$/, "/edit") + "?stage=" + encodeURIComponent(to);
      link.textContent = refusal.dataset.fill;
      link.className = "button";
      refusal.append(link);
    }
  }
  return result;
}

function setupStages(section) {
  const refusal = document.getElementById("card-refusal");
  section.querySelectorAll("button[data-to]").forEach((button) => {
    button.addEventListener("click", async () => {
      const result = await moveStage(section.dataset.move, section.dataset.version, button.dataset.to,
        refusal, JSON.parse(section.dataset.labels || "{}"));
      if (result.ok) window.location.reload();
    });
  });
}

function setupDelete(button) {
  button.addEventListener("click", async () => {
    if (!window.confirm(button.dataset.confirm)) return;
    const result = await api("DELETE", button.dataset.delete, undefined,
      { "If-Match": '"' + button.dataset.version + '"' });
    if (result.ok) { window.location.href = button.dataset.then; return; }
    showRefusal(document.getElementById("card-refusal"), result);
  });
}

// -- board: drag a card to another column; more cards per column ---------------------------
function setupBoard(board) {
  const refusal = document.getElementById("board-refusal");
  const entity = board.dataset.entity;
  let dragged = null;
  if (!board.dataset.movable) {  // the role may not change these records: nothing to drag
    board.querySelectorAll(".kcard").forEach((card) => { card.draggable = false; });
  }
  board.addEventListener("dragstart", (event) => {
    if (!board.dataset.movable) return;
    const card = event.target.closest && event.target.closest(".kcard");
    if (!card) return;
    dragged = card;
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", card.dataset.id);
  });
  board.querySelectorAll(".column").forEach((column) => {
    column.addEventListener("dragover", (event) => {
      if (!dragged) return;
      event.preventDefault();
      column.classList.add("over");
    });
    column.addEventListener("dragleave", () => column.classList.remove("over"));
    column.addEventListener("drop", async (event) => {
      event.preventDefault();
      column.classList.remove("over");
      const card = dragged;
      dragged = null;
      if (!card || card.closest(".column") === column) return;
      refusal.hidden = true;
      const result = await moveStage("/api/" + entity + "/" + card.dataset.id + "/stage",
        card.dataset.version, column.dataset.stage, refusal, JSON.parse(board.dataset.labels || "{}"));
      if (result.ok) window.location.reload();
    });
    const more = column.querySelector("button.more");
    if (more) {
      more.addEventListener("click", async () => {
        const url = board.dataset.more + "&stage%5Beq%5D=" + encodeURIComponent(column.dataset.stage)
          + "&cursor=" + encodeURIComponent(more.dataset.cursor);
        const response = await fetch(url, { credentials: "same-origin" });
        if (!response.ok) return;
        const holder = document.createElement("div");
        holder.innerHTML = await response.text();
        const list = holder.querySelector("ol.cards");
        localize(list);
        column.querySelector("ol.cards").append(...list.children);
        if (list.dataset.next) more.dataset.cursor = list.dataset.next; else more.remove();
      });
    }
  });
}

// -- filters: empty inputs are not sent --------------------------------------------------------
function setupFilters(form) {
  form.addEventListener("submit", () => {
    form.querySelectorAll("input, select").forEach((el) => {
      if (el.name && el.value === "") el.disabled = true;
    });
  });
}

// -- saved views: save the list's query under a name, change or delete the open one -------
// The server says what the view keeps (data-query: the list's query without its page
// position); the answer's own query is the page opened next.
function viewBody(form) {
  return { name: form.querySelector('input[name="name"]').value,
    is_default: form.querySelector('input[name="is_default"]').checked,
    query: form.dataset.query };
}

function openView(entity, view) {
  window.location.assign("/app/" + entity + "?" + (view.query ? view.query + "&" : "") + "view=" + view.id);
}

function viewRefused(form, result) {
  const slot = form.querySelector(".error");
  const { message, details } = errorOf(result);
  slot.textContent = details.length ? details.map((d) => d.field + ": " + d.problem).join("; ") : message;
  slot.hidden = false;
}

function setupViewForms(form) {
  const entity = form.dataset.entity;
  const id = form.dataset.id;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = viewBody(form);
    if (!id) body.entity = entity;
    const result = id ? await api("PATCH", "/api/views/" + id, body) : await api("POST", "/api/views", body);
    if (result.ok) openView(entity, result.data); else viewRefused(form, result);
  });
  const remove = form.querySelector("button.view-delete");
  if (remove) {
    remove.addEventListener("click", async () => {
      if (!window.confirm(remove.dataset.confirm)) return;
      const result = await api("DELETE", "/api/views/" + id);
      if (result.ok) window.location.assign("/app/" + entity + "?view=all"); else viewRefused(form, result);
    });
  }
}

// Signing out: a POST with the CSRF token (a plain form post is refused: the API takes JSON
// only), then the page the server names (the sign-in page).
function setupSignOut(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = await api("POST", form.action);
    window.location.assign((result.data && result.data.next) || "/app/sign-in");
  });
}

// -- a card's links that carry data: one pair saved (PUT) or removed (DELETE) at a time ----
function readPair(row) {
  const values = {};
  row.querySelectorAll(".input").forEach((box) => {
    if (box.hasAttribute("data-readonly")) return;
    values[box.dataset.name] = readInput(box);
  });
  return values;
}

function setupPairs(section) {
  const refusal = section.querySelector(".refusal");
  const labels = {};
  section.querySelectorAll("thead th").forEach((th, i) => {
    const box = section.querySelector("tr.pair .input:nth-child(" + (i + 1) + ")");
    if (box) labels[box.dataset.name] = th.firstChild.textContent.trim();
  });
  section.querySelectorAll('.input[data-kind="decimal"][data-places]').forEach((box) => {
    const input = box.querySelector("input");
    input.addEventListener("blur", () => padPlaces(input, Number(box.dataset.places)));
  });
  section.querySelectorAll(".pair-new .picker").forEach((p) => setupPicker(p));
  function clear(row) {
    refusal.hidden = true;
    row.querySelectorAll(".error").forEach((el) => { el.hidden = true; el.textContent = ""; });
    row.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
  }
  // the API's 422 next to the field it names (`price`); anything else above the table
  function show(row, result) {
    const { details } = errorOf(result);
    const unplaced = [];
    for (const detail of details) {
      const name = String(detail.field).split(/[.[]/).pop();
      const slot = row.querySelector('.error[data-error-for="' + CSS.escape(name) + '"]');
      if (!slot) { unplaced.push(detail); continue; }
      slot.textContent = (slot.textContent ? slot.textContent + "; " : "") + detail.problem;
      slot.hidden = false;
      const control = slot.parentElement.querySelector("input, select");
      if (control) control.setAttribute("aria-invalid", "true");
    }
    if (unplaced.length || !details.length) {
      showRefusal(refusal, { ...result, data: { error: { ...errorOf(result), details: unplaced } } }, labels);
    }
  }
  section.addEventListener("click", async (event) => {
    const button = event.target.closest("button.pair-save, button.pair-remove");
    if (!button) return;
    const row = button.closest("tr.pair");
    clear(row);
    let other = row.dataset.other;
    let result;
    if (button.classList.contains("pair-remove")) {
      result = await api("DELETE", section.dataset.base + "/" + other);
    } else {
      const values = readPair(row);
      if (!other) {  // a new pair: the target picked by title; empty values take defaults
        other = row.querySelector(".picker-value").value;
        for (const name of Object.keys(values)) if (values[name] === null) delete values[name];
      }
      if (!other) {
        const slot = row.querySelector('.error[data-error-for="id"]');
        slot.textContent = row.querySelector(".picker-text").placeholder;
        slot.hidden = false;
        return;
      }
      result = await api("PUT", section.dataset.base + "/" + other, values);
    }
    if (result.ok) { window.location.reload(); return; }
    show(row, result);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  localize(document);
  document.querySelectorAll("form.signout").forEach(setupSignOut);
  document.querySelectorAll("form.filters").forEach(setupFilters);
  document.querySelectorAll("form.view-save, form.view-edit").forEach(setupViewForms);
  document.querySelectorAll("form.filters .picker, .k-link .picker, .poly .picker").forEach((p) => setupPicker(p));
  document.querySelectorAll("form.record-form").forEach(setupForm);
  document.querySelectorAll("form.comment").forEach(setupComment);
  document.querySelectorAll("section.pairs").forEach(setupPairs);
  document.querySelectorAll("form.activity").forEach(setupActivity);
  document.querySelectorAll("section.stages").forEach(setupStages);
  document.querySelectorAll("button[data-delete]").forEach(setupDelete);
  document.querySelectorAll(".board").forEach(setupBoard);
});
