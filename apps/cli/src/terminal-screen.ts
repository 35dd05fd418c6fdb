/** Escape sequences (ECMA-48 / xterm) the screen uses; nothing else is written to a terminal. */
const ALTERNATE_SCREEN_ON = '\x1b[?1049h';
const ALTERNATE_SCREEN_OFF = '\x1b[?1049l';
const CURSOR_HIDE = '\x1b[?25l';
const CURSOR_SHOW = '\x1b[?25h';
const HOME = '\x1b[H';
const CLEAR_TO_LINE_END = '\x1b[K';
const CLEAR_BELOW = '\x1b[J';
const CTRL_C = '\x03';

/**
 * A full-screen view on a terminal: drawn on the alternate screen (the shell's
 * scrollback is left as it was), each frame cut to the window's size, q or
 * Ctrl-C calls `onQuit`. `close()` (also run at process exit, however it comes)
 * gives the terminal back as it was.
 */
export class TerminalScreen {
  #lines: string[] = [];
  #closed = false;
  readonly #onKey = (key: Buffer | string) => {
    const text = key.toString();
    if (text === 'q' || text === 'Q' || text.includes(CTRL_C)) this.onQuit();
  };
  readonly #redraw = () => this.draw(this.#lines);
  readonly #restore = () => this.close();

  constructor(
    private readonly output: NodeJS.WriteStream,
    private readonly input: NodeJS.ReadStream,
    private readonly onQuit: () => void,
  ) {
    output.write(ALTERNATE_SCREEN_ON + CURSOR_HIDE);
    output.on('resize', this.#redraw);
    process.once('exit', this.#restore);
    if (input.isTTY) {
      // raw: a key arrives as it is typed, and Ctrl-C as a byte rather than SIGINT
      input.setRawMode(true);
      input.on('data', this.#onKey);
      input.resume();
    }
  }

  /** Draws the lines from the top left, each cut to the window's width; what does not fit the height is counted on the last line. */
  draw(lines: string[]): void {
    if (this.#closed) return;
    this.#lines = lines;
    const width = this.output.columns || 80;
    const height = this.output.rows || 24;
    let shown = lines;
    if (lines.length > height) shown = [...lines.slice(0, height - 1), `… ${lines.length - height + 1} more lines: a taller window, or --pool`];
    this.output.write(HOME + shown.map((line) => cut(line, width) + CLEAR_TO_LINE_END).join('\n') + CLEAR_BELOW);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    process.off('exit', this.#restore);
    this.output.off('resize', this.#redraw);
    if (this.input.isTTY) {
      this.input.off('data', this.#onKey);
      this.input.setRawMode(false);
      this.input.pause();
    }
    this.output.write(CURSOR_SHOW + ALTERNATE_SCREEN_OFF);
  }
}

function cut(line: string, width: number): string {
  return line.length > width ? `${line.slice(0, width - 1)}…` : line;
}
