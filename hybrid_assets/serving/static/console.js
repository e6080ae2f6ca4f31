// The agent console's one script. Every value from the server (model output, document text, the ticket)
// reaches the page through textContent or an attribute set with setAttribute: nothing is parsed as HTML.
"use strict";

const API = document.body.dataset.api;
const TOKEN_KEY = "hybrid_assets.token";
const REVIEWER_KEY = "hybrid_assets.reviewer";
const $ = (id) => document.getElementById(id);

// -- DOM helpers ------------------------------------------------------------------------------------
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
function clear(node) { node.replaceChildren(); return node; }
function pair(dl, term, value) {
  dl.append(el("dt", { text: term }), value instanceof Node ? el("dd", {}, value) : el("dd", { text: value ?? "—" }));
}
function fmt(value) { return value === null || value === undefined ? "—" : typeof value === "number" ? value.toFixed(3) : String(value); }
function documentHref(docId, tenant, chunkId) {
  const query = new URLSearchParams({ doc: docId });
  if (tenant) query.set("tenant", tenant);
  return "/document?" + query.toString() + (chunkId ? "#chunk-" + encodeURIComponent(chunkId) : "");
}

// -- the API, with the bearer token when the server wants one ------------------------------------------
class AuthRequired extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options = Object.assign({}, options, { body: JSON.stringify(options.json) });
  }
  const response = await fetch(API + path, Object.assign({}, options, { headers, credentials: "omit" }));
  if (response.status === 401) {
    askForToken(token ? "That token was refused." : "");
    throw new AuthRequired("token required");
  }
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const error = new Error(describeError(response.status, body));
    error.status = response.status;
    error.body = body;
    throw error;
  }
  return body;
}

function describeError(status, body) {
  if (body && Array.isArray(body.problems)) return body.problems.map((p) => `${p.field}: ${p.reason}`).join("; ");
  if (body && Array.isArray(body.detail)) return body.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  if (body && body.detail) return String(body.detail);
  return `request failed (${status})`;
}

function askForToken(message) {
  $("app").hidden = true;
  $("auth").hidden = false;
  $("loop-banner").hidden = true;
  $("auth-error").textContent = message;
  $("token-input").focus();
}

function setupAuth(start) {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value);
    $("token-input").value = "";
    run(start);
  });
  $("sign-out").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); location.reload(); });
}

async function run(start) {
  try {
    await start();
    $("auth").hidden = true;
    $("app").hidden = false;
    $("sign-out").hidden = !sessionStorage.getItem(TOKEN_KEY);
  } catch (error) {
    if (error instanceof AuthRequired) return;
    $("fatal").hidden = false;
    $("fatal").textContent = "Could not load: " + error.message;
  }
}

// -- the feedback-loop banner (every page) ------------------------------------------------------------
async function loadBanner() {
  const loop = await api("/loop");
  const banner = $("loop-banner");
  const adapter = loop.promoted && loop.promoted.version_id ? `adapter ${loop.promoted.version_id}` : "no adapter promoted";
  banner.textContent = `${loop.pending} reviewed example${loop.pending === 1 ? "" : "s"} not yet in the promoted adapter · ${adapter}`;
  banner.hidden = false;
  return loop;
}

// -- console page -----------------------------------------------------------------------------------
let META = null;
let CURRENT = null;  // the answer on screen

async function startConsole() {
  META = await api("/meta");
  const select = $("customer");
  select.replaceChildren(el("option", { value: "", text: "— no customer —" }));
  for (const customer of META.customers) {
    select.append(el("option", { value: customer.customer_id, text: `${customer.customer_id} · ${customer.company} (${customer.plan})` }));
  }
  $("reviewer").value = localStorage.getItem(REVIEWER_KEY) || "";
  await loadBanner();
}

function addTurn(role = "customer", content = "") {
  const row = el("div", { class: "turn" },
    el("select", { class: "turn-role", "aria-label": "Who wrote this turn" },
      el("option", { value: "customer", text: "customer" }), el("option", { value: "agent", text: "agent" })),
    el("textarea", { class: "turn-content", rows: 2, maxlength: 4000, "aria-label": "Earlier turn" }),
    el("button", { type: "button", class: "link", text: "remove", onclick: () => row.remove() }));
  row.querySelector("select").value = role;
  row.querySelector("textarea").value = content;
  $("turns").append(row);
}

function badge(label, value, tone) {
  return el("span", { class: "badge " + tone, dataset: { field: label } }, el("small", { text: label }), " ", value);
}

