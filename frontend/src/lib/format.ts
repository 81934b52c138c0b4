// Numbers and dates as people read them.

/** 0.9732 -> "97.3%". */
export function percent(fraction: number, digits = 1): string {
  if (!Number.isFinite(fraction)) return "–";
  return `${(fraction * 100).toFixed(digits)}%`;
}

export function dateTime(iso: string | null | undefined): string {
  if (!iso) return "–";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
  });
}

export function fileSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

export function shortId(id: string): string {
  return id.length > 8 ? `…${id.slice(-8)}` : id;
}

const STATUS_WORDS: Record<string, string> = {
  queued: "Waiting",
  processing: "Screening",
  succeeded: "Done",
  failed: "Failed",
  canceled: "Canceled",
};

export function statusWord(status: string): string {
  return STATUS_WORDS[status] ?? status;
}

const MODALITY: Record<string, { looks: string; image: string }> = {
  chest_xray: {
    looks: "Chest X-ray",
    image: "A frontal chest X-ray (PA or AP), as a photo or scan of the film or a digital export.",
  },
  blood_smear_cell: {
    looks: "Blood-smear cell",
    image: "A close-up of one red blood cell from a Giemsa-stained thin blood smear.",
  },
  dermoscopy: {
    looks: "Skin lesion",
    image: "A dermoscopy photo of the skin lesion, centred and in focus.",
  },
  fundus: {
    looks: "Retina (fundus)",
    image: "A colour photo of the retina taken with a fundus camera.",
  },
};

export function modalityLabel(modality: string | undefined): string {
  return (modality && MODALITY[modality]?.looks) || "Medical image";
}

export function imageNeeded(modality: string | undefined): string {
  return (modality && MODALITY[modality]?.image) || "A clear image of the area to screen.";
}

const METRIC_NAMES: Record<string, string> = {
  accuracy: "Accuracy",
  sensitivity: "Sensitivity",
  specificity: "Specificity",
  roc_auc: "ROC AUC",
  grade_accuracy: "Grade accuracy",
  grade_roc_auc: "Grade ROC AUC",
  quadratic_weighted_kappa: "Quadratic weighted kappa",
};

/** A `[metrics]` key as people read it: "roc_auc" -> "ROC AUC", "some_rate" -> "Some rate". */
export function metricName(key: string): string {
  const known = METRIC_NAMES[key];
  if (known) return known;
  const words = key.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** Rates in percent (accuracy, sensitivity, …), scores such as AUC and kappa with three decimals. */
export function metricValue(key: string, value: number): string {
  return /accuracy|sensitivity|specificity|recall|precision/.test(key) ? percent(value) : value.toFixed(3);
}
