// The FTL live console: dev sign-in, live prices over the WebSocket (binary MessagePack frames,
// SPEC §7), opening and closing positions, the portfolio with its margin level, the leaderboard
// and the match clock. Plain JavaScript modules: no build step. Money arrives as JSON numbers to
// the cent and is kept here in integer cents, so PnL is worked out exactly as the server does.
import { decode } from "./msgpack.js";

const MATCH_REFRESH_MS = 3000; // the match clock and net lots (GET /api/matches)
const PORTFOLIO_REFRESH_MS = 5000; // besides every portfolio frame
const BOARD_REFRESH_MS = 10000;
const RECONNECT_MS = 2000;
const FLASH_MS = 700;
const CLOSED_SHOWN = 10;
const SLIPPAGE_TOLERANCE_PCT = 0.01;
// NOTE: the session cookies are HttpOnly; this marker only says a refresh is worth trying.
const SIGNED_IN_MARK = "ftl-console-signed-in";

const $ = (id) => document.getElementById(id);

const state = {
  wsUrl: null,
  user: null,
  match: null, // the match on show, as GET /api/matches lists it
  instruments: [], // its instruments: {id, idx, name, team, position, netLotsCentis, frozen, isActive}
  names: new Map(), // instrument id -> player name, for positions outside the match on show
  quotes: new Map(), // idx -> {priceCents, seq, degraded}; seq 0 when the price came from REST
  wallet: null, // {balanceCents, usedMarginCents, realizedCents}
  open: [], // open positions, with entryCents, lotsCentis and sign
  closed: new Map(), // position id -> closed position (the latest CLOSED_SHOWN are shown)
  socket: null,
  connecting: false,
  subscribed: new Set(), // idx
  ticks: 0,
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const cents = (points) => Math.round(points * 100);

function money(amountCents) {
  const sign = amountCents < 0 ? "-" : "";
  const abs = Math.abs(amountCents);
  const whole = Math.floor(abs / 100).toLocaleString("en-US");
  return `${sign}${whole}.${String(abs % 100).padStart(2, "0")}`;
}

function requestId() {
  // NOTE: crypto.randomUUID needs a secure context; a LAN address over http is not one.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function say(text, isError = false) {
  const box = $("message");
  box.textContent = text;
  box.className = isError ? "error" : "";
}

function cell(row, text, className = "") {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function button(label, action, className) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.dataset.action = action;
  b.className = className;
  return b;
}

function signClass(amountCents) {
  if (amountCents > 0) return "gain";
  return amountCents < 0 ? "loss" : "";
}

// --- HTTP ----------------------------------------------------------------------------------

async function refreshSession() {
  try {
    const reply = await fetch("/api/auth/refresh", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: "{}",
    });
    return reply.ok;
  } catch {
    return false;
  }
}

async function api(method, path, body, retried = false) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let reply;
  try {
    reply = await fetch(path, init);
  } catch {
    throw new ApiError(0, "network", "The API cannot be reached.");
  }
  // NOTE: the access token lasts 15 minutes; the refresh cookie gets a new one once.
  if (reply.status === 401 && state.user && !retried && (await refreshSession())) {
    return api(method, path, body, true);
  }
  const data = reply.status === 204 ? null : await reply.json().catch(() => null);
  if (!reply.ok) {
    const error = (data && data.error) || {};
    if (reply.status === 401 && state.user) signedOut("Your session ended: sign in again.");
    throw new ApiError(reply.status, error.code || `http_${reply.status}`, error.message || "");
  }
  return data;
}

// --- Session -------------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const displayName = $("display-name").value.trim();
  try {
    const session = await api("POST", "/api/auth/dev", { displayName });
    signedIn(session.user);
    say(`Signed in as ${session.user.displayName}.`);
  } catch (error) {
    say(`Sign-in refused: ${error.message} (${error.code})`, true);
  }
}

async function signOut() {
  try {
    await api("POST", "/api/auth/logout", {});
  } finally {
    signedOut("Signed out.");
  }
}