function toneOf(field, value) {
  if (field === "decision") return value === "answer" ? "good" : value === "clarify" ? "warn" : "bad";
  if (field === "sentiment") return value === "negative" ? "bad" : value === "positive" ? "good" : "plain";
  if (field === "escalation") return value === "none" ? "good" : "warn";
  return "plain";
}

function renderAnswer(result) {
  CURRENT = result;
  const answer = result.answer;
  const decision = clear($("decision"));
  const decided = result.decision.value.replace(/_/g, " ");
  decision.append(badge("decision", decided, toneOf("decision", result.decision.value)));
  if ("sentiment" in answer) decision.append(badge("sentiment", answer.sentiment, toneOf("sentiment", answer.sentiment)));
  if ("category" in answer) decision.append(badge("category", answer.category, "plain"));
  if (answer.escalation) {
    decision.append(badge("escalation", answer.escalation.level, toneOf("escalation", answer.escalation.level)));
    decision.append(el("p", { class: "reason", id: "escalation-reason", text: answer.escalation.reason || "(no reason given)" }));
  }
  $("reply").textContent = answer.reply ?? "";
  $("resolution").textContent = answer.resolution ?? "";

  const citations = clear($("citations"));
  if (!result.sources.length) citations.append(el("li", { class: "muted", text: "Nothing cited." }));
  for (const source of result.sources) citations.append(passageItem(source));
  const context = clear($("context"));
  $("context-count").textContent = String(result.passages.length);
  for (const passage of result.passages) context.append(passageItem(passage));

  const provenance = clear($("provenance"));
  pair(provenance, "Adapter", result.adapter_version || "base model (no adapter promoted)");
  const k = result.knowledge;
  pair(provenance, "Knowledge", k.version ? `${k.version} · ingested ${k.ingested_at} · ${k.collection}` : `not recorded · ${k.collection}`);
  pair(provenance, "Timing", `retrieval ${result.timing_ms.retrieval} ms · generation ${result.timing_ms.generation} ms · ${result.generated_tokens} tokens`);
  if (result.guards.length) pair(provenance, "Guards", result.guards.join(", "));
  if (result.dropped_citations.length) pair(provenance, "Dropped citations", result.dropped_citations.join(", "));

  $("result").hidden = false;
  $("passage").hidden = true;
  $("result-title").textContent = "Answer";
  resetReview();
}

function passageItem(passage) {
  const where = passage.tenant ? `account ${passage.tenant}` : passage.doc_id;
  return el("li", {},
    el("button", { type: "button", class: "cite", dataset: { cite: passage.id }, onclick: () => openPassage(passage) },
      el("strong", { text: passage.id }), " ", where, passage.section ? ` › ${passage.section}` : "",
      passage.cited ? "" : el("small", { class: "muted", text: " (not cited)" })));
}

// After a correction: the answer as saved, with its citations resolved to the passages the model saw.
function showReviewed(answer, decision) {
  const cited = new Set(answer[META.citations_field] || []);
  const passages = CURRENT.passages.map((p) => Object.assign({}, p, { cited: cited.has(p.id) }));
  const keep = { answer_id: CURRENT.answer_id, reviewed: true };
  renderAnswer(Object.assign({}, CURRENT, keep, { answer, decision, passages, sources: passages.filter((p) => p.cited) }));
  $("result-title").textContent = "Answer (as reviewed)";
  for (const id of ["approve", "correct", "should-not", "save-correction"]) $(id).disabled = true;
}

function openPassage(passage) {
  $("passage-id").textContent = passage.id;
  $("passage-doc").textContent = passage.title ? `${passage.doc_id} — ${passage.title}` : passage.doc_id;
  $("passage-section").textContent = passage.section || "—";
  $("passage-tenant").textContent = passage.tenant || "shared knowledge (no tenant)";
  $("passage-text").textContent = passage.text;
  $("passage-link").setAttribute("href", documentHref(passage.doc_id, passage.tenant, passage.chunk_id));
  $("passage").hidden = false;
  $("passage").scrollIntoView({ block: "nearest" });
}

async function submitTicket(event) {
  event.preventDefault();
  const ticket = $("ticket").value;
  const history = [...document.querySelectorAll("#turns .turn")]
    .map((row) => ({ role: row.querySelector("select").value, content: row.querySelector("textarea").value }))
    .filter((turn) => turn.content.trim());
  const body = { ticket, history };
  if ($("customer").value) body.customer_id = $("customer").value;
  $("ask-error").textContent = "";
  $("ask-status").textContent = "Answering… (seconds on a CPU)";
  $("answer-button").disabled = true;
  try {
    renderAnswer(await api("/answer", { method: "POST", json: body }));
    $("ask-status").textContent = "";
  } catch (error) {
    $("ask-status").textContent = "";
    if (!(error instanceof AuthRequired)) $("ask-error").textContent = error.message;
  } finally {
    $("answer-button").disabled = false;
  }
}

