// The page's words, in the reader's language: one table per language (i18n-en.json,
// i18n-zh.json), chosen by ?lang= in the URL, else by the browser's languages. Numbers and formulas
// are the same in every language; the server prints the numbers.

let table = {};
let language = "en";

export const LANGUAGES = ["en", "zh"];

/** The language the URL asks for, else the browser's first one the page speaks, else English. */
export function chosenLanguage() {
  const asked = new URLSearchParams(location.search).get("lang");
  if (LANGUAGES.includes(asked)) return asked;
  for (const tag of navigator.languages || [navigator.language || "en"]) {
    const code = tag.toLowerCase().split("-")[0];
    if (LANGUAGES.includes(code)) return code;
  }
  return "en";
}

export function currentLanguage() {
  return language;
}

/** Load a language's table and put its words into the page (every [data-i18n] element). */
export async function useLanguage(code) {
  const response = await fetch(`/static/i18n-${code}.json`);
  table = await response.json();
  language = code;
  document.documentElement.lang = code === "zh" ? "zh-Hans" : "en";
  applyTo(document);
}

/** The text for `key`, its {placeholders} filled from params; {"one", "other"} by params.n. */
export function t(key, params = {}) {
  let text = table[key];
  if (text === undefined) {
    console.warn(`no text for ${key} in ${language}`);
    return key;
  }
  if (typeof text === "object") text = params.n === 1 && text.one !== undefined ? text.one : text.other;
  return text.replace(/\{(\w+)\}/g, (_, name) => (params[name] === undefined ? "" : String(params[name])));
}

/** Put the words into an element and everything in it: text (which may hold <sub> and <code>),
 *  aria-label, placeholder and title, each from its data-i18n* attribute. */
export function applyTo(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.innerHTML = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-aria]")) el.setAttribute("aria-label", t(el.dataset.i18nAria));
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
}

/** A refusal or failure from the server in the reader's words: by its code when the table has it,
 *  else the server's own one line. */
export function errorText(data) {
  if (data && data.code && table[`error-${data.code}`] !== undefined) return t(`error-${data.code}`, data.args || {});
  return (data && data.error) || t("error-unknown");
}