function signedIn(user) {
  state.user = user;
  localStorage.setItem(SIGNED_IN_MARK, "1");
  $("signin").hidden = true;
  $("account").hidden = false;
  $("me-name").textContent = user.displayName;
  renderInstruments();
  connect();
  refreshPortfolio();
  refreshClosed();
  refreshBoard();
}

function signedOut(text) {
  state.user = null;
  localStorage.removeItem(SIGNED_IN_MARK);
  state.wallet = null;
  state.open = [];
  state.closed.clear();
  if (state.socket) {
    const socket = state.socket;
    state.socket = null;
    socket.close();
  }
  state.subscribed.clear();
  setConnection(false);
  $("signin").hidden = false;
  $("account").hidden = true;
  renderInstruments();
  renderPortfolio();
  renderClosed();
  if (text) say(text);
}

async function resume() {
  // A returning visitor: the access cookie may have lapsed while the refresh cookie lives on.
  try {
    let me = await api("GET", "/api/me");
    const returning = localStorage.getItem(SIGNED_IN_MARK) === "1";
    if (!me.loggedIn && returning && (await refreshSession())) me = await api("GET", "/api/me");
    if (me.loggedIn) signedIn(me.user);
  } catch {
    // not signed in: the form stays
  }
}

// --- Match clock and market ----------------------------------------------------------------

function clockText(match) {
  const teams = `${match.homeTeam} ${match.homeScore ?? 0}–${match.awayScore ?? 0} ${match.awayTeam}`;
  if (match.status === "live") return `${teams} · ${match.minute ? `${match.minute}′` : "live"}`;
  if (match.status === "finished") return `${teams} · full time`;
  const kickoff = match.kickoffAt.replace("T", " ").replace(/:\d\d(\.\d+)?Z$/, " UTC");
  return `${match.homeTeam} v ${match.awayTeam} · kick-off ${kickoff}`;
}

async function nextMatch() {
  const scheduled = (await api("GET", "/api/matches?status=scheduled")).matches;
  if (scheduled.length) return scheduled[0];
  const finished = (await api("GET", "/api/matches?status=finished")).matches;
  return finished.length ? finished[finished.length - 1] : null;
}

async function refreshMatch() {
  try {
    const live = (await api("GET", "/api/matches?status=live")).matches;
    let match = live.find((m) => state.match && m.id === state.match.id) || live[0];
    if (!match && state.match) match = await api("GET", `/api/matches/${state.match.id}`);
    if (!match) match = await nextMatch();
    if (match) {
      showMatch(match);
    } else {
      $("clock").textContent = "No matches";
    }
  } catch (error) {
    $("clock").textContent = `Matches unavailable (${error.code})`;
  }
}

function socketOpen() {
  return state.socket !== null && state.socket.readyState === WebSocket.OPEN;
}

function restPrice(idx, priceCents, degraded) {
  // NOTE: while the feed is up its ticks are fresher than any REST answer.
  const known = state.quotes.get(idx);
  if (known && known.seq > 0 && socketOpen()) return;
  state.quotes.set(idx, { priceCents, seq: known ? known.seq : 0, degraded });
}

function showMatch(match) {
  const clock = $("clock");
  clock.textContent = clockText(match);
  clock.dataset.status = match.status;
  $("match-name").textContent = `${match.homeTeam} v ${match.awayTeam}`;
  const changed = !state.match || state.match.id !== match.id;
  state.match = match;
  state.instruments = match.instruments.map((i) => ({
    id: i.id,
    idx: i.idx,
    name: i.name,
    team: i.team,
    position: i.position,
    netLotsCentis: cents(i.netLots),
    frozen: i.frozen,
    isActive: i.isActive,
  }));
  for (const i of match.instruments) {
    state.names.set(i.id, i.name);
    restPrice(i.idx, cents(i.price), i.degraded);
  }
  if (changed) {
    renderInstruments();
    resubscribe();
  } else {
    for (const i of state.instruments) updateRow(i.idx, 0);
  }
}

