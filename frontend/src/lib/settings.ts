// Settings kept in this browser (localStorage): the API key, and the last site and operator of a
// screening drive so that a health worker does not type them for every batch.

const KEY_STORAGE = "medinform.apiKey";
const DRIVE_STORAGE = "medinform.drive";

function storage(): Storage | null {
  try {
    return window.localStorage;
  } catch {
    // Private mode or storage disabled: settings last for this page only.
    return null;
  }
}

export function getApiKey(): string | null {
  const key = storage()?.getItem(KEY_STORAGE)?.trim();
  return key ? key : null;
}

export function setApiKey(key: string | null): void {
  const s = storage();
  if (!s) return;
  const trimmed = key?.trim();
  if (trimmed) s.setItem(KEY_STORAGE, trimmed);
  else s.removeItem(KEY_STORAGE);
}

export interface DriveDefaults {
  site: string;
  campaign: string;
  operator: string;
}

export function getDriveDefaults(): DriveDefaults {
  const empty = { site: "", campaign: "", operator: "" };
  try {
    const raw = storage()?.getItem(DRIVE_STORAGE);
    if (!raw) return empty;
    const parsed = JSON.parse(raw) as Partial<DriveDefaults>;
    return {
      site: typeof parsed.site === "string" ? parsed.site : "",
      campaign: typeof parsed.campaign === "string" ? parsed.campaign : "",
      operator: typeof parsed.operator === "string" ? parsed.operator : "",
    };
  } catch {
    return empty;
  }
}

export function setDriveDefaults(drive: DriveDefaults): void {
  storage()?.setItem(DRIVE_STORAGE, JSON.stringify(drive));
}
