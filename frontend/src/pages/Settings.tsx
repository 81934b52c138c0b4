import { useId, useState, type FormEvent } from "react";

import { whoami } from "../api/client";
import type { WhoAmI } from "../api/types";
import { ErrorMessage, PageHeader } from "../components/common";
import { useDocumentTitle } from "../lib/hooks";
import { getApiKey, setApiKey } from "../lib/settings";

type Check = { state: "idle" } | { state: "checking" } | { state: "ok"; who: WhoAmI } | { state: "error"; error: unknown };

function Identity({ who }: { who: WhoAmI }) {
  return (
    <div className="notice notice-ok" data-testid="whoami">
      <p>
        {who.anonymous
          ? `This server works without a key here: you act as “${who.tenant}”.`
          : `The key works: account “${who.tenant}”${who.key ? ` (key ${who.key})` : ""}.`}{" "}
        Allowed: {who.scopes.length ? who.scopes.join(", ") : "nothing"}.
      </p>
    </div>
  );
}

export function SettingsPage() {
  useDocumentTitle("Settings");
  const ids = useId();
  const [saved, setSaved] = useState(getApiKey);
  const [draft, setDraft] = useState(saved ?? "");
  const [show, setShow] = useState(false);
  const [check, setCheck] = useState<Check>({ state: "idle" });

  const verify = async (key: string | null) => {
    setCheck({ state: "checking" });
    try {
      setCheck({ state: "ok", who: await whoami(key) });
    } catch (error) {
      setCheck({ state: "error", error });
    }
  };

  const save = async (event: FormEvent) => {
    event.preventDefault();
    const key = draft.trim() || null;
    setApiKey(key);
    setSaved(key);
    await verify(key);
  };

  const forget = () => {
    setApiKey(null);
    setSaved(null);
    setDraft("");
    setCheck({ state: "idle" });
  };

  return (
    <>
      <PageHeader title="Settings">
        <p>Some servers need an API key. It is kept in this browser only and sent with every request.</p>
      </PageHeader>
      <form className="card settings-form" onSubmit={save}>
        <label htmlFor={`${ids}-key`}>API key</label>
        <div className="input-with-button">
          <input
            id={`${ids}-key`}
            type={show ? "text" : "password"}
            value={draft}
            onChange={(e) => setDraft(e.target.value)}
            autoComplete="off"
            spellCheck={false}
            placeholder="mik_…"
            aria-describedby={`${ids}-key-hint`}
          />
          <button type="button" className="button button-secondary button-small" onClick={() => setShow(!show)} aria-pressed={show}>
            {show ? "Hide" : "Show"}
          </button>
        </div>
        <p id={`${ids}-key-hint`} className="hint">
          {saved ? "A key is saved in this browser." : "No key saved: requests are sent without one."} Leave it
          empty on a laptop that runs MedInform itself.
        </p>
        <div className="submit-row">
          <button type="submit" className="button button-primary" disabled={check.state === "checking"}>
            Save and check
          </button>
          <button type="button" className="button button-secondary" onClick={() => void verify(saved)} disabled={check.state === "checking"}>
            Check the connection
          </button>
          {saved && (
            <button type="button" className="button button-secondary" onClick={forget}>
              Forget the key
            </button>
          )}
        </div>
        <div aria-live="polite" className="settings-result">
          {check.state === "checking" && <p role="status">Checking…</p>}
          {check.state === "ok" && <Identity who={check.who} />}
          {check.state === "error" && <ErrorMessage error={check.error} />}
        </div>
      </form>
    </>
  );
}