function renderInstruments() {
  const body = $("instruments").querySelector("tbody");
  body.replaceChildren();
  for (const i of state.instruments) {
    const row = document.createElement("tr");
    row.dataset.idx = i.idx;
    cell(row, String(i.idx));
    cell(row, i.name, "name");
    cell(row, i.team);
    cell(row, i.position);
    cell(row, "", "price num");
    cell(row, "", "net num");
    const actions = cell(row, "");
    actions.append(button("Buy", "long", "buy"), " ", button("Sell", "short", "sell"));
    body.appendChild(row);
    updateRow(i.idx, 0);
  }
}

function updateRow(idx, move) {
  const row = $("instruments").querySelector(`tr[data-idx="${idx}"]`);
  const instrument = state.instruments.find((i) => i.idx === idx);
  if (!row || !instrument) return;
  const quote = state.quotes.get(idx);
  row.querySelector(".price").textContent = quote ? money(quote.priceCents) : "–";
  row.querySelector(".net").textContent = money(instrument.netLotsCentis);
  row.classList.toggle("degraded", Boolean(quote && quote.degraded));
  const tradable = Boolean(state.user) && instrument.isActive && !instrument.frozen;
  for (const b of row.querySelectorAll("button")) b.disabled = !tradable;
  if (move) {
    row.classList.remove("flash-up", "flash-down");
    row.classList.add(move > 0 ? "flash-up" : "flash-down");
    setTimeout(() => row.classList.remove("flash-up", "flash-down"), FLASH_MS);
  }
}

async function openPosition(instrument, direction) {
  const lotSize = Number($("lot-size").value);
  const quote = state.quotes.get(instrument.idx);
  if (!quote) return;
  try {
    const result = await api("POST", "/api/positions/open", {
      instrumentId: instrument.id,
      direction,
      lotSize,
      clientRequestId: requestId(),
      clientPrice: quote.priceCents / 100,
      slippageTolerancePct: SLIPPAGE_TOLERANCE_PCT,
    });
    const entry = money(cents(result.position.entryPrice));
    say(`Opened ${direction} ${money(cents(lotSize))} lots of ${instrument.name} at ${entry}.`);
    await refreshPortfolio();
  } catch (error) {
    say(`Open refused: ${error.message} (${error.code})`, true);
  }
}

async function closePosition(positionId) {
  try {
    const result = await api(
      "DELETE",
      `/api/positions/${positionId}?clientRequestId=${requestId()}`,
    );
    mergeClosed([result.position]);
    say(`Closed at ${money(cents(result.position.exitPrice))}.`);
    await refreshPortfolio();
  } catch (error) {
    say(`Close refused: ${error.message} (${error.code})`, true);
  }
}

// --- Portfolio -----------------------------------------------------------------------------

async function refreshPortfolio() {
  if (!state.user) return;
  try {
    const p = await api("GET", "/api/portfolio");
    state.wallet = {
      balanceCents: cents(p.balance),
      usedMarginCents: cents(p.usedMargin),
      realizedCents: cents(p.realizedPnl),
    };
    state.open = p.positions.map((position) => ({
      ...position,
      entryCents: cents(position.entryPrice),
      lotsCentis: cents(position.lotSize),
      sign: position.direction === "long" ? 1 : -1,
    }));
    for (const position of p.positions) {
      const known = state.quotes.get(position.idx);
      restPrice(position.idx, cents(position.price), Boolean(known && known.degraded));
    }
    renderPortfolio();
    resubscribe();
  } catch (error) {
    if (state.user) say(`Portfolio unavailable: ${error.message} (${error.code})`, true);
  }
}

function pnlCents(position) {
  // SPEC §1.4: (price − entry) × lots × 100 × direction; in cents and centi-lots that is exact.
  const quote = state.quotes.get(position.idx);
  const price = quote ? quote.priceCents : position.entryCents;
  return (price - position.entryCents) * position.lotsCentis * position.sign;
}

