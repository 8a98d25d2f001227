// Which offering to buy: every feasible offering scored by its price per
// hour, as the Rust `cheapest` plugin and the host's built-in policy do.
// Lower scores are preferred; an offering left out is never bought. Records
// arrive with camelCase fields; u64 values (catalog versions) are BigInts.
// `nodewright plugin new --lang js` starts a selection policy from this file;
// scripts/build-polyglot builds it here.

let held = null;

export const catalog = {
  setCatalog(c) {
    held = c;
  },
};

export const instanceSelection = {
  rank(request) {
    if (held === null || held.version !== request.catalogVersion) {
      // A thrown string becomes the `err` of the result.
      throw `request names catalog version ${request.catalogVersion}, plugin holds another`;
    }
    const offerings = Array.from(request.feasible);
    const scores = offerings.map((i) => held.offerings[i].pricePerHour);
    return { offerings, scores };
  },
};
