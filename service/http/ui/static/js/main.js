// Hash router: each view renders into <main>; a failure shows the server's message, never a blank page.
import { getJSON, onTokenNeeded, storedToken, forgetToken } from "./api.js";
import { h, clear, errorBox } from "./dom.js";
import { text } from "./fmt.js";
import { renderModels } from "./views/models.js";
import { renderVersion } from "./views/version.js";
import { renderTensor } from "./views/tensor.js";
import { renderDiff } from "./views/diff.js";
import { renderTry } from "./views/try.js";

const ROUTES = [
  [/^\/?$/, [], renderModels, "Models"],
  [/^\/models\/([^/]+)\/versions\/([^/]+)\/?$/, ["model", "version"], renderVersion, "Weights"],
  [/^\/models\/([^/]+)\/versions\/([^/]+)\/tensors\/([^/]+)\/?$/, ["model", "version", "tensor"], renderTensor, "Tensor"],
  [/^\/models\/([^/]+)\/diff\/?$/, ["model"], renderDiff, "Diff"],
  [/^\/models\/([^/]+)\/try\/?$/, ["model"], renderTry, "Try it"],
];

const view = document.getElementById("view");
const crumbs = document.getElementById("crumbs");
let generation = 0;

function setCrumbs(items) {
  clear(crumbs);
  items.forEach(([label, href], i) => {
    const last = i === items.length - 1;
    crumbs.append(h("li", {}, h("a", { href, "aria-current": last ? "page" : null }, label)));
  });
}

async function route() {
  const mine = ++generation;
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, search = ""] = hash.split("?");
  const query = new URLSearchParams(search);
  const match = ROUTES.map(([re, names, render, title]) => [re.exec(path), names, render, title]).find(([m]) => m);
  const target = h("div", { class: "view-body" });
  clear(view).append(target);
  view.setAttribute("aria-busy", "true");
  delete view.dataset.ready;
  try {
    if (!match) throw new Error(`No such page: ${path}`);
    const [m, names, render, title] = match;
    const params = Object.fromEntries(names.map((n, i) => [n, decodeURIComponent(m[i + 1])]));
    document.title = `${title} · weightserve`;
    await render(target, { crumbs: setCrumbs }, params, query);
  } catch (err) {
    if (mine === generation) target.append(errorBox(err));
    console.warn(err);
  } finally {
    if (mine === generation) {
      view.setAttribute("aria-busy", "false");
      view.dataset.ready = "true";
    }
  }
}

async function serverInfo() {
  const el = document.getElementById("server");
  try {
    const meta = await getJSON("/v2");
    el.textContent = `${text(meta.name)} ${text(meta.version)} · extensions: ${(meta.extensions || []).join(", ") || "—"}`;
  } catch {
    el.textContent = "server metadata unavailable";
  }
}

// The token question: a modal form; the answer goes to api.js and the field is emptied at once.
const tokenDialog = document.getElementById("token-dialog");
const tokenInput = document.getElementById("token-input");
const forgetButton = document.getElementById("forget-token");

function showForget() {
  forgetButton.hidden = !storedToken();
}

onTokenNeeded((reason) => new Promise((resolve) => {
  document.getElementById("token-reason").textContent = reason;
  showForget();
  tokenInput.value = "";
  tokenDialog.returnValue = "";
  tokenDialog.addEventListener("close", () => {
    const token = tokenDialog.returnValue === "ok" ? tokenInput.value.trim() : "";
    tokenInput.value = "";
    resolve(token || null);
    queueMicrotask(showForget);
  }, { once: true });
  tokenDialog.showModal();
  tokenInput.focus();
}));

forgetButton.addEventListener("click", () => {
  forgetToken();
  showForget();
  route();
});

window.addEventListener("hashchange", async () => {
  await route();
  // keyboard and screen-reader users land on the new page's content, not on the link they left
  view.focus({ preventScroll: true });
});
showForget();
serverInfo();
route();
