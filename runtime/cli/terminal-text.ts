// Text from the bus (node ids, class names, error messages, a job's output) is printed on the user's terminal, and
// anyone who can write cluster state or run a job chooses it. Escape sequences in it could rewrite the screen, set
// the window title, write the clipboard (OSC 52) or hide lines; bidirectional controls can reorder what is shown.
// These functions make such text visible instead.

/** C0 and C1 controls, DEL, and the Unicode bidi and invisible format controls. */
const FORMAT = String.raw`\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff`;
const CONTROL = new RegExp(String.raw`[\u0000-\u001f\u007f-\u009f${FORMAT}]`, 'g');
/** The same, keeping newline, tab and carriage return (a job's output has lines; progress bars use `\r`) and colour. */
const LOG_CONTROL = new RegExp(
  String.raw`\u001b\[[0-9;]*m|[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f${FORMAT}]`,
  'g',
);

const escaped = (c: string) => `\\u{${c.codePointAt(0)?.toString(16)}}`;

/** One field on one line: every control character, newlines included, shown as `\u{…}`. */
export function printable(text: string): string {
  return text.replace(CONTROL, escaped);
}

/** A job's output: lines, tabs, `\r` and colour (SGR) sequences stay; every other control is shown as `\u{…}`. */
export function printableLog(text: string): string {
  return text.replace(LOG_CONTROL, (m) => (m.length > 1 ? m : escaped(m)));
}