function renderPortfolio() {
  const wallet = state.wallet;
  const unrealized = state.open.reduce((sum, p) => sum + pnlCents(p), 0);
  const show = (id, amountCents) => {
    $(id).textContent = amountCents === null ? "–" : money(amountCents);
    $(id).className = amountCents === null ? "" : signClass(amountCents);
  };
  if (!wallet) {
    for (const id of ["balance", "equity", "unrealized-pnl", "used-margin", "free-margin"]) {
      show(id, null);
    }
    show("realized-pnl", null);
    $("margin-level").textContent = "–";
  } else {
    const equity = wallet.balanceCents + unrealized;
    $("balance").textContent = money(wallet.balanceCents);
    $("equity").textContent = money(equity);
    show("unrealized-pnl", unrealized);
    $("used-margin").textContent = money(wallet.usedMarginCents);
    $("free-margin").textContent = money(equity - wallet.usedMarginCents);
    show("realized-pnl", wallet.realizedCents);
    const level = wallet.usedMarginCents ? (equity / wallet.usedMarginCents) * 100 : null;
    const levelBox = $("margin-level");
    levelBox.textContent = level === null ? "–" : `${level.toFixed(2)} %`;
    levelBox.className = level !== null && level < 100 ? "loss" : "";
  }
  const body = $("open-positions").querySelector("tbody");
  body.replaceChildren();
  for (const position of state.open) {
    const row = document.createElement("tr");
    row.dataset.positionId = position.id;
    const quote = state.quotes.get(position.idx);
    const pnl = pnlCents(position);
    cell(row, state.names.get(position.instrumentId) || `#${position.idx}`, "name");
    cell(row, position.direction);
    cell(row, money(position.lotsCentis), "num");
    cell(row, money(position.entryCents), "num");
    cell(row, quote ? money(quote.priceCents) : "–", "price num");
    cell(row, money(pnl), `pnl num ${signClass(pnl)}`);
    cell(row, "").append(button("Close", "close", "close"));
    body.appendChild(row);
  }
}

function mergeClosed(positions) {
  for (const position of positions) state.closed.set(position.id, position);
  renderClosed();
}

async function refreshClosed() {
  if (!state.user) return;
  try {
    const list = await api("GET", `/api/positions?status=closed&limit=${CLOSED_SHOWN}`);
    mergeClosed(list.positions);
  } catch (error) {
    say(`Closed positions unavailable: ${error.message} (${error.code})`, true);
  }
}

function renderClosed() {
  const latest = [...state.closed.values()]
    .sort((a, b) => (a.closedAt < b.closedAt ? 1 : -1))
    .slice(0, CLOSED_SHOWN);
  const body = $("closed-positions").querySelector("tbody");
  body.replaceChildren();
  for (const position of latest) {
    const row = document.createElement("tr");
    row.dataset.positionId = position.id;
    const pnl = cents(position.realizedPnl ?? 0);
    cell(row, state.names.get(position.instrumentId) || `#${position.idx}`, "name");
    cell(row, position.direction);
    cell(row, money(cents(position.lotSize)), "num");
    cell(row, money(cents(position.entryPrice)), "num");
    cell(row, position.exitPrice === null ? "–" : money(cents(position.exitPrice)), "num");
    cell(row, money(pnl), `pnl num ${signClass(pnl)}`);
    cell(row, position.closedBy || "", "closed-by");
    body.appendChild(row);
  }
}

// --- Leaderboard ---------------------------------------------------------------------------

async function refreshBoard() {
  try {
    const board = await api("GET", "/api/leaderboard?limit=10");
    const list = $("board");
    list.replaceChildren();
    for (const entry of board.entries) {
      const item = document.createElement("li");
      const who = document.createElement("span");
      who.textContent = `${entry.rank}. ${entry.displayName ?? "?"}`;
      const score = document.createElement("span");
      score.textContent = money(cents(entry.score));
      score.className = `num ${signClass(cents(entry.score))}`;
      item.append(who, score);
      list.appendChild(item);
    }
    $("my-rank").textContent = board.me
      ? `You: #${board.me.rank} with ${money(cents(board.me.score))}`
      : state.user
        ? "You are not on the board yet: close a position."
        : "";
  } catch (error) {
    $("my-rank").textContent = `Leaderboard unavailable (${error.code})`;
  }
}

// --- WebSocket -----------------------------------------------------------------------------

function setConnection(up) {
  const badge = $("connection");
  badge.textContent = up ? "live" : "offline";
  badge.className = `connection ${up ? "on" : "off"}`;
}