// -- review -----------------------------------------------------------------------------------------
function resetReview() {
  $("review").hidden = false;
  $("correction").hidden = true;
  clear($("review-errors"));
  $("review-done").textContent = "";
  for (const id of ["approve", "correct", "should-not", "save-correction"]) $(id).disabled = false;
}

function resolveRef(node) {
  if (node && node.$ref) return META.schema.$defs[node.$ref.split("/").pop()];
  if (node && Array.isArray(node.allOf) && node.allOf.length === 1) return resolveRef(node.allOf[0]);
  return node;
}

// One form control per schema property, in the schema's field order: enums -> selects, booleans -> a
// true/false select, objects -> a fieldset, the citations -> one checkbox per passage the model saw,
// strings -> text areas. Nothing here names a label or a decision field.
function buildField(name, rawProp, path, value) {
  const prop = resolveRef(rawProp);
  const label = prop.title || name;
  const wrap = el("div", { class: "field", dataset: { path } });
  const error = el("div", { class: "field-error", dataset: { errorFor: path } });
  if (prop.type === "object" && prop.properties) {
    const set = el("fieldset", { dataset: { path } }, el("legend", { text: label }));
    for (const [key, child] of Object.entries(prop.properties)) set.append(buildField(key, child, `${path}.${key}`, (value || {})[key]));
    set.append(error);
    return set;
  }
  let control;
  if (Array.isArray(prop.enum)) {
    control = el("select", { name: path, dataset: { kind: "enum" } }, prop.enum.map((v) => el("option", { value: v, text: v })));
    control.value = value ?? prop.enum[0];
  } else if (prop.type === "boolean") {
    control = el("select", { name: path, dataset: { kind: "boolean" } }, el("option", { value: "true", text: "true" }), el("option", { value: "false", text: "false" }));
    control.value = String(Boolean(value));
  } else if (prop.type === "array" && name === META.citations_field) {
    control = el("div", { class: "checks", dataset: { kind: "citations", name: path } });
    for (const passage of CURRENT.passages) {
      const box = el("input", { type: "checkbox", value: passage.id });
      box.checked = (value || []).includes(passage.id);
      control.append(el("label", { class: "check" }, box, ` ${passage.id} · ${passage.tenant ? "account " + passage.tenant : passage.doc_id}`));
    }
    if (!CURRENT.passages.length) control.append(el("span", { class: "muted", text: "no passages to cite" }));
  } else if (prop.type === "array") {
    control = el("textarea", { name: path, rows: 2, dataset: { kind: "lines" } });
    control.value = (value || []).join("\n");
  } else if (prop.type === "integer" || prop.type === "number") {
    control = el("input", { type: "number", name: path, dataset: { kind: prop.type } });
    control.value = value ?? "";
  } else {
    const long = (prop.maxLength || 0) > 120;
    control = el(long ? "textarea" : "input", { name: path, maxlength: prop.maxLength, rows: long ? 4 : undefined, dataset: { kind: "string" } });
    control.value = value ?? "";
  }
  wrap.append(el("label", { text: label }), control, error);
  return wrap;
}

function buildCorrection() {
  const box = clear($("correction-fields"));
  const props = META.schema.properties;
  const order = META.field_order.concat(Object.keys(props).filter((k) => !META.field_order.includes(k)));
  for (const name of order) box.append(buildField(name, props[name], name, CURRENT.answer[name]));
}

function readControl(node) {
  const kind = node.dataset.kind;
  if (kind === "citations") return [...node.querySelectorAll("input:checked")].map((box) => box.value);
  if (kind === "boolean") return node.value === "true";
  if (kind === "lines") return node.value.split("\n").map((s) => s.trim()).filter(Boolean);
  if (kind === "integer" || kind === "number") return node.value === "" ? null : Number(node.value);
  return node.value;
}

function readCorrection() {
  const answer = {};
  for (const node of $("correction-fields").querySelectorAll("[data-kind]")) {
    const path = (node.getAttribute("name") || node.dataset.name).split(".");
    let target = answer;
    for (const part of path.slice(0, -1)) target = target[part] = target[part] || {};
    target[path[path.length - 1]] = readControl(node);
  }
  return answer;
}

