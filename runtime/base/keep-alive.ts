// What keeps a driver's process running. Its connection, lanes and embedded daemons hold nothing open, so a script
// ends when its work does (as a Ray driver does); but a promise alone does not keep Node alive. So while someone
// awaits troupe work (a reply, an object's value), one ref'd timer does, counted here.

let holding = 0;
/** Ref'd only while holding > 0. Made at the first hold; it never fires (its interval is the longest Node takes). */
let handle: NodeJS.Timeout | undefined;

function enter(): void {
  if (holding++ > 0) return;
  handle ??= setInterval(() => undefined, 2 ** 31 - 1);
  handle.ref();
}

function leave(): void {
  if (--holding === 0) handle?.unref();
}

/** Keeps the process running until `p` settles; returns `p`. No closure per call: gets are made by the thousand. */
export function holdUntil<T>(p: Promise<T>): Promise<T> {
  enter();
  p.then(leave, leave);
  return p;
}

/** Holds now open: what keeps the process running, for tests and diagnostics. */
export function openHolds(): number {
  return holding;
}