async function connect() {
  if (!state.user || !state.wsUrl || state.socket || state.connecting) return;
  state.connecting = true;
  let token;
  try {
    token = (await api("POST", "/api/ws/token", {})).token;
  } catch (error) {
    state.connecting = false;
    if (state.user) setTimeout(connect, RECONNECT_MS);
    return;
  }
  state.connecting = false;
  if (!state.user) return;
  const socket = new WebSocket(`${state.wsUrl}?token=${encodeURIComponent(token)}`);
  socket.binaryType = "arraybuffer";
  state.socket = socket;
  socket.onopen = () => {
    setConnection(true);
    state.subscribed.clear();
    socket.send(JSON.stringify({ action: "subscribe_portfolio" }));
    resubscribe();
    refreshPortfolio();
  };
  socket.onmessage = (event) => {
    if (typeof event.data === "string") onText(JSON.parse(event.data));
    else onPrices(decode(event.data));
  };
  socket.onclose = () => {
    if (state.socket !== socket) return;
    state.socket = null;
    setConnection(false);
    if (state.user) setTimeout(connect, RECONNECT_MS);
  };
}

function resubscribe() {
  if (!socketOpen()) return;
  const wanted = new Set([...state.instruments.map((i) => i.idx), ...state.open.map((p) => p.idx)]);
  for (const idx of wanted) {
    if (state.subscribed.has(idx)) continue;
    const message = { action: "subscribe", idx };
    const quote = state.quotes.get(idx);
    if (quote && quote.seq > 0) message.lastSequence = quote.seq; // the ticks missed meanwhile
    state.socket.send(JSON.stringify(message));
    state.subscribed.add(idx);
  }
  for (const idx of [...state.subscribed]) {
    if (wanted.has(idx)) continue;
    state.socket.send(JSON.stringify({ action: "unsubscribe", idx }));
    state.subscribed.delete(idx);
  }
}

function onPrices(frame) {
  const ticks = Array.isArray(frame) ? frame : [frame];
  let held = false;
  for (const tick of ticks) {
    const known = state.quotes.get(tick.i);
    if (known && known.seq >= tick.q) continue; // a replayed tick we already applied
    const priceCents = cents(tick.p);
    state.quotes.set(tick.i, { priceCents, seq: tick.q, degraded: tick.d === 1 });
    updateRow(tick.i, known ? Math.sign(priceCents - known.priceCents) : 0);
    held = held || state.open.some((p) => p.idx === tick.i);
  }
  state.ticks += ticks.length;
  $("tick-count").textContent = String(state.ticks);
  if (held) renderPortfolio();
}

function onText(message) {
  if (message.type === "portfolio") {
    if (message.position && message.position.status === "closed") mergeClosed([message.position]);
    if (message.event === "washout") say("A position was closed by a washout.", true);
    if (message.event === "margin_warning") say("Margin warning: margin level below 100 %.", true);
    refreshPortfolio();
    refreshBoard();
  } else if (message.type === "error") {
    say(`Price feed: ${message.message || message.code}`, true);
  }
}

// --- Start ---------------------------------------------------------------------------------

function onMarketClick(event) {
  const target = event.target.closest("button[data-action]");
  if (!target) return;
  const idx = Number(target.closest("tr").dataset.idx);
  const instrument = state.instruments.find((i) => i.idx === idx);
  if (instrument) openPosition(instrument, target.dataset.action);
}

function onPositionsClick(event) {
  const target = event.target.closest("button[data-action=close]");
  if (target) closePosition(target.closest("tr").dataset.positionId);
}

async function start() {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  $("instruments").addEventListener("click", onMarketClick);
  $("open-positions").addEventListener("click", onPositionsClick);
  try {
    state.wsUrl = (await api("GET", "/console/config.json")).wsUrl;
  } catch (error) {
    say(`Console configuration unavailable (${error.code})`, true);
  }
  await refreshMatch();
  await resume();
  refreshBoard();
  setInterval(refreshMatch, MATCH_REFRESH_MS);
  setInterval(refreshPortfolio, PORTFOLIO_REFRESH_MS);
  setInterval(refreshBoard, BOARD_REFRESH_MS);
  document.body.dataset.ready = "1";
}

start();