function showProblems(error) {
  const list = clear($("review-errors"));
  for (const node of document.querySelectorAll(".field-error")) node.textContent = "";
  const problems = (error.body && error.body.problems) || [{ field: "review", reason: error.message }];
  for (const problem of problems) {
    list.append(el("li", { dataset: { field: problem.field } }, el("strong", { text: problem.field }), ": ", problem.reason));
    const slot = document.querySelector(`.field-error[data-error-for="${CSS.escape(problem.field)}"]`);
    if (slot) slot.textContent = problem.reason;
  }
}

async function sendReview(action, answer) {
  const reviewer = $("reviewer").value.trim();
  localStorage.setItem(REVIEWER_KEY, reviewer);
  clear($("review-errors"));
  const body = { answer_id: CURRENT.answer_id, action, reviewer, note: $("note").value };
  if (answer) body.answer = answer;
  try {
    const saved = await api("/reviews", { method: "POST", json: body });
    for (const id of ["approve", "correct", "should-not", "save-correction"]) $(id).disabled = true;
    $("correction").hidden = true;
    const changed = saved.changed_fields.length ? ` · changed: ${saved.changed_fields.join(", ")}` : "";
    const earlier = saved.earlier_review_lines.length ? ` · this ticket was reviewed before (line ${saved.earlier_review_lines.join(", ")})` : "";
    if (saved.action !== "approve") showReviewed(saved.answer, saved.decision);
    $("review-done").textContent = `Saved ${saved.action} as ${saved.record_id} (line ${saved.line} of ${saved.file})${changed}${earlier}`;
    await loadBanner();
  } catch (error) {
    if (!(error instanceof AuthRequired)) showProblems(error);
  }
}

function setupConsole() {
  $("add-turn").addEventListener("click", () => addTurn());
  $("ask-form").addEventListener("submit", submitTicket);
  $("passage-close").addEventListener("click", () => { $("passage").hidden = true; });
  $("approve").addEventListener("click", () => sendReview("approve"));
  $("should-not").addEventListener("click", () => sendReview("should_not_answer"));
  $("correct").addEventListener("click", () => { buildCorrection(); $("correction").hidden = false; });
  $("cancel-correction").addEventListener("click", () => { $("correction").hidden = true; });
  $("correction").addEventListener("submit", (event) => { event.preventDefault(); sendReview("correct", readCorrection()); });
}

// -- knowledge page ---------------------------------------------------------------------------------
async function startKnowledge() {
  const status = await api("/knowledge");
  const summary = clear($("k-summary"));
  const last = status.last_ingest;
  pair(summary, "Collection", status.collection);
  pair(summary, "Documents indexed", `${status.documents_indexed} of ${status.documents_in_folder} in the folder · ${status.objects} chunks in Weaviate`);
  pair(summary, "Last ingest", last ? `${last.finished_at} · version ${last.version} · ${last.chunks} chunks · ${last.parsed_this_run.length} parsed that run` : "not recorded");
  pair(summary, "Folder now", `${status.folder_version} · ${status.up_to_date ? "indexed as is" : "changed since the last ingest (knowledge_automation re-ingests within a minute)"}`);

  const failures = $("k-failures").tBodies[0];
  clear(failures);
  for (const failure of status.failures) failures.append(el("tr", {}, el("td", {}, el("code", { text: failure.doc_id })), el("td", { text: failure.reason })));
  $("k-failures-none").hidden = status.failures.length > 0;
  $("k-failures").hidden = status.failures.length === 0;

  const documents = $("k-documents").tBodies[0];
  clear(documents);
  for (const doc of status.documents) {
    const name = doc.chunks ? el("a", { href: documentHref(doc.doc_id), text: doc.doc_id }) : el("code", { text: doc.doc_id });
    documents.append(el("tr", { class: doc.state.startsWith("indexed") ? "" : "attention" },
      el("td", {}, name), el("td", { text: doc.chunks }), el("td", { text: doc.reason ? `${doc.state}: ${doc.reason}` : doc.state })));
  }
  $("k-accounts-error").textContent = status.accounts.error || "";
  const tenants = $("k-tenants").tBodies[0];
  clear(tenants);
  for (const tenant of status.accounts.tenants) {
    const id = tenant.objects ? el("a", { href: documentHref("account:" + tenant.customer_id, tenant.customer_id), text: tenant.customer_id }) : el("span", { text: tenant.customer_id });
    tenants.append(el("tr", {}, el("td", {}, id), el("td", { text: tenant.company }), el("td", { text: tenant.plan }),
      el("td", { text: tenant.objects ?? "—" }), el("td", { text: tenant.state })));
  }
  await loadBanner();
}

