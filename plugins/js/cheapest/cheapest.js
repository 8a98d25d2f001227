// `cheapest` in JavaScript: every feasible offering scored by its price per
// hour, as the Rust plugin and the host's built-in policy do. Records arrive
// with camelCase fields; u64 values (catalog versions) are BigInts.
//
// Build: npx componentize-js cheapest.js --wit ../../../wit/v0.1.0 \
//          --world-name instance-selector -d http fetch-event -o cheapest-js.wasm

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
