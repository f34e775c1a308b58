import test from 'ava';
import { printable, printableLog } from '../../runtime/cli/terminal-text.ts';

test('a field from the bus shows its control characters instead of sending them to the terminal', (t) => {
  // OSC 52 writes the clipboard, a newline forges a table row, U+202E reverses what follows.
  t.is(printable('a\x1b]52;c;ZXZpbA==\x07b\nc\u202ed'), 'a\\u{1b}]52;c;ZXZpbA==\\u{7}b\\u{a}c\\u{202e}d');
  t.is(printable('node-1 (10.0.0.2) ünïcode ✓'), 'node-1 (10.0.0.2) ünïcode ✓');
});

test("a job's output keeps lines, tabs, \\r and colours, and nothing else", (t) => {
  t.is(
    printableLog('ok \x1b[31mred\x1b[0m\n\tx\r\x1b[2J\x1b]0;title\x07'),
    'ok \x1b[31mred\x1b[0m\n\tx\r\\u{1b}[2J\\u{1b}]0;title\\u{7}',
  );
});