// -- feedback-loop page -----------------------------------------------------------------------------
async function startLoop() {
  const loop = await loadBanner();
  const summary = clear($("l-summary"));
  pair(summary, "Reviewed examples", `${loop.reviewed} valid${loop.invalid ? ` · ${loop.invalid} invalid` : ""} in ${loop.file}`);
  pair(summary, "Not yet in the promoted adapter", `${loop.pending} (${loop.pending_method})`);
  pair(summary, "Behaviour data version now", loop.behaviour_data_version ? loop.behaviour_data_version.slice(0, 16) : "—");

  const adapter = clear($("l-adapter"));
  const promoted = loop.promoted;
  const gate = $("l-gate").tBodies[0];
  clear(gate);
  if (!promoted || promoted.error) {
    pair(adapter, "Version", promoted && promoted.error ? promoted.error : "none promoted: serving uses the base model");
    $("l-gate").hidden = true;
  } else {
    pair(adapter, "Version", promoted.version_id);
    pair(adapter, "Created", promoted.created_at);
    pair(adapter, "Base model", promoted.base_model);
    pair(adapter, "Trained on data version", (promoted.dataset_version || "").slice(0, 16));
    pair(adapter, "Gate", promoted.gate ? `${promoted.gate.passed ? "passed" : "failed"} on ${promoted.eval_records ?? "?"} eval records` : "no figures in the lineage");
    pair(adapter, "Replaced", promoted.champion_version || "nothing (first adapter in service)");
    if (promoted.gate) pair(adapter, "Gate checks", promoted.gate.reasons.join(" · "));
    for (const row of promoted.metrics) {
      gate.append(el("tr", {}, el("td", { text: row.metric }), el("td", { text: fmt(row.base) }), el("td", { text: fmt(row.adapter) }),
        el("td", { text: row.gated ? (row.adapter > row.base || (row.adapter === 1 && row.base === 1) ? "beats base" : "does not beat base") : "reported" })));
    }
    $("l-gate").hidden = false;
  }
  const recent = $("l-recent").tBodies[0];
  clear(recent);
  for (const row of loop.recent) {
    recent.append(el("tr", { class: row.valid ? "" : "attention" }, el("td", { text: row.line }), el("td", { text: row.reviewed_at || "—" }),
      el("td", { text: row.reviewer || "—" }), el("td", { text: row.valid ? row.action : `invalid: ${row.reason}` }),
      el("td", { text: row.ticket }), el("td", { text: row.category || "—" }), el("td", { text: row.decision || "—" }),
      el("td", { text: row.changed_fields.join(", ") || "—" })));
  }
}

// -- document page ----------------------------------------------------------------------------------
async function startDocument() {
  const query = new URLSearchParams(location.search);
  const docId = query.get("doc") || "";
  const tenant = query.get("tenant");
  const path = "/documents/" + docId.split("/").map(encodeURIComponent).join("/") + (tenant ? "?tenant=" + encodeURIComponent(tenant) : "");
  try {
    const view = await api(path);
    $("d-title").textContent = view.title || view.doc_id;
    const meta = clear($("d-meta"));
    pair(meta, "Document", view.doc_id);
    pair(meta, "Tenant", view.tenant || "shared knowledge (no tenant)");
    pair(meta, "Passages", String(view.chunks.length));
    const box = clear($("d-chunks"));
    const wanted = decodeURIComponent(location.hash.replace(/^#chunk-/, ""));
    for (const chunk of view.chunks) {
      box.append(el("section", { class: "chunk" + (chunk.chunk_id === wanted ? " wanted" : ""), id: "chunk-" + chunk.chunk_id },
        el("h3", { text: chunk.section || "(no section)" }), el("p", { class: "chunk-text", text: chunk.text })));
    }
    const target = wanted && document.getElementById("chunk-" + wanted);
    if (target) setTimeout(() => target.scrollIntoView({ block: "center" }), 0);
  } catch (error) {
    if (error instanceof AuthRequired) throw error;
    $("d-error").textContent = error.message;
  }
  await loadBanner();
}

// -- start ------------------------------------------------------------------------------------------
const STARTS = { console: startConsole, knowledge: startKnowledge, loop: startLoop, document: startDocument };
document.addEventListener("DOMContentLoaded", () => {
  const start = STARTS[document.body.dataset.page];
  if (!start) return;
  setupAuth(start);
  if (document.body.dataset.page === "console") setupConsole();
  run(start);
});
