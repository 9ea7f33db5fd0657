// The eigenvalue spectrum of a weight as the server lists it in the tensor's spectral document:
// every eigenvalue up to a bound, beyond it the largest ones plus a histogram of log10 λ over all
// of them. Nothing here needs the weight itself, so the dashboard works with raw values closed.
import { isNum } from "./fmt.js";

/** Log-spaced bins of the positive eigenvalues: {edges (log10 λ), counts, total}, or null. */
export function esdBins(listing) {
  if (!listing) return null;
  const values = Array.isArray(listing.values) ? listing.values.filter((v) => isNum(v) && v > 0) : [];
  if (!listing.truncated && values.length >= 2) {
    // the whole spectrum is here: as many bins as the sample supports
    const logs = values.map(Math.log10).sort((a, b) => a - b);
    const lo = logs[0];
    const hi = logs.at(-1) === lo ? lo + 1 : logs.at(-1);
    const nb = Math.min(40, Math.max(8, Math.round(Math.sqrt(logs.length) * 2)));
    const w = (hi - lo) / nb;
    const counts = new Array(nb).fill(0);
    for (const v of logs) counts[Math.min(nb - 1, Math.floor((v - lo) / w))] += 1;
    return { edges: Array.from({ length: nb + 1 }, (_, k) => lo + k * w), counts, total: logs.length };
  }
  const hist = listing.log10_histogram;
  if (!hist || !Array.isArray(hist.edges) || !Array.isArray(hist.counts) || hist.edges.length !== hist.counts.length + 1) {
    return null;
  }
  return { edges: hist.edges, counts: hist.counts, total: hist.counts.reduce((a, b) => a + b, 0) };
}

/** A sentence on where the drawn eigenvalues come from. */
export function esdNote(listing, norm, fmt) {
  if (!listing) return "";
  const how = listing.truncated
    ? `all ${listing.count} eigenvalues of WᵀW binned by the server (the ${listing.values.length} largest listed)`
    : `${listing.count} eigenvalues of WᵀW from the server`;
  return `${how}; Σλ = ${fmt(listing.sum, 5)} (norm ${fmt(norm, 5)}).`;
}
